"""Scorer base class, the method registry, and helpers shared by the post-hoc methods.

Every method is a :class:`Scorer` subclass in its own module, registered with :func:`register`.
Hyper-parameters are keyword arguments of ``__init__`` (with defaults, validated); fitted
statistics come from the training cache only and round-trip through :meth:`Scorer.state` /
:meth:`Scorer.load_state` as plain arrays (saved as ``.npz``, never pickled).

Only numpy/scipy (and sklearn, lazily) are imported here: scoring a cache never imports torch.
"""

from __future__ import annotations

import inspect
import logging
import os
from collections.abc import Callable, Iterator
from typing import Any, ClassVar

import numpy as np

from sure_ood.cache import FeatureCache
from sure_ood.io import InputError

log = logging.getLogger(__name__)

NEEDS = frozenset({"logits", "features", "head", "train", "val", "prior", "network"})

# Elements of the largest temporary a chunked method may allocate (float64: 8 bytes each).
CHUNK_ELEMENTS = 1 << 21


class Scorer:
    """A post-hoc OOD score: ``score(cache)`` -> float64 [N], higher = more in-distribution.

    Class attributes: ``name`` (registry key), ``needs`` (subset of :data:`NEEDS`), ``fitted``
    (True when :meth:`fit` must run before :meth:`score`). Subclasses implement ``_score``
    and, when fitted, ``_fit``; fitted statistics are attributes named in ``_state_keys``.
    ``description`` (one line), ``paper`` (authors, venue, year), ``reference`` (reference
    implementation) and ``cosine_head`` (how a cosine head is handled, if it matters) are what
    ``sure-ood score --list`` and docs/methods.md show. ``fit`` receives the validation cache
    (``val=``) for methods whose ``needs`` include ``"val"``.
    """

    name: ClassVar[str] = ""
    needs: frozenset[str] = frozenset({"logits"})
    fitted: bool = False
    # statistics per class (class means...): a class left without finite training rows is an
    # error, not a class quietly missing from the fit (sure_ood.inputs.finite_training_rows)
    per_class_fit: ClassVar[bool] = False
    _state_keys: ClassVar[tuple[str, ...]] = ()
    description: ClassVar[str] = ""
    paper: ClassVar[str] = ""
    reference: ClassVar[str] = ""
    cosine_head: ClassVar[str] = ""
    origin: ClassVar[str] = ""  # set by the registry: the module, or the plugin and its package

    def __init__(self) -> None:
        self._is_fitted = False
        self._num_classes: int | None = None

    # ---------------------------------------------------------------- public API
    @property
    def params(self) -> dict[str, Any]:
        """The hyper-parameters this instance was built with."""
        return {k: getattr(self, k) for k in _param_names(type(self))}

    @property
    def is_fitted(self) -> bool:
        return self._is_fitted

    @property
    def num_classes(self) -> int | None:
        """Number of classes the fitted statistics describe (None before fitting)."""
        return self._num_classes

    def fit(
        self,
        train: FeatureCache | None = None,
        prior: np.ndarray | None = None,
        val: FeatureCache | None = None,
    ) -> Scorer:
        """Fit statistics on the training cache (labels allowed) and/or take the class prior.

        Without ``prior``, prior-based methods use the label frequencies of ``train``.
        Methods whose ``needs`` include ``"val"`` fit on the held-out validation cache ``val``
        instead of ``train``. Methods that fit nothing accept any input and return at once.
        Caches may be :class:`~sure_ood.cache.FeatureCache` objects or :func:`arrays`.
        """
        if not self.fitted:
            return self
        from sure_ood.inputs import finite_training_rows

        if "val" in self.needs:
            if val is None:
                raise InputError(
                    f"method {self.name!r} is fitted on the validation split; none given"
                )
            train = finite_training_rows(val, self.name, self.per_class_fit, "validation")
        if "train" in self.needs and train is None:
            raise InputError(f"method {self.name!r} is fitted on training features; none given")
        if "train" in self.needs:
            train = finite_training_rows(train, self.name, self.per_class_fit)
        if train is not None:
            self._num_classes = train.num_classes
        if "prior" in self.needs:
            if prior is None:
                if train is None:
                    raise InputError(
                        f"method {self.name!r} needs a class prior: give a prior or training "
                        "features with labels"
                    )
                prior = prior_from_labels(train.labels, train.num_classes, train.source)
            num_classes = train.num_classes if train is not None else None
            prior = check_prior(prior, num_classes, "prior")
            self._num_classes = prior.shape[0]
        self._fit(train, prior)
        self._is_fitted = True
        return self

    def score(self, cache: FeatureCache | None = None, **arrays: Any) -> np.ndarray:
        """Score every image of ``cache``: float64 [N], higher = more in-distribution.

        Instead of a cache, give the arrays themselves (``score(logits=z)``; see
        :func:`arrays`): a method that reads only logits needs only logits.
        Never reads ``cache.labels``. NaN/inf from a method are returned as they are.
        """
        if cache is None:
            cache = as_cache(self, **arrays)
        elif arrays:
            raise InputError(f"method {self.name!r}: give a cache or arrays, not both")
        if self.fitted and not self._is_fitted:
            raise RuntimeError(
                f"method {self.name!r} must be fitted (fit(train, prior)) before it can score"
            )
        known = self._num_classes is not None and cache.num_classes is not None
        if known and cache.num_classes != self._num_classes:
            raise InputError(
                f"{cache.source}: has {cache.num_classes} classes but method {self.name!r} "
                f"was fitted with {self._num_classes}"
            )
        out = np.asarray(self._score(cache), dtype=np.float64)
        if out.shape != (len(cache),):
            raise InputError(
                f"method {self.name!r} ({self.origin or type(self).__module__}) returned scores "
                f"of shape {out.shape}, want ({len(cache)},): one score per image"
            )
        return out

    def required_keys(self) -> tuple[str, ...]:
        """Optional cache keys this instance reads beyond the required ones."""
        return ()

    def state(self) -> dict[str, np.ndarray]:
        """Fitted statistics as arrays (empty for methods that fit nothing)."""
        if not self.fitted:
            return {}
        if not self._is_fitted:
            raise RuntimeError(f"method {self.name!r} is not fitted: no state to save")
        out = {k: np.asarray(getattr(self, k)) for k in self._state_keys}
        out["num_classes"] = np.asarray(self._num_classes, dtype=np.int64)
        return out

    def load_state(self, state: dict[str, np.ndarray]) -> Scorer:
        """Restore statistics written by :meth:`state`."""
        if not self.fitted:
            return self
        missing = [k for k in (*self._state_keys, "num_classes") if k not in state]
        if missing:
            raise InputError(f"state of method {self.name!r} lacks {missing}")
        for k in self._state_keys:
            value = np.asarray(state[k])
            setattr(self, k, value.item() if value.ndim == 0 else value)
        self._num_classes = int(state["num_classes"])
        self._is_fitted = True
        return self

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params.items())
        return f"{type(self).__name__}({args})"

    # ---------------------------------------------------------------- to implement
    def _fit(self, train: FeatureCache | None, prior: np.ndarray | None) -> None:
        raise NotImplementedError

    def _score(self, cache: FeatureCache) -> np.ndarray:
        raise NotImplementedError


