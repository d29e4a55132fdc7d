"""DICE: directed sparsification of the last layer, then energy.

V = W * mean_train(h) (contribution of feature k to class c, [C, D]); keep the weights whose
contribution exceeds the p-th percentile of V (p = 90), zero the rest:
S(x) = logsumexp((W * M) h + b). Sun & Li, "DICE: Leveraging Sparsification for
Out-of-Distribution Detection", ECCV 2022 (OpenOOD ``dice``). Cosine head (our extension): the
same on the normalised weights and features, z = tau (W_hat * M) h_hat (after the eval clip).
Reads: features, head (+ training features).

Non-finite training rows (NaN/inf in their logits or features) are left out of the fitted
statistics, with a warning that counts them (the mean feature is estimated from the finite
rows).
"""

from __future__ import annotations

import numpy as np

from sure_ood.cache import FeatureCache
from sure_ood.scores.array_cache import train_labelled
from sure_ood.scores.geometry import head_space
from sure_ood.scores.numeric import as_f64, chunks, energy
from sure_ood.scores.scorer import PercentileScorer, register


@register
class DICE(PercentileScorer):
    name = "dice"
    needs = frozenset({"features", "head", "train"})
    description = (
        "sparsify the last layer to its largest weight x mean-feature contributions, then energy"
    )
    paper = "Sun & Li, ECCV 2022"
    reference = "https://github.com/deeplearning-wisc/dice; OpenOOD `dice`"
    cosine_head = (
        "the same on the normalised weights and feature, z = tau (W_hat * M) h_hat after the "
        "eval-time clip (our extension)."
    )
    _state_keys = ("mask",)

    def _fit(self, train: FeatureCache | None, prior: np.ndarray | None) -> None:
        h, _, _ = train_labelled(train)
        w, hs = head_space(train, h)
        contrib = w * hs.mean(axis=0)[None, :]
        self.mask = contrib > np.percentile(contrib, self.percentile)

    def _score(self, cache: FeatureCache) -> np.ndarray:
        out = np.empty(len(cache), dtype=np.float64)
        for sl in chunks(len(cache), cache.num_classes + cache.features.shape[1]):
            w, h = head_space(cache, cache.features[sl])
            z = h @ (w * self.mask).T
            if cache.head_type == "cosine":
                z = cache.head_temperature * z
            elif cache.head_bias is not None:
                z = z + as_f64(cache.head_bias)
            out[sl] = energy(z)
        return out
