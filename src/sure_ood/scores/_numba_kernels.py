"""numba kernels behind :mod:`sure_ood.scores.kernels` (imported only when one is used).

Module-level functions, so that numba's on-disk cache finds them again in a new process.
"""

import numpy as np
from numba import njit, prange

# reassociation lets LLVM vectorise the reductions; no 'nnan'/'ninf', so NaN/inf propagate.
_FASTMATH = {"reassoc", "contract", "nsz"}


@njit(fastmath=_FASTMATH, cache=True, inline="always")
def _residual(x, w, s):
    acc = x.dtype.type(0)
    for k in range(x.shape[0]):
        acc += abs(x[k] - s * w[k])
    return acc


@njit(parallel=True, fastmath=_FASTMATH, cache=True)
def cosine_gradnorm(h, z, w, coef, tau, temperature, clip, out):
    """out[n] = sum_c coef[c] |softmax(z_n / T)_c - 1/C| ||x_n - (z_nc / tau) w_c||_1.

    x_n = normalize(min(h_n, clip)). Blocks of 4 images, one block per parallel iteration:
    the block's normalised features, its [4, C] L1 terms and its softmax stay in L1/L2. The
    L1 terms run in tiles of 4 images x 2 classes (each loaded x[., k] serves 2 accumulators,
    each w[., k] 4), at arithmetic, not load, throughput.
    """
    n, d = h.shape
    c = w.shape[0]
    c2 = c - c % 2
    dt = h.dtype.type
    inv_tau, inv_t, u = dt(1.0 / tau), dt(1.0 / temperature), dt(1.0 / c)
    for blk in prange((n + 3) // 4):
        i = blk * 4
        rows = min(4, n - i)
        x = np.zeros((4, d), dtype=h.dtype)  # rows past n stay 0: computed, never used
        s = np.zeros((4, c), dtype=h.dtype)  # cosines z / tau
        l1 = np.empty((4, c), dtype=h.dtype)
        for r in range(rows):
            ss = dt(0)
            for k in range(d):
                v = h[i + r, k]
                if v > clip:  # not min(): NaN must stay NaN
                    v = clip
                x[r, k] = v
                ss += v * v
            inv = dt(1.0) / max(np.sqrt(ss), dt(1e-12))
            for k in range(d):
                x[r, k] *= inv
            for j in range(c):
                s[r, j] = z[i + r, j] * inv_tau
        x0, x1, x2, x3 = x[0], x[1], x[2], x[3]
        for j in range(0, c2, 2):
            wa, wb = w[j], w[j + 1]
            s0a, s1a, s2a, s3a = s[0, j], s[1, j], s[2, j], s[3, j]
            s0b, s1b, s2b, s3b = s[0, j + 1], s[1, j + 1], s[2, j + 1], s[3, j + 1]
            a0 = a1 = a2 = a3 = b0 = b1 = b2 = b3 = dt(0)
            for k in range(d):
                v0, v1, v2, v3 = x0[k], x1[k], x2[k], x3[k]
                va, vb = wa[k], wb[k]
                a0 += abs(v0 - s0a * va)
                a1 += abs(v1 - s1a * va)
                a2 += abs(v2 - s2a * va)
                a3 += abs(v3 - s3a * va)
                b0 += abs(v0 - s0b * vb)
                b1 += abs(v1 - s1b * vb)
                b2 += abs(v2 - s2b * vb)
                b3 += abs(v3 - s3b * vb)
            l1[0, j], l1[1, j], l1[2, j], l1[3, j] = a0, a1, a2, a3
            l1[0, j + 1], l1[1, j + 1], l1[2, j + 1], l1[3, j + 1] = b0, b1, b2, b3
        if c2 < c:  # odd class count: the last class
            for r in range(4):
                l1[r, c - 1] = _residual(x[r], w[c - 1], s[r, c - 1])
        for r in range(rows):  # softmax(z / T), then the coef- and L1-weighted sum
            zr = z[i + r]
            m = zr[0]
            for j in range(c):
                m = max(m, zr[j])  # NaN rows end NaN through exp below
            tot = dt(0)
            p = s[r]  # reuse the cosine row as the softmax buffer
            for j in range(c):
                p[j] = np.exp((zr[j] - m) * inv_t)
                tot += p[j]
            inv_tot = dt(1.0) / tot
            acc = 0.0  # float64 accumulator over classes
            for j in range(c):
                acc += coef[j] * abs(p[j] * inv_tot - u) * l1[r, j]
            out[i + r] = acc
