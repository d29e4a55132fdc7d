"""GradNorm: L1 norm of the last layer's weight gradient, through the actual head (exact).

Loss: KL(u || softmax(z / T)) up to a constant = -(1/C) sum_c log softmax(z / T)_c, whose
logit gradient is g = (p^(T) - u) / T. Score = sum_{c,k} |dLoss / dW_ck| (weight only, no bias).
Huang et al., "On the Importance of Gradients for Detecting Distributional Shifts in the Wild",
NeurIPS 2021 (original code: mean over classes, T = 1, batch size 1).

- linear head z = W h + b: dLoss/dW = g h^T (rank 1), so S = (1/T) ||p - u||_1 ||h||_1.
- cosine head z_c = tau <h_hat, w_hat_c> (h clipped at the eval-time clip first, if any):
  dLoss/dw_c = tau g_c / ||w_c|| (I - w_hat_c w_hat_c^T) h_hat, so
  S = tau sum_c |g_c| / ||w_c|| * ||h_hat - <h_hat, w_hat_c> w_hat_c||_1
  It depends on h only through its direction (docs/method.md#gradnorm-and-the-cosine-head).

Both head types read p (and the cosines s = z / tau) from the cached logits -- the network's
own outputs -- and the head's input from the cached features; the head is never re-run. The
two must come from one forward: a sample of rows is checked (loosely enough for bf16
caches). The cosine head runs in one fused, register-tiled numba kernel
(:func:`sure_ood.scores.kernels.cosine_gradnorm`): memory O(N + C D), never [N, C] or
[N, C, D].

``precision``: float32 (default) or float64 arithmetic. float32 agrees with float64 to ~1e-6
relative (tests: float64 autograd to 1e-5), better than the float32 torch loop it replaces,
at 2x the speed (docs/performance.md).
Reads: logits, features, head (weight, type, temperature, feature clip).
"""

from __future__ import annotations

import numpy as np

from sure_ood.cache import FeatureCache
from sure_ood.io import InputError
from sure_ood.scores.geometry import head_logits
from sure_ood.scores.numeric import as_f64, check_choice, check_positive, row_l1, softmax_l1
from sure_ood.scores.scorer import Scorer, register


def cosine_head_gradnorm(
    h: np.ndarray,
    logits: np.ndarray,
    weight: np.ndarray,
    tau: float,
    temperature: float = 1.0,
    dtype: str = "float32",
    clip: float | None = None,
) -> np.ndarray:
    """Exact weight-gradient L1 norm of the uniform-KL loss through a cosine head; float64 [N].

    ``h`` [N, D] raw features, ``logits`` [N, C] the head's outputs on them (tau cos),
    ``weight`` [C, D] raw, ``clip`` the head's eval-time clip (h <- min(h, clip)).
    S_n = tau / T sum_c |p_nc - 1/C| / ||w_c|| ||h_hat_n - cos_nc w_hat_c||_1,
    p = softmax(z / T), cos = z / tau.
    """
    from sure_ood.scores import kernels

    w = as_f64(weight)
    w_norm = np.maximum(np.linalg.norm(w, axis=1), 1e-12)
    coef = tau / temperature / w_norm  # tau |g_c| / ||w_c||, g = (p - u) / T
    dt = np.dtype(dtype).type
    return kernels.cosine_gradnorm(h, logits, w / w_norm[:, None], coef, tau, temperature, clip, dt)


def check_logits_match_head(cache: FeatureCache, rows: int = 64) -> None:
    """The cached logits must be the head's output on the cached features (one forward).

    Checked on the first ``rows`` finite images, with a tolerance (5 % of the logit scale)
    that bf16 forwards pass and a wrong head, temperature or feature file does not.
    """
    z = np.asarray(cache.logits[: 4 * rows], dtype=np.float64)
    h = np.asarray(cache.features[: 4 * rows], dtype=np.float64)
    ok = np.isfinite(z).all(axis=1) & np.isfinite(h).all(axis=1)
    z, h = z[ok][:rows], h[ok][:rows]
    if not len(z):
        return
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1, user_api="blas"):  # no BLAS threads left spinning after it
        ref = head_logits(cache, h)
    err = float(np.abs(z - ref).max())
    if err > 0.05 * (1.0 + float(np.abs(ref).max())):
        raise InputError(
            f"{cache.source}: 'logits' are not the {cache.head_type} head's output on "
            f"'features' (max difference {err:.3g} on {len(z)} images); gradnorm needs both "
            "from one forward"
        )


@register
class GradNorm(Scorer):
    name = "gradnorm"
    needs = frozenset({"logits", "features", "head"})
    description = (
        "L1 norm of the last layer's weight gradient of KL(uniform || softmax), exact for the "
        "actual head"
    )
    paper = "Huang et al., NeurIPS 2021"
    reference = (
        "https://github.com/deeplearning-wisc/gradnorm_ood; OpenOOD `gradnorm` (sums over classes:"
        " C x our value, same ranking)"
    )
    cosine_head = (
        "the exact gradient through the cosine head (not rank-1); it depends on the feature only "
        "through its direction, so the feature-magnitude signal is lost (see "
        "method.md#gradnorm-and-the-cosine-head)."
    )

    def __init__(self, temperature: float = 1.0, precision: str = "float32") -> None:
        super().__init__()
        check_positive(self.name, "temperature", temperature)
        check_choice(self.name, "precision", precision, ("float32", "float64"))
        self.temperature = float(temperature)
        self.precision = precision

    def _score(self, cache: FeatureCache) -> np.ndarray:
        check_logits_match_head(cache)  # before the work: a bad file fails at once
        t, h, z = self.temperature, cache.features, cache.logits
        if cache.head_type == "cosine":
            tau, clip, w = cache.head_temperature, cache.head_feature_clip, cache.head_weight
            return cosine_head_gradnorm(h, z, w, tau, t, self.precision, clip)
        dtype = np.dtype(self.precision).type
        return softmax_l1(z, 1.0 / cache.num_classes, t, dtype) * row_l1(h, dtype) / t
