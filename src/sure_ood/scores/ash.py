"""ASH: activation shaping (prune the smallest activations, then rescale or binarise), then energy.

Per image, keep the k = D - round(D p / 100) largest entries of h (the rest set to 0);
s1 = sum(h), s2 = sum(kept). ``variant``:

- ``s`` (default, ASH-S): h' = kept * exp(s1 / s2);
- ``b`` (ASH-B, what OpenOOD's ``ash`` postprocessor runs): every kept entry set to s1 / k;
- ``p`` (ASH-P): h' = kept.

S(x) = logsumexp(head(h')) through the actual head. p = 90 (OpenOOD ash.yml).
Djurisic et al., "Extremely Simple Activation Shaping for Out-of-Distribution Detection",
ICLR 2023. ASH was designed for non-negative (post-ReLU)
features; on signed ViT features exp(s1/s2) may overflow: those scores become inf/NaN and are
reported, not dropped. Reads: features, head.
"""

from __future__ import annotations

import numpy as np

from sure_ood.cache import FeatureCache
from sure_ood.scores.geometry import shaped_energy
from sure_ood.scores.numeric import as_f64, check_choice
from sure_ood.scores.scorer import PercentileScorer, register

VARIANTS = ("s", "b", "p")


def ash_s(h: np.ndarray, percentile: float, variant: str = "s") -> np.ndarray:
    """ASH of rows of ``h``: ``s`` as OpenOOD's ``ash_s`` on [N, D], ``b`` as its ``ash_b``,
    ``p`` as its ``ash_p``."""
    h = as_f64(h)
    d = h.shape[1]
    k = d - int(np.round(d * percentile / 100.0))
    s1 = h.sum(axis=1)
    kept = np.zeros_like(h)
    if k > 0:
        idx = np.argpartition(h, d - k, axis=1)[:, d - k :]
        rows = np.arange(h.shape[0])[:, None]
        kept[rows, idx] = h[rows, idx]
    if variant == "p":
        return kept
    if variant == "b":
        out = np.zeros_like(h)
        if k > 0:
            out[rows, idx] = (s1 / k)[:, None]
        return out
    s2 = kept.sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        return kept * np.exp(s1 / s2)[:, None]


@register
class ASH(PercentileScorer):
    name = "ash"
    needs = frozenset({"features", "head"})
    description = (
        "activation shaping: keep the largest feature entries (variant s rescales, b binarises, p "
        "only prunes), then energy"
    )
    paper = "Djurisic et al., ICLR 2023"
    reference = (
        "https://github.com/andrijazz/ash; OpenOOD `ash` (https://github.com/Jingkang50/OpenOOD) "
        "is ASH-B at percentile 90"
    )
    cosine_head = (
        "the shaped feature goes through the cosine head (normalised, after its eval-time clip), "
        "so ASH-S's rescale cancels: `variant: s` and `variant: p` give the same scores there (our"
        " extension; the paper's heads are linear)."
    )

    def __init__(self, percentile: float = 90.0, variant: str = "s") -> None:
        super().__init__(percentile)
        check_choice(self.name, "variant", variant, VARIANTS)
        self.variant = variant

    def _score(self, cache: FeatureCache) -> np.ndarray:
        return shaped_energy(cache, lambda h: ash_s(h, self.percentile, self.variant))
