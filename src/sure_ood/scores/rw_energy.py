"""RW+Energy: energy reweighted by the distance of the softmax to the class prior.

S(x) = (1 - cos(p, pi)) * T * logsumexp(z / T), p = softmax(z) at T = 1. Jiang et al., ICML
2023 (CP code funcs.py:144-166). Logs a warning when a base score is negative (the factor then
reverses the order). Reads: logits, prior.

Training rows: only their labels are read (the class prior), so non-finite logits or features
in them change nothing and all rows are kept.
"""

from __future__ import annotations

import numpy as np

from sure_ood.cache import FeatureCache
from sure_ood.scores.numeric import (
    check_positive,
    energy,
    map_rows,
    reweight_factor,
    warn_negative_base,
)
from sure_ood.scores.scorer import Scorer, register


@register
class RWEnergy(Scorer):
    name = "rw_energy"
    needs = frozenset({"logits", "prior"})
    description = "RW+Energy: energy times (1 - cos(softmax, class prior))"
    paper = "Jiang et al., ICML 2023"
    reference = "https://github.com/tmlr-group/class_prior"
    _state_keys = ("prior",)

    def __init__(self, temperature: float = 1.0) -> None:
        super().__init__()
        check_positive(self.name, "temperature", temperature)
        self.temperature = float(temperature)

    def _fit(self, train: FeatureCache | None, prior: np.ndarray | None) -> None:
        self.prior = prior

    def _score(self, cache: FeatureCache) -> np.ndarray:
        t = self.temperature
        base = map_rows(len(cache), cache.num_classes, lambda s: energy(cache.logits[s], t))
        warn_negative_base(self.name, base)
        factor = map_rows(
            len(cache), cache.num_classes, lambda s: reweight_factor(cache.logits[s], self.prior)
        )
        return factor * base
