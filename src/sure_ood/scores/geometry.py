"""Head geometry: features and weights as the classifier head sees them.

Why its own module: a cache holds a linear head (z = W h + b) or a cosine head
(z_c = tau <h_hat, w_hat_c>, with an eval-time feature clip), and the methods that read the
head (ReAct, ASH, SCALE, DICE, fDBD, ViM, GradNorm...) must all treat the two the same way.
These functions are that one treatment; a method never branches on the head type itself.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from sure_ood.cache import FeatureCache
from sure_ood.io import InputError
from sure_ood.scores.numeric import as_f64, chunks, energy, l2_normalize


def head_input(cache: FeatureCache, h: np.ndarray) -> np.ndarray:
    """Features as the head's forward sees them: cosine heads apply their eval-time clip."""
    h = as_f64(h)
    if cache.head_type == "cosine" and cache.head_feature_clip is not None:
        h = np.minimum(h, cache.head_feature_clip)
    return h


def head_space(
    cache: FeatureCache, h: np.ndarray, with_temperature: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """(weight, features) in the space where the head is linear.

    linear: (W, h); cosine: (W_hat, h_hat) after the eval-time clip, W_hat scaled by tau when
    ``with_temperature`` (then W_hat h_hat are the logits).
    """
    if cache.head_type == "cosine":
        w = l2_normalize(cache.head_weight)
        if with_temperature:
            w = cache.head_temperature * w
        return w, l2_normalize(head_input(cache, h))
    return as_f64(cache.head_weight), as_f64(h)


def head_logits(cache: FeatureCache, h: np.ndarray) -> np.ndarray:
    """Logits of features ``h`` through the cache's head.

    linear: z = W h + b; cosine: z_c = tau <h_hat, w_hat_c> after the eval-time clip (if any).
    """
    w = as_f64(cache.head_weight)
    if cache.head_type == "cosine":
        return cache.head_temperature * (l2_normalize(head_input(cache, h)) @ l2_normalize(w).T)
    z = as_f64(h) @ w.T
    if cache.head_bias is not None:
        z = z + as_f64(cache.head_bias)
    return z


def shaped_energy(cache: FeatureCache, shape: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """Energy of the head's logits on features transformed by ``shape``, in row chunks.

    The common tail of the activation-shaping scores (ReAct, ASH, SCALE): only ``shape``
    differs between them.
    """
    out = np.empty(len(cache), dtype=np.float64)
    for sl in chunks(len(cache), cache.num_classes + cache.features.shape[1]):
        with np.errstate(invalid="ignore", over="ignore"):
            out[sl] = energy(head_logits(cache, shape(cache.features[sl])))
    return out


def feature_matrix(cache: FeatureCache, which: str) -> np.ndarray:
    """``features`` or ``prenorm_features`` of a cache; the error names the file and key."""
    if which == "features":
        return cache.features
    if cache.prenorm_features is None:
        raise InputError(f"{cache.source}: missing key 'prenorm_features'")
    return cache.prenorm_features
