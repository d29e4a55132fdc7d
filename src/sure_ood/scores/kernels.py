"""Compiled kernels for the scores numpy cannot compute in one pass over memory.

Hand-written with numba because no maintained library computes them fused:

- :func:`cosine_gradnorm` -- the exact cosine-head GradNorm
  (docs/method.md#gradnorm-and-the-cosine-head), whose O(N C D) term
  ``||h_hat_n - cos_nc w_hat_c||_1`` for every (image n, class c) dominates. In numpy it needs
  an [n, c, D] temporary and four passes over it (multiply, subtract, abs, sum); torch has no
  fused op for it (``torch.cdist(p=1)`` cannot scale the second point per pair). Fused and
  register-tiled (4 images x 2 classes share their loads), with the normalisation, softmax
  and class sum done per block of 4 images while they are in cache, it runs near the
  machine's SIMD peak (docs/performance.md).

The numba code lives in :mod:`sure_ood.scores._numba_kernels`, imported on first use only:
importing the score registry (every DAG build does) must stay cheap. Its compiled code is
cached on disk (``cache=True``, in ``__pycache__``, numba's user cache or, where neither is
writable, a temporary folder): later processes skip the ~2 s compile.
"""

from __future__ import annotations

import os

import numpy as np

from sure_ood.scores.numeric import chunks, workers


def _load():
    """The numba kernels module. numba caches compiled code next to the source or in the
    user's cache folder; where neither is writable (a read-only install and home on a
    cluster node), importing a ``cache=True`` function fails, so cache in a fresh temporary
    folder instead (each process then compiles once, ~2 s)."""
    try:
        from sure_ood.scores import _numba_kernels
    except RuntimeError as err:
        if "no locator available" not in str(err):
            raise
        import tempfile

        import numba.core.config

        os.environ["NUMBA_CACHE_DIR"] = tempfile.mkdtemp(prefix="sure-ood-numba-")
        numba.core.config.reload_config()
        from sure_ood.scores import _numba_kernels
    return _numba_kernels


def cosine_gradnorm(
    h: np.ndarray,
    logits: np.ndarray,
    w_hat: np.ndarray,
    coef: np.ndarray,
    tau: float,
    temperature: float,
    clip: float | None,
    dtype: type,
) -> np.ndarray:
    """sum_c coef_c |softmax(z / T)_c - 1/C| ||x - (z_c / tau) w_hat_c||_1 per image; float64 [N].

    ``h`` [N, D] raw features (x = normalize(min(h, clip))), ``logits`` [N, C], ``w_hat``
    [C, D] unit rows, ``coef`` [C]. Arithmetic in ``dtype`` (float32 or float64; the sum over
    classes in float64), in row chunks (inputs of another dtype are converted one chunk at a
    time), on :func:`workers` threads. Each image is computed by one thread in a fixed order:
    the result does not depend on the thread count.
    """
    import numba

    _numba_kernels = _load()
    numba.set_num_threads(min(workers(), numba.config.NUMBA_NUM_THREADS))
    w_hat = np.ascontiguousarray(w_hat, dtype=dtype)
    coef = np.ascontiguousarray(coef, dtype=np.float64)
    clip = np.inf if clip is None else float(clip)
    out = np.empty(h.shape[0], dtype=np.float64)
    for sl in chunks(h.shape[0], h.shape[1] + w_hat.shape[0], budget=1 << 24):
        hh = np.ascontiguousarray(h[sl], dtype=dtype)
        zz = np.ascontiguousarray(logits[sl], dtype=dtype)
        _numba_kernels.cosine_gradnorm(hh, zz, w_hat, coef, tau, temperature, clip, out[sl])
    return out
