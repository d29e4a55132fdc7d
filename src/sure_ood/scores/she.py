"""SHE: simplified Hopfield energy (inner product with the stored class pattern).

m_c = mean training feature of the images of class c that the model classifies correctly
(all images of c if none is correct, with a warning); S(x) = <h, m_{y_hat}>, y_hat = argmax z.
Zhang et al., "Out-of-Distribution Detection based on In-Distribution Data Patterns
Memorization with Modern Hopfield Energy", ICLR 2023 (OpenOOD ``she``, inner product).
Reads: logits, features (+ labelled training logits and features).

Non-finite training rows (NaN/inf in their logits or features) are left out of the fitted
statistics, with a warning that counts them (patterns are means of the finite rows). Refused
when a class is left with no finite row: its pattern would be missing.
"""

from __future__ import annotations

import logging

import numpy as np

from sure_ood.cache import FeatureCache
from sure_ood.io import InputError
from sure_ood.scores.array_cache import train_labelled
from sure_ood.scores.numeric import as_f64, chunks
from sure_ood.scores.scorer import Scorer, register

log = logging.getLogger(__name__)


@register
class SHE(Scorer):
    name = "she"
    needs = frozenset({"logits", "features", "train"})
    description = (
        "inner product of the feature with the mean feature of the correctly classified training "
        "images of the predicted class"
    )
    paper = "Zhang et al., ICLR 2023"
    reference = "OpenOOD `she` (inner product)"
    per_class_fit = True
    _state_keys = ("patterns",)

    def __init__(self) -> None:
        super().__init__()

    def _fit(self, train: FeatureCache | None, prior: np.ndarray | None) -> None:
        h, logits, y = train_labelled(train)
        correct = logits.argmax(axis=1) == y
        patterns = np.zeros((train.num_classes, h.shape[1]))
        fallback = []
        for c in range(train.num_classes):
            sel = correct & (y == c)
            if not sel.any():
                sel = y == c
                if not sel.any():
                    raise InputError(f"{train.source}: no training images of class {c}")
                fallback.append(c)
            patterns[c] = h[sel].mean(axis=0)
        if fallback:
            log.warning(
                "she: %d classes without a correct training prediction (e.g. %s): their pattern "
                "is the mean of all their images",
                len(fallback),
                fallback[:5],
            )
        self.patterns = patterns

    def _score(self, cache: FeatureCache) -> np.ndarray:
        out = np.empty(len(cache), dtype=np.float64)
        for sl in chunks(len(cache), cache.features.shape[1]):
            pred = np.asarray(cache.logits[sl]).argmax(axis=1)
            out[sl] = (as_f64(cache.features[sl]) * self.patterns[pred]).sum(axis=1)
        return out