# -------------------------------------------------------------------- registry
_REGISTRY: dict[str, type[Scorer]] = {}


def register(cls: type[Scorer], origin: str | None = None) -> type[Scorer]:
    """Class decorator: add a :class:`Scorer` subclass to the registry under ``cls.name``.

    ``origin`` says where the class comes from (default: its module); two methods with one
    name are an error naming both.
    """
    origin = origin or f"module {cls.__module__}"
    if not cls.name:
        raise InputError(f"{origin}: scorer class {cls.__name__} has no 'name'")
    if cls.name in _REGISTRY:
        raise InputError(
            f"two methods named {cls.name!r}: {_REGISTRY[cls.name].origin} and {origin}"
        )
    unknown = set(cls.needs) - NEEDS
    if unknown:
        raise InputError(f"{origin}: method {cls.name!r} has unknown needs {sorted(unknown)}")
    cls.origin = origin
    _REGISTRY[cls.name] = cls
    return cls


def available() -> list[str]:
    """Names of every registered method (built in and installed plugins), sorted."""
    from sure_ood.scores import plugins

    plugins.load()
    return sorted(_REGISTRY)


def _lookup(name: str) -> type[Scorer]:
    from sure_ood.scores import plugins

    plugins.load()
    if name not in _REGISTRY:
        plugins.raise_if_broken(name)
        raise InputError(f"unknown method {name!r} (available: {', '.join(available())})")
    return _REGISTRY[name]


