"""Numeric helpers shared by the post-hoc methods: softmax, energy, norms, the class prior,
parameter checks and row chunking.

Why one module: every method computes in float64 through the same few formulas and keeps its
temporaries bounded by the same chunking, so a numeric change (a dtype, a chunk budget) is made
once. Only numpy at import time; scipy is imported inside the functions that need it (the
registry is imported by every DAG build and must stay cheap).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from sure_ood.io import InputError

log = logging.getLogger(__name__)

# Elements of the largest temporary a chunked method may allocate (float64: 8 bytes each).
CHUNK_ELEMENTS = 1 << 21


# -------------------------------------------------------------------- validation helpers
def check_positive(name: str, key: str, value: float) -> None:
    if not np.isfinite(value) or value <= 0:
        raise InputError(f"method {name!r}: parameter {key!r} must be > 0, got {value!r}")


def check_range(name: str, key: str, value: float, low: float, high: float) -> None:
    if not low <= value <= high:
        raise InputError(
            f"method {name!r}: parameter {key!r} must be in [{low}, {high}], got {value!r}"
        )


def check_choice(name: str, key: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise InputError(f"method {name!r}: parameter {key!r} must be one of {choices}")


def prior_from_labels(labels: np.ndarray, num_classes: int, source: str = "train") -> np.ndarray:
    """pi_c = n_c / N from training labels (class index = sorted class order); -1 ignored."""
    labels = np.asarray(labels)
    labels = labels[labels >= 0]
    if labels.size == 0:
        raise InputError(f"{source}: no labelled images to estimate the class prior from")
    if labels.max() >= num_classes:
        raise InputError(f"{source}: label {labels.max()} >= number of classes {num_classes}")
    counts = np.bincount(labels, minlength=num_classes).astype(np.float64)
    return counts / counts.sum()


def check_prior(prior: Any, num_classes: int | None, source: str) -> np.ndarray:
    """A prior is a non-negative float vector of length C summing to 1 (within 1e-6)."""
    prior = np.asarray(prior, dtype=np.float64)
    if prior.ndim != 1:
        raise InputError(f"{source}: the prior must be a vector, got shape {prior.shape}")
    if num_classes is not None and prior.shape[0] != num_classes:
        raise InputError(
            f"{source}: the prior has length {prior.shape[0]}, the features have "
            f"{num_classes} classes"
        )
    if not np.all(np.isfinite(prior)) or np.any(prior < 0):
        raise InputError(f"{source}: the prior has negative or non-finite entries")
    if abs(prior.sum() - 1.0) > 1e-6:
        raise InputError(f"{source}: the prior sums to {prior.sum():.8g}, not 1")
    return prior


# -------------------------------------------------------------------- numeric helpers
def as_f64(x: np.ndarray) -> np.ndarray:
    return np.asarray(x, dtype=np.float64)


def probs(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """softmax(z / T) in float64."""
    from scipy.special import softmax  # lazy: the registry is imported by every DAG build

    return softmax(as_f64(logits) / temperature, axis=1)


def log_probs(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    from scipy.special import log_softmax

    return log_softmax(as_f64(logits) / temperature, axis=1)


def energy(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """-E(x) = T * logsumexp(z / T)."""
    from scipy.special import logsumexp

    return temperature * logsumexp(as_f64(logits) / temperature, axis=1)


def l2_normalize(x: np.ndarray, dtype: type = np.float64) -> np.ndarray:
    """x / max(||x||_2, 1e-12) row-wise (the torch F.normalize convention), in ``dtype``."""
    x = np.asarray(x, dtype=dtype)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def row_l1(x: np.ndarray, dtype: type = np.float64) -> np.ndarray:
    """||x_n||_1 per row, computed in ``dtype`` in row chunks; float64 [N]."""
    return map_rows(
        x.shape[0], x.shape[1], lambda sl: np.abs(np.asarray(x[sl], dtype=dtype)).sum(axis=1)
    )


def softmax_l1(
    logits: np.ndarray,
    target: float | np.ndarray,
    temperature: float = 1.0,
    dtype: type = np.float64,
) -> np.ndarray:
    """||softmax(z / T) - q||_1 per row, computed in ``dtype``; float64 [N].

    ``target`` q is a scalar (1/C: the uniform distribution) or a [C] prior. The GradNorm
    family's distance (docs/method.md#rp-gradnorm). Row blocks of ~64k elements stay in the
    CPU's L2 cache, so the seven elementwise passes cost about one pass over memory.
    """
    q = np.asarray(target, dtype=dtype)

    def dist(sl: slice) -> np.ndarray:
        z = np.asarray(logits[sl], dtype=dtype) / dtype(temperature)
        z -= z.max(axis=1, keepdims=True)
        np.exp(z, out=z)
        z /= z.sum(axis=1, keepdims=True)
        z -= q
        np.abs(z, out=z)
        return z.sum(axis=1)

    return map_rows(logits.shape[0], logits.shape[1], dist, budget=1 << 16)


def workers() -> int:
    """Threads a kernel may use: the CPUs this process may run on (a SLURM/cgroup limit)."""
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        n = os.cpu_count() or 1
    return max(1, n)


def chunks(n: int, per_row: int, budget: int = CHUNK_ELEMENTS) -> Iterator[slice]:
    """Row slices whose temporaries hold about ``budget`` elements (``per_row`` each)."""
    step = max(1, budget // max(1, per_row))
    for start in range(0, n, step):
        yield slice(start, min(n, start + step))


def warn_negative_base(name: str, base: np.ndarray) -> None:
    """RW scores multiply by a factor in [0, 1]: negative base scores reverse the order."""
    finite = base[np.isfinite(base)]
    if finite.size and finite.min() < 0:
        log.warning(
            "%s: %d base scores are negative (min %.4g); reweighting reverses their order",
            name,
            int((finite < 0).sum()),
            finite.min(),
        )


def reweight_factor(logits: np.ndarray, prior: np.ndarray) -> np.ndarray:
    """RW factor 1 - cos(p, pi), p = softmax(z) at T = 1 (Jiang et al. ICML'23)."""
    p = probs(logits)
    cos = (p @ prior) / (np.linalg.norm(p, axis=1) * np.linalg.norm(prior))
    return 1.0 - cos


def map_rows(
    n: int, per_row: int, fn: Callable[[slice], np.ndarray], budget: int = CHUNK_ELEMENTS
) -> np.ndarray:
    """out[sl] = fn(sl) over row chunks: temporaries stay O(chunk * per_row), not O(N * C)."""
    out = np.empty(n, dtype=np.float64)
    for sl in chunks(n, per_row, budget):
        out[sl] = fn(sl)
    return out
