"""MSP: maximum softmax probability.

S(x) = max_c softmax(z)_c. Hendrycks & Gimpel, "A Baseline for Detecting Misclassified and
Out-of-Distribution Examples in Neural Networks", ICLR 2017. Reads: logits.
"""

from __future__ import annotations

import numpy as np

from sure_ood.cache import FeatureCache
from sure_ood.scores.numeric import map_rows, probs
from sure_ood.scores.scorer import Scorer, register


@register
class MSP(Scorer):
    name = "msp"
    needs = frozenset({"logits"})
    description = "maximum softmax probability"
    paper = "Hendrycks & Gimpel, ICLR 2017"
    reference = "https://github.com/hendrycks/error-detection; OpenOOD `msp`"
    cosine_head = (
        "with tau = 8 and many classes the softmax can never be one-hot, so MSP lives on a "
        "compressed range (expected, not a bug)."
    )

    def __init__(self) -> None:
        super().__init__()

    def _score(self, cache: FeatureCache) -> np.ndarray:
        return map_rows(len(cache), cache.num_classes, lambda s: probs(cache.logits[s]).max(axis=1))
