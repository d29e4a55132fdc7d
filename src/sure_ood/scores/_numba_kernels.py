"""numba kernels behind :mod:`sure_ood.scores.kernels` (imported only when one is used).

Module-level functions, so that numba's on-disk cache finds them again in a new process.
"""

from numba import njit, prange

# reassociation lets LLVM vectorise the reductions; no 'nnan'/'ninf', so NaN/inf propagate.
_FASTMATH = {"reassoc", "contract", "nsz"}


@njit(fastmath=_FASTMATH, cache=True, inline="always")
def _residual(h, w, s):
    acc = h.dtype.type(0)
    for k in range(h.shape[0]):
        acc += abs(h[k] - s * w[k])
    return acc


@njit(parallel=True, fastmath=_FASTMATH, cache=True)
def residual_l1(h, w, cos, out):
    """out[n, c] = sum_d |h[n, d] - cos[n, c] w[c, d]| (see kernels.residual_l1).

    Tiles of 4 rows x 2 classes: each loaded h[., k] serves 2 accumulators and each w[., k]
    serves 4, so the loop runs at arithmetic, not load, throughput.
    """
    n, d = h.shape
    c = w.shape[0]
    n4, c2 = n - n % 4, c - c % 2
    for blk in prange((n + 3) // 4):
        i = blk * 4
        if i >= n4:  # the last < 4 rows
            for r in range(i, n):
                for j in range(c):
                    out[r, j] = _residual(h[r], w[j], cos[r, j])
            continue
        h0, h1, h2, h3 = h[i], h[i + 1], h[i + 2], h[i + 3]
        for j in range(0, c2, 2):
            wa, wb = w[j], w[j + 1]
            s0a, s1a, s2a, s3a = cos[i, j], cos[i + 1, j], cos[i + 2, j], cos[i + 3, j]
            s0b, s1b = cos[i, j + 1], cos[i + 1, j + 1]
            s2b, s3b = cos[i + 2, j + 1], cos[i + 3, j + 1]
            a0 = a1 = a2 = a3 = b0 = b1 = b2 = b3 = h.dtype.type(0)
            for k in range(d):
                x0, x1, x2, x3 = h0[k], h1[k], h2[k], h3[k]
                va, vb = wa[k], wb[k]
                a0 += abs(x0 - s0a * va)
                a1 += abs(x1 - s1a * va)
                a2 += abs(x2 - s2a * va)
                a3 += abs(x3 - s3a * va)
                b0 += abs(x0 - s0b * vb)
                b1 += abs(x1 - s1b * vb)
                b2 += abs(x2 - s2b * vb)
                b3 += abs(x3 - s3b * vb)
            out[i, j], out[i + 1, j], out[i + 2, j], out[i + 3, j] = a0, a1, a2, a3
            out[i, j + 1], out[i + 1, j + 1], out[i + 2, j + 1], out[i + 3, j + 1] = (
                b0,
                b1,
                b2,
                b3,
            )
        if c2 < c:  # odd class count: the last class
            for r in range(i, i + 4):
                out[r, c - 1] = _residual(h[r], w[c - 1], cos[r, c - 1])
