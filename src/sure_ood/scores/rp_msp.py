"""RP+MSP: maximum of the softmax minus the class prior.

S(x) = max_c (p_c - pi_c), p = softmax(z) at T = 1, pi the training class prior. Jiang et al.,
"Detecting Out-of-distribution Data through In-distribution Class Prior", ICML 2023 (CP code
funcs.py:26-45). Reads: logits, prior.

Training rows: only their labels are read (the class prior), so non-finite logits or features
in them change nothing and all rows are kept.
"""

from __future__ import annotations

import numpy as np

from sure_ood.cache import FeatureCache
from sure_ood.scores.numeric import map_rows, probs
from sure_ood.scores.scorer import Scorer, register


@register
class RPMSP(Scorer):
    name = "rp_msp"
    needs = frozenset({"logits", "prior"})
    description = "RP+MSP: largest softmax probability minus the class prior"
    paper = "Jiang et al., ICML 2023"
    reference = "https://github.com/tmlr-group/class_prior"
    _state_keys = ("prior",)

    def __init__(self) -> None:
        super().__init__()

    def _fit(self, train: FeatureCache | None, prior: np.ndarray | None) -> None:
        self.prior = prior

    def _score(self, cache: FeatureCache) -> np.ndarray:
        def rp(sl: slice) -> np.ndarray:
            return (probs(cache.logits[sl]) - self.prior).max(axis=1)

        return map_rows(len(cache), cache.num_classes, rp)
