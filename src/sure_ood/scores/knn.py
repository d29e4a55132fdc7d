"""Deep nearest neighbours: distance to the K-th nearest training feature.

z = h / ||h||_2 for test and training features; S(x) = -||z - z_(K)||_2, z_(K) the K-th nearest
normalised training feature (K = 50). Sun et al., "Out-of-Distribution Detection with Deep
Nearest Neighbors", ICML 2022 (OpenOOD ``knn``). Computed as sqrt(2 - 2 s_K) from the K-th
largest cosine s_K, chunked over test rows: memory O(chunk * N_train), never N x N.
Reads: features (+ training features, a bank of all labelled training images).
"""

from __future__ import annotations

import numpy as np

from sure_ood.cache import FeatureCache
from sure_ood.io import InputError
from sure_ood.scores.base import (
    Scorer,
    check_positive,
    chunks,
    l2_normalize,
    register,
    train_labelled,
)


@register
class KNN(Scorer):
    name = "knn"
    needs = frozenset({"features", "train"})
    fitted = True
    _state_keys = ("bank",)

    def __init__(self, k: int = 50) -> None:
        super().__init__()
        check_positive(self.name, "k", k)
        self.k = int(k)

    def _fit(self, train: FeatureCache | None, prior: np.ndarray | None) -> None:
        h, _, _ = train_labelled(train)
        if h.shape[0] < self.k:
            raise InputError(f"{train.source}: knn k={self.k} exceeds {h.shape[0]} training images")
        self.bank = l2_normalize(h)

    def _score(self, cache: FeatureCache) -> np.ndarray:
        n_bank = self.bank.shape[0]
        if n_bank < self.k:
            raise InputError(f"knn: k={self.k} exceeds the bank of {n_bank} training features")
        out = np.empty(len(cache), dtype=np.float64)
        for sl in chunks(len(cache), n_bank):
            sims = l2_normalize(cache.features[sl]) @ self.bank.T  # [n, N_train]
            s_k = -np.partition(-sims, self.k - 1, axis=1)[:, self.k - 1]
            out[sl] = -np.sqrt(np.maximum(2.0 - 2.0 * s_k, 0.0))
        return out
