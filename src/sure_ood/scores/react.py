"""ReAct: clip the features at a percentile of the training activations, then energy.

t = percentile(training features, p) over all entries (p = 90); h' = min(h, t);
S(x) = logsumexp(head(h')) with the actual head (linear: W h' + b; cosine: tau cos(h', W),
after its own eval-time clip). Sun et al., "ReAct: Out-of-distribution Detection With
Rectified Activations", NeurIPS 2021. Reads: features, head (+ training features).
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
    train_labelled,
)


@register
class ReAct(Scorer):
    name = "react"
    needs = frozenset({"features", "head", "train"})
    fitted = True
    _state_keys = ("threshold",)

    def __init__(self, percentile: float = 90.0) -> None:
        super().__init__()
        check_range(self.name, "percentile", percentile, 0.0, 100.0)
        self.percentile = float(percentile)

    def _fit(self, train: FeatureCache | None, prior: np.ndarray | None) -> None:
        h, _, _ = train_labelled(train)
        self.threshold = float(np.percentile(h, self.percentile))

    def _score(self, cache: FeatureCache) -> np.ndarray:
        out = np.empty(len(cache), dtype=np.float64)
        for sl in chunks(len(cache), cache.num_classes + cache.features.shape[1]):
            h = np.minimum(as_f64(cache.features[sl]), self.threshold)
            out[sl] = energy(head_logits(cache, h))
        return out
