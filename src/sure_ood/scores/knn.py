"""Deep nearest neighbours: distance to the K-th nearest training feature.

z = h / ||h||_2 for test and training features; S(x) = -||z - z_(K)||_2, z_(K) the K-th nearest
normalised training feature (K = 50). Sun et al., "Out-of-Distribution Detection with Deep
Nearest Neighbors", ICML 2022 (OpenOOD ``knn``). Computed as sqrt(2 - 2 s_K) from the K-th
largest cosine s_K: exact brute force (a GEMM per block of test rows, then an in-place
partial sort), blocks spread over the CPUs with single-threaded BLAS each, so no BLAS thread
waits on a sort. Memory O(workers * block * N_train), never N x N_train.
``precision``: float32 (default; s_K to ~1e-7, the ranking of a float64 run) or float64.
Reads: features (+ training features, a bank of all labelled training images).

Non-finite training rows (NaN/inf in their logits or features) are left out of the fitted
statistics, with a warning that counts them (the neighbour bank holds the finite rows).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np

from sure_ood.cache import FeatureCache
from sure_ood.io import InputError
from sure_ood.scores.array_cache import train_labelled
from sure_ood.scores.numeric import check_choice, check_positive, chunks, l2_normalize, workers
from sure_ood.scores.scorer import Scorer, register

BLOCK_ELEMENTS = 1 << 22  # elements of one block's similarity matrix (16 MB in float32)


@register
class KNN(Scorer):
    name = "knn"
    needs = frozenset({"features", "train"})
    description = (
        "minus the distance of the normalised feature to its K-th nearest normalised training "
        "feature"
    )
    paper = "Sun et al., ICML 2022"
    reference = "https://github.com/deeplearning-wisc/knn-ood; OpenOOD `knn`"
    _state_keys = ("bank",)

    def __init__(self, k: int = 50, precision: str = "float32") -> None:
        super().__init__()
        check_positive(self.name, "k", k)
        check_choice(self.name, "precision", precision, ("float32", "float64"))
        self.k = int(k)
        self.precision = precision

    def _fit(self, train: FeatureCache | None, prior: np.ndarray | None) -> None:
        h, _, _ = train_labelled(train)
        if h.shape[0] < self.k:
            raise InputError(f"{train.source}: knn k={self.k} exceeds {h.shape[0]} training images")
        self.bank = l2_normalize(h, np.dtype(self.precision).type)  # [N_train, D]

    def _score(self, cache: FeatureCache) -> np.ndarray:
        n_bank = self.bank.shape[0]
        if n_bank < self.k:
            raise InputError(f"knn: k={self.k} exceeds the bank of {n_bank} training features")
        from threadpoolctl import threadpool_limits

        dtype = np.dtype(self.precision).type
        bank_t = np.asarray(self.bank, dtype=dtype).T  # a view (BLAS reads it transposed)
        kth = n_bank - self.k  # ascending order: the K-th largest sits at n_bank - K
        out = np.empty(len(cache), dtype=np.float64)

        def block(sl: slice) -> None:
            sims = l2_normalize(cache.features[sl], dtype) @ bank_t  # [n, N_train]
            sims.partition(kth, axis=1)  # in place: no second [n, N_train] array
            s_k = sims[:, kth].astype(np.float64)
            out[sl] = -np.sqrt(np.maximum(2.0 - 2.0 * s_k, 0.0))

        spans = list(chunks(len(cache), n_bank, budget=BLOCK_ELEMENTS))
        with threadpool_limits(1, user_api="blas"), ThreadPoolExecutor(workers()) as pool:
            list(pool.map(block, spans))  # list(): re-raise a block's error here
        return out
