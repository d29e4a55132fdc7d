"""Relative Mahalanobis distance: class-conditional minus class-agnostic Gaussian distance.

d_c(h) = (h - mu_c)^T Sigma^-1 (h - mu_c) (as in ``mahalanobis``), d_0(h) the same with the mean
and covariance of all training features; S(x) = -min_c (d_c(h) - d_0(h)). Ren et al., "A Simple
Fix to Mahalanobis Distance for Improving Near-OOD Detection", arXiv 2021 (OpenOOD ``rmds``).
Reads: features (+ labelled training features).

Non-finite training rows (NaN/inf in their logits or features) are left out of the fitted
statistics, with a warning that counts them (as Mahalanobis, and the background statistics).
Refused when a class is left with no finite row.
"""

from __future__ import annotations

import numpy as np

from sure_ood.cache import FeatureCache
from sure_ood.scores.array_cache import train_labelled
from sure_ood.scores.mahalanobis import Mahalanobis, min_class_distance, shared_precision
from sure_ood.scores.numeric import as_f64, chunks
from sure_ood.scores.scorer import register


@register
class RelativeMahalanobis(Mahalanobis):
    """Mahalanobis' class-conditional fit plus one class-agnostic Gaussian (the background)."""

    name = "relative_mahalanobis"
    description = (
        "Mahalanobis distance to the closest class minus the distance to one class-agnostic "
        "Gaussian"
    )
    paper = "Ren et al., arXiv 2021"
    reference = "OpenOOD `rmds`"
    _state_keys = ("means", "precision", "background_mean", "background_precision")

    def _fit(self, train: FeatureCache | None, prior: np.ndarray | None) -> None:
        super()._fit(train, prior)
        h, _, _ = train_labelled(train)
        self.background_mean = h.mean(axis=0)
        self.background_precision = shared_precision(h - self.background_mean)

    def _score(self, cache: FeatureCache) -> np.ndarray:
        d_c = min_class_distance(cache.features, self.means, self.precision)
        d_0 = np.empty(len(cache), dtype=np.float64)
        for sl in chunks(len(cache), cache.features.shape[1]):
            x = as_f64(cache.features[sl]) - self.background_mean
            d_0[sl] = ((x @ self.background_precision) * x).sum(axis=1)
        return -(d_c - d_0)
