"""RW+ODIN: ODIN reweighted by the distance of the clean softmax to the class prior.

S(x) = (1 - cos(p, pi)) * ODIN(x), p = softmax(z) at T = 1 of the clean (cached) logits, ODIN at
its (T, epsilon) precomputed by the ``odin`` rule (cache key ``odin_score``). Jiang et al.,
ICML 2023 (CP funcs.py:84-127). Reads: logits, prior, odin_score.

Training rows: only their labels are read (the class prior), so non-finite logits or features
in them change nothing and all rows are kept.
"""

from __future__ import annotations

import numpy as np

from sure_ood.cache import FeatureCache
from sure_ood.scores.numeric import map_rows, reweight_factor, warn_negative_base
from sure_ood.scores.odin import ODIN_KEY, read_odin_scores
from sure_ood.scores.scorer import Scorer, register


@register
class RWODIN(Scorer):
    name = "rw_odin"
    needs = frozenset({"logits", "prior", "network"})
    description = "RW+ODIN: ODIN times (1 - cos(clean softmax, class prior))"
    paper = "Jiang et al., ICML 2023"
    reference = "https://github.com/tmlr-group/class_prior"
    _state_keys = ("prior",)

    def __init__(self) -> None:
        super().__init__()

    def required_keys(self) -> tuple[str, ...]:
        return (ODIN_KEY,)

    def _fit(self, train: FeatureCache | None, prior: np.ndarray | None) -> None:
        self.prior = prior

    def _score(self, cache: FeatureCache) -> np.ndarray:
        base = read_odin_scores(cache)
        warn_negative_base(self.name, base)
        factor = map_rows(
            len(cache), cache.num_classes, lambda s: reweight_factor(cache.logits[s], self.prior)
        )
        return factor * base