def method_class(name: str) -> type[Scorer]:
    """The class of method ``name`` (its metadata, module and needs)."""
    return _lookup(name)


def _param_names(cls: type[Scorer]) -> list[str]:
    sig = inspect.signature(cls.__init__)
    return [p.name for p in sig.parameters.values() if p.name != "self"]


def params_of(name: str) -> dict[str, Any]:
    """Hyper-parameters of a method and their defaults."""
    cls = _lookup(name)
    sig = inspect.signature(cls.__init__)
    return {p.name: p.default for p in sig.parameters.values() if p.name != "self"}


def get(name: str, **params: Any) -> Scorer:
    """Build method ``name``; unknown names or parameters, or bad values, raise InputError."""
    defaults = params_of(name)
    for key, value in params.items():
        if key not in defaults:
            raise InputError(
                f"method {name!r} has no parameter {key!r} (parameters: {sorted(defaults)})"
            )
        params[key] = _coerce(name, key, value, defaults[key])
    return _lookup(name)(**params)


def _coerce(name: str, key: str, value: Any, default: Any) -> Any:
    """Check ``value`` against the type of the default (ints are accepted for floats)."""
    bad = InputError(
        f"method {name!r}: parameter {key!r} must be {type(default).__name__}, got {value!r}"
    )
    if isinstance(default, bool):
        if not isinstance(value, bool | np.bool_):
            raise bad
        return bool(value)
    if isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, int | np.integer):
            raise bad
        return int(value)
    if isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, int | float | np.number):
            raise bad
        return float(value)
    if isinstance(default, str) and not isinstance(value, str):
        raise bad
    return value


# -------------------------------------------------------------------- arrays as a cache
# What each entry of ``needs`` reads from a cache.
_NEED_KEYS = {"logits": ("logits",), "features": ("features",), "head": ("head_weight",)}


class ArrayCache:
    """In-memory arrays standing in for a feature cache, for the Python API.

    Unlike :class:`~sure_ood.cache.FeatureCache` it needs only what the method reads: MSP
    needs ``logits`` alone. Reading an array that was not given raises an InputError naming it.
    """

    source = "<arrays>"

    def __init__(self, **arrays: Any) -> None:
        given = {k: v for k, v in arrays.items() if v is not None}
        n = {k: np.shape(v)[0] for k, v in given.items() if k in ("logits", "features", "labels")}
        if len(set(n.values())) > 1:
            raise InputError(f"arrays: different numbers of images {n}")
        for key in ("logits", "features", "head_weight"):
            if key in given and np.ndim(given[key]) != 2:
                raise InputError(f"arrays: {key!r} must be 2-D, got shape {np.shape(given[key])}")
        from sure_ood.inputs import check_dtypes

        check_dtypes(given, self.source)  # the same door as a cache file: no silent casts
        self._arrays = given
        self._n = next(iter(n.values()), 0)
        self.extra: dict[str, np.ndarray] = {}

    def rows(self, keep: np.ndarray) -> ArrayCache:
        """The same arrays for the images selected by ``keep`` (head parameters unchanged)."""
        per_image = ("logits", "features", "labels", "prenorm_features")
        return ArrayCache(
            **{k: (v[keep] if k in per_image else v) for k, v in self._arrays.items()}
        )

    def __getattr__(self, key: str) -> Any:
        if key.startswith("_"):
            raise AttributeError(key)
        if key in self._arrays:
            return self._arrays[key]
        if key == "labels":
            return np.full(self._n, -1, dtype=np.int64)
        if key in ("head_type",):
            return "linear"
        if key in ("head_bias", "head_temperature", "head_feature_clip", "prenorm_features"):
            return None
        raise InputError(f"arrays: {key!r} not given")

    @property
    def num_classes(self) -> int | None:
        """From head_weight, logits or labels; None when only features were given."""
        if "head_weight" in self._arrays:
            return int(np.shape(self._arrays["head_weight"])[0])
        if "logits" in self._arrays:
            return int(np.shape(self._arrays["logits"])[1])
        if "labels" in self._arrays:
            return int(np.max(self._arrays["labels"])) + 1
        return None

    def __len__(self) -> int:
        return self._n


