"""Compiled kernels for the scores numpy cannot compute in one pass over memory.

Hand-written with numba because no maintained library computes them fused:

- :func:`residual_l1` -- ``||h_hat_n - cos_nc w_hat_c||_1`` for every (image n, class c), the
  O(N C D) term of the exact cosine-head GradNorm (spec 7.6). In numpy it needs an [n, c, D]
  temporary and four passes over it (multiply, subtract, abs, sum); torch has no fused op for
  it (``torch.cdist(p=1)`` cannot scale the second point per pair). Fused and register-tiled
  (4 images x 2 classes share their loads), it runs near the machine's SIMD peak
  (docs/performance.md).

The numba code lives in :mod:`sure_ood.scores._numba_kernels`, imported on first use only:
importing the score registry (every DAG build does) must stay cheap. Its compiled code is
cached on disk (``cache=True``, in ``__pycache__`` or numba's user cache): later processes skip
the ~2 s compile.
"""

from __future__ import annotations

import numpy as np

from sure_ood.scores.base import workers


def residual_l1(h_hat: np.ndarray, w_hat: np.ndarray, cos: np.ndarray) -> np.ndarray:
    """out[n, c] = ||h_hat_n - cos[n, c] w_hat_c||_1, in the inputs' float dtype.

    ``h_hat`` [N, D], ``w_hat`` [C, D], ``cos`` [N, C], all float32 or all float64; sums are
    accumulated in that dtype (float32: ~1e-7 relative at D = 768). Runs on :func:`workers`
    threads; each output is computed by one thread in a fixed order, so the result does not
    depend on the thread count.
    """
    dtype = h_hat.dtype
    if not (w_hat.dtype == cos.dtype == dtype and dtype in (np.float32, np.float64)):
        raise TypeError(
            f"residual_l1: want one float dtype, got {dtype}, {w_hat.dtype}, {cos.dtype}"
        )
    import numba

    from sure_ood.scores import _numba_kernels

    numba.set_num_threads(min(workers(), numba.config.NUMBA_NUM_THREADS))
    out = np.empty(cos.shape, dtype=dtype)
    _numba_kernels.residual_l1(
        np.ascontiguousarray(h_hat), np.ascontiguousarray(w_hat), np.ascontiguousarray(cos), out
    )
    return out
