"""KL matching: distance of the softmax to the typical softmax of its predicted class.

d_k = mean of softmax(z) over training images predicted k (classes never predicted are left
out); S(x) = -min_k KL(p || d_k), p = softmax(z). Hendrycks et al., "Scaling Out-of-Distribution
Detection for Real-World Settings", ICML 2022 (OpenOOD ``klm`` and pytorch-ood fit on ID
validation data; we fit on the training cache). Reads: logits (+ training logits).

Non-finite training rows (NaN/inf in their logits or features) are left out of the fitted
statistics, with a warning that counts them (each template is the mean of the finite rows).
"""

from __future__ import annotations

import numpy as np

from sure_ood.cache import FeatureCache
from sure_ood.scores.array_cache import train_labelled
from sure_ood.scores.numeric import chunks, probs
from sure_ood.scores.scorer import Scorer, register


@register
class KLMatching(Scorer):
    name = "kl_matching"
    needs = frozenset({"logits", "train"})
    description = (
        "minus the smallest KL divergence of the softmax to the mean softmax of a predicted class"
    )
    paper = "Hendrycks et al., ICML 2022"
    reference = "OpenOOD `klm` (fits on ID validation data; we fit on training features)"
    _state_keys = ("templates",)

    def __init__(self) -> None:
        super().__init__()

    def _fit(self, train: FeatureCache | None, prior: np.ndarray | None) -> None:
        _, logits, _ = train_labelled(train)
        p = probs(logits)
        pred = p.argmax(axis=1)
        self.templates = np.stack([p[pred == k].mean(axis=0) for k in np.unique(pred)])

    def _score(self, cache: FeatureCache) -> np.ndarray:
        with np.errstate(divide="ignore"):
            log_d = np.log(self.templates)
        log_d = np.maximum(log_d, np.finfo(np.float64).min)  # never-seen class: huge, finite
        out = np.empty(len(cache), dtype=np.float64)
        for sl in chunks(len(cache), self.templates.shape[0]):
            p = probs(cache.logits[sl])
            with np.errstate(divide="ignore", invalid="ignore"):
                plogp = np.where(p > 0, p * np.log(p), 0.0).sum(axis=1)
            kl = plogp[:, None] - p @ log_d.T
            out[sl] = -kl.min(axis=1)
        return out