def arrays(
    logits: np.ndarray | None = None,
    features: np.ndarray | None = None,
    labels: np.ndarray | None = None,
    head_weight: np.ndarray | None = None,
    head_bias: np.ndarray | None = None,
    head_type: str = "linear",
    head_temperature: float | None = None,
    head_feature_clip: float | None = None,
):
    """numpy arrays as a cache for :meth:`Scorer.fit` / :meth:`Scorer.score`: no file.

    With logits, features and head_weight it is a full (validated) FeatureCache; otherwise
    an :class:`ArrayCache` holding only what was given (labels default to -1, unknown).
    """
    full = logits is not None and features is not None and head_weight is not None
    if full:
        return FeatureCache(
            logits=np.asarray(logits),
            features=np.asarray(features),
            labels=(np.full(len(logits), -1, np.int64) if labels is None else np.asarray(labels)),
            head_weight=np.asarray(head_weight),
            head_type=head_type,
            head_bias=None if head_bias is None else np.asarray(head_bias),
            head_temperature=head_temperature,
            head_feature_clip=head_feature_clip,
            source="<arrays>",
        )
    if head_type != "linear" or head_temperature is not None or head_bias is not None:
        raise InputError("arrays: head parameters need head_weight, logits and features")
    return ArrayCache(
        logits=logits,
        features=features,
        labels=None if labels is None else np.asarray(labels),
        head_weight=head_weight,
    )


def as_cache(scorer: Scorer, **given: Any):
    """The arrays given to ``scorer.score(...)`` as a cache; checks the method's needs."""
    missing = [
        key
        for need in sorted(scorer.needs)
        for key in _NEED_KEYS.get(need, ())
        if given.get(key) is None
    ]
    if missing:
        raise InputError(f"method {scorer.name!r} reads {missing}: give them as arrays")
    return arrays(**given)


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


def train_labelled(train: FeatureCache) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(features, logits, labels) of the labelled (ID) training images.

    logits is None for :func:`arrays` given without logits (methods fitted on features only).
    """
    keep = train.labels >= 0
    if not keep.any():
        raise InputError(f"{train.source}: no labelled images to fit on")
    has_logits = not isinstance(train, ArrayCache) or "logits" in train._arrays
    return (
        np.asarray(train.features[keep], dtype=np.float64),
        np.asarray(train.logits[keep], dtype=np.float64) if has_logits else None,
        train.labels[keep],
    )


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


class PercentileScorer(Scorer):
    """A scorer whose one hyper-parameter is a percentile in [0, 100] (OpenOOD units)."""

    def __init__(self, percentile: float = 90.0) -> None:
        super().__init__()
        check_range(self.name, "percentile", percentile, 0.0, 100.0)
        self.percentile = float(percentile)


def feature_matrix(cache: FeatureCache, which: str) -> np.ndarray:
    """``features`` or ``prenorm_features`` of a cache; the error names the file and key."""
    if which == "features":
        return cache.features
    if cache.prenorm_features is None:
        raise InputError(f"{cache.source}: missing key 'prenorm_features'")
    return cache.prenorm_features


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
