"""ASH-S: activation shaping (prune the smallest activations, rescale), then energy.

Per image, keep the k = D - round(D p / 100) largest entries of h (the rest set to 0); with
s1 = sum(h), s2 = sum(kept), h' = kept * exp(s1 / s2); S(x) = logsumexp(head(h')) through the
actual head. p = 90 (OpenOOD ash.yml). Djurisic et al., "Extremely Simple Activation Shaping for
Out-of-Distribution Detection", ICLR 2023. ASH was designed for non-negative (post-ReLU)
features; on signed ViT features exp(s1/s2) may overflow: those scores become inf/NaN and are
reported, not dropped. Reads: features, head.
"""

from __future__ import annotations

import numpy as np

from sure_ood.cache import FeatureCache
from sure_ood.scores.base import (
    PercentileScorer,
    as_f64,
    register,
    shaped_energy,
)


def ash_s(h: np.ndarray, percentile: float) -> np.ndarray:
    """ASH-S of rows of ``h`` (pytorch-ood / OpenOOD ``ash_s`` on [N, D])."""
    h = as_f64(h)
    d = h.shape[1]
    k = d - int(np.round(d * percentile / 100.0))
    s1 = h.sum(axis=1)
    kept = np.zeros_like(h)
    if k > 0:
        idx = np.argpartition(h, d - k, axis=1)[:, d - k :]
        rows = np.arange(h.shape[0])[:, None]
        kept[rows, idx] = h[rows, idx]
    s2 = kept.sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        return kept * np.exp(s1 / s2)[:, None]


@register
class ASH(PercentileScorer):
    name = "ash"
    needs = frozenset({"features", "head"})

    def _score(self, cache: FeatureCache) -> np.ndarray:
        return shaped_energy(cache, lambda h: ash_s(h, self.percentile))
