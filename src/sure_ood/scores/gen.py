"""GEN: generalised entropy of the top-M softmax probabilities.

S(x) = -sum_{c in top-M of p} p_c^gamma (1 - p_c)^gamma, p = softmax(z); gamma = 0.1, M = 100
(capped at C). Liu et al., "GEN: Pushing the Limits of Softmax-Based Out-of-Distribution
Detection", CVPR 2023 (OpenOOD ``gen``). Reads: logits.
"""

from __future__ import annotations

import numpy as np

from sure_ood.cache import FeatureCache
from sure_ood.scores.numeric import check_positive, chunks, probs
from sure_ood.scores.scorer import Scorer, register


@register
class GEN(Scorer):
    name = "gen"
    needs = frozenset({"logits"})
    description = "generalised entropy of the top-M softmax probabilities"
    paper = "Liu et al., CVPR 2023"
    reference = "https://github.com/XixiLiu95/GEN; OpenOOD `gen`"

    def __init__(self, gamma: float = 0.1, top_m: int = 100) -> None:
        super().__init__()
        check_positive(self.name, "gamma", gamma)
        check_positive(self.name, "top_m", top_m)
        self.gamma = float(gamma)
        self.top_m = int(top_m)

    def _score(self, cache: FeatureCache) -> np.ndarray:
        c = cache.num_classes
        m = min(self.top_m, c)
        out = np.empty(len(cache), dtype=np.float64)
        for sl in chunks(len(cache), c):
            p = probs(cache.logits[sl])
            if m < c:
                p = np.partition(p, c - m, axis=1)[:, c - m :]
            out[sl] = -(p**self.gamma * (1.0 - p) ** self.gamma).sum(axis=1)
        return out
