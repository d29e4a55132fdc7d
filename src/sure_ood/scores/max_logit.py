"""MaxLogit (MLS): the largest logit.

S(x) = max_c z_c. Hendrycks et al., "Scaling Out-of-Distribution Detection for Real-World
Settings", ICML 2022. With a cosine head this is tau * max cosine. Reads: logits.
"""

from __future__ import annotations

import numpy as np

from sure_ood.cache import FeatureCache
from sure_ood.scores.numeric import as_f64
from sure_ood.scores.scorer import Scorer, register


@register
class MaxLogit(Scorer):
    name = "max_logit"
    needs = frozenset({"logits"})
    description = "the largest logit"
    paper = "Hendrycks et al., ICML 2022"
    reference = "OpenOOD `mls`"
    cosine_head = "tau times the largest cosine."

    def __init__(self) -> None:
        super().__init__()

    def _score(self, cache: FeatureCache) -> np.ndarray:
        # the max of the stored floats is exact in their dtype: no float64 copy of [N, C]
        return as_f64(np.max(cache.logits, axis=1))
