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
from sure_ood.scores.base import (
    Scorer,
    as_f64,
    check_range,
    chunks,
    energy,
    head_logits,
    register,
)


def scale_features(h: np.ndarray, percentile: float) -> np.ndarray:
    h = as_f64(h)
    d = h.shape[1]
    k = d - int(np.round(d * percentile / 100.0))
    s1 = h.sum(axis=1)
    s2 = np.partition(h, d - k, axis=1)[:, d - k :].sum(axis=1) if k > 0 else np.zeros(len(h))
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        return h * np.exp(s1 / s2)[:, None]


@register
class SCALE(Scorer):
    name = "scale"
    needs = frozenset({"features", "head"})

    def __init__(self, percentile: float = 85.0) -> None:
        super().__init__()
        check_range(self.name, "percentile", percentile, 0.0, 100.0)
        self.percentile = float(percentile)

    def _score(self, cache: FeatureCache) -> np.ndarray:
        out = np.empty(len(cache), dtype=np.float64)
        for sl in chunks(len(cache), cache.num_classes + cache.features.shape[1]):
            with np.errstate(invalid="ignore", over="ignore"):
                h = scale_features(cache.features[sl], self.percentile)
                out[sl] = energy(head_logits(cache, h))
        return out
