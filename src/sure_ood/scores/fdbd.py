"""fDBD: mean feature distance to the decision boundaries, normalised by the feature norm.

For the predicted class y_hat and every other class c, the distance of h to the boundary
{z_y_hat = z_c} of a linear head is |z_y_hat - z_c| / ||w_y_hat - w_c||;
S(x) = mean_{c != y_hat} of it / ||h - mu_train||_2 (OpenOOD ``distance_as_normalizer``).
Liu & Qin, "Fast Decision Boundary based Out-of-Distribution Detector", ICML 2024. Defined for
linear heads; for a cosine head the same formula is applied to the cosine logits and the
normalised weights and feature (boundary distance on the unit sphere, our extension).
Reads: logits, features, head (+ training features).

Non-finite training rows (NaN/inf in their logits or features) are left out of the fitted
statistics, with a warning that counts them (the mean training feature is estimated from the
finite rows).
"""

from __future__ import annotations

import numpy as np

from sure_ood.cache import FeatureCache
from sure_ood.scores.array_cache import train_labelled
from sure_ood.scores.geometry import head_space
from sure_ood.scores.numeric import as_f64, chunks
from sure_ood.scores.scorer import Scorer, register


@register
class FDBD(Scorer):
    name = "fdbd"
    needs = frozenset({"logits", "features", "head", "train"})
    description = (
        "mean distance of the feature to the decision boundaries of the predicted class, over its "
        "distance to the training mean"
    )
    paper = "Liu & Qin, ICML 2024"
    reference = "https://github.com/litianliu/fDBD-OOD; OpenOOD `fdbd`"
    cosine_head = (
        "boundaries of the cosine logits on the unit sphere, with the normalised weights and "
        "feature (our extension)."
    )
    _state_keys = ("train_mean",)

    def __init__(self) -> None:
        super().__init__()

    def _fit(self, train: FeatureCache | None, prior: np.ndarray | None) -> None:
        h, _, _ = train_labelled(train)
        self.train_mean = head_space(train, h, with_temperature=True)[1].mean(axis=0)

    def _score(self, cache: FeatureCache) -> np.ndarray:
        w, _ = head_space(cache, cache.features[:0], with_temperature=True)
        sq = (w * w).sum(axis=1)
        pair = np.sqrt(np.maximum(sq[:, None] + sq[None, :] - 2.0 * w @ w.T, 0.0))  # [C, C]
        c = cache.num_classes
        out = np.empty(len(cache), dtype=np.float64)
        for sl in chunks(len(cache), 2 * c):
            z = as_f64(cache.logits[sl])
            pred = z.argmax(axis=1)
            gap = np.abs(z - z[np.arange(len(z)), pred][:, None])
            den = pair[pred]
            with np.errstate(divide="ignore", invalid="ignore"):
                ratio = np.where(den > 0, gap / den, 0.0)
            h = head_space(cache, cache.features[sl], with_temperature=True)[1]
            out[sl] = ratio.sum(axis=1) / (c - 1) / np.linalg.norm(h - self.train_mean, axis=1)
        return out
