"""Energy score (negative free energy).

S(x) = T * logsumexp(z / T), default T = 1. Liu et al., "Energy-based Out-of-distribution
Detection", NeurIPS 2020. Reads: logits.
"""

from __future__ import annotations

import numpy as np

from sure_ood.cache import FeatureCache
from sure_ood.scores.numeric import check_positive, energy, map_rows
from sure_ood.scores.scorer import Scorer, register


@register
class Energy(Scorer):
    name = "energy"
    needs = frozenset({"logits"})
    description = "negative free energy T logsumexp(z / T)"
    paper = "Liu et al., NeurIPS 2020"
    reference = "https://github.com/wetliu/energy_ood; OpenOOD `ebo`"

    def __init__(self, temperature: float = 1.0) -> None:
        super().__init__()
        check_positive(self.name, "temperature", temperature)
        self.temperature = float(temperature)

    def _score(self, cache: FeatureCache) -> np.ndarray:
        t = self.temperature
        return map_rows(len(cache), cache.num_classes, lambda s: energy(cache.logits[s], t))
