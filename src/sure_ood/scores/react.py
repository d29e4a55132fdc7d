"""ReAct: clip the features at a percentile of the training activations, then energy.

t = percentile(training features, p) over all entries (p = 90); h' = min(h, t);
S(x) = logsumexp(head(h')) with the actual head (linear: W h' + b; cosine: tau cos(h', W),
after its own eval-time clip). Sun et al., "ReAct: Out-of-distribution Detection With
Rectified Activations", NeurIPS 2021. Reads: features, head (+ training features).

Non-finite training rows (NaN/inf in their logits or features) are left out of the fitted
statistics, with a warning that counts them (the percentile is taken over the finite rows).
"""

from __future__ import annotations

import numpy as np

from sure_ood.cache import FeatureCache
from sure_ood.scores.array_cache import train_labelled
from sure_ood.scores.geometry import shaped_energy
from sure_ood.scores.numeric import as_f64
from sure_ood.scores.scorer import PercentileScorer, register


@register
class ReAct(PercentileScorer):
    name = "react"
    needs = frozenset({"features", "head", "train"})
    description = "clip the features at a percentile of the training activations, then energy"
    paper = "Sun et al., NeurIPS 2021"
    reference = "https://github.com/deeplearning-wisc/react; OpenOOD `react`"
    cosine_head = (
        "the clipped feature goes through the cosine head (after its own eval-time clip) (our "
        "extension)."
    )
    _state_keys = ("threshold",)

    def _fit(self, train: FeatureCache | None, prior: np.ndarray | None) -> None:
        h, _, _ = train_labelled(train)
        self.threshold = float(np.percentile(h, self.percentile))

    def _score(self, cache: FeatureCache) -> np.ndarray:
        return shaped_energy(cache, lambda h: np.minimum(as_f64(h), self.threshold))
