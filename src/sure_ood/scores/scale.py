"""SCALE: rescale the features by the ASH-S factor without pruning, then energy.

k = D - round(D p / 100) largest entries of h; s1 = sum(h), s2 = sum of those k entries;
h' = h * exp(s1 / s2); S(x) = logsumexp(head(h')) through the actual head; p = 85 (OpenOOD
scale.yml). Xu et al., "Scaling for Training Time and Post-hoc Out-of-distribution Detection
Enhancement", ICLR 2024. A cosine head ignores the scale, so there it equals ``energy`` of the
recomputed logits. Reads: features, head.
"""

from __future__ import annotations

import numpy as np

from sure_ood.cache import FeatureCache
from sure_ood.scores.geometry import shaped_energy
from sure_ood.scores.numeric import as_f64
from sure_ood.scores.scorer import PercentileScorer, register


def scale_features(h: np.ndarray, percentile: float) -> np.ndarray:
    h = as_f64(h)
    d = h.shape[1]
    k = d - int(np.round(d * percentile / 100.0))
    s1 = h.sum(axis=1)
    s2 = np.partition(h, d - k, axis=1)[:, d - k :].sum(axis=1) if k > 0 else np.zeros(len(h))
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        return h * np.exp(s1 / s2)[:, None]


@register
class SCALE(PercentileScorer):
    name = "scale"
    needs = frozenset({"features", "head"})
    description = "rescale the feature by the ASH-S factor without pruning, then energy"
    paper = "Xu et al., ICLR 2024"
    reference = "https://github.com/kai422/SCALE; OpenOOD `scale`"
    cosine_head = (
        "the cosine head ignores the scale, so SCALE equals `energy` of the recomputed logits "
        "there."
    )

    def __init__(self, percentile: float = 85.0) -> None:
        super().__init__(percentile)

    def _score(self, cache: FeatureCache) -> np.ndarray:
        return shaped_energy(cache, lambda h: scale_features(h, self.percentile))
