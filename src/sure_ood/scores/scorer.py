"""The Scorer base class and the method registry.

Why its own module: this is the contract between a method and everything that runs it (the
``score`` stage, the workflow, plugins). Every method is a :class:`Scorer` subclass in its own
module, registered with :func:`register`. Hyper-parameters are keyword arguments of
``__init__`` (with defaults, validated); what a method reads is its ``needs`` (for given
parameters: :meth:`Scorer.needs_for`); fitted statistics come from the training (or validation)
cache only and round-trip through :meth:`Scorer.state` / :meth:`Scorer.load_state` as plain
arrays (saved as ``.npz``, never pickled). :meth:`Scorer.fit` is the one door that checks a
method's fitting inputs.

Only numpy (and sklearn/scipy, lazily, in the methods) is imported: scoring never imports torch.
"""

from __future__ import annotations

import inspect
import warnings
from typing import Any, ClassVar

import numpy as np

from sure_ood.cache import FeatureCache
from sure_ood.io import InputError
from sure_ood.scores.array_cache import as_cache
from sure_ood.scores.numeric import check_prior, check_range, prior_from_labels

# What a method may read: test-cache arrays (logits, features, head), what it is fitted on
# (train, val, prior) and, for ODIN, the network itself.
NEEDS = frozenset({"logits", "features", "head", "train", "val", "prior", "network"})
# The needs that make a method fitted: :meth:`Scorer.fit` must run before it scores.
FIT_INPUTS = frozenset({"train", "val", "prior"})


class Scorer:
    """A post-hoc OOD score: ``score(cache)`` -> float64 [N], higher = more in-distribution.

    Class attributes: ``name`` (registry key) and ``needs`` (subset of :data:`NEEDS`: what the
    method reads at its default parameters). A method whose inputs depend on a parameter
    overrides :meth:`needs_for` and sets ``self.needs = self.needs_for(**self.params)`` in
    ``__init__``. A method is fitted (:attr:`requires_fit`) exactly when its needs include one of
    :data:`FIT_INPUTS`. Subclasses implement ``_score`` and, when fitted, ``_fit``; fitted
    statistics are attributes named in ``_state_keys``. ``description`` (one line), ``paper``
    (authors, venue, year), ``reference`` (reference implementation) and ``cosine_head`` (how a
    cosine head is handled, if it matters) are what ``sure-ood score --list`` and
    docs/methods.md show. ``fit`` receives the validation cache (``val=``) for methods whose
    ``needs`` include ``"val"``.
    """

    name: ClassVar[str] = ""
    needs: frozenset[str] = frozenset({"logits"})
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
    @classmethod
    def needs_for(cls, **params: Any) -> frozenset[str]:
        """What the method reads when built with ``params`` (others at their defaults).

        The workflow asks this with a method's configured parameters to decide which inputs
        its score jobs get (the training or validation split, the class prior), without
        building the method. Default: the class's ``needs``, whatever the parameters.
        """
        return cls.needs

    @property
    def requires_fit(self) -> bool:
        """True when :meth:`fit` must run before :meth:`score`: the method reads a training
        or validation split or the class prior (its needs meet :data:`FIT_INPUTS`)."""
        return bool(self.needs & FIT_INPUTS)

    @property
    def fitted(self) -> bool:
        """Deprecated name of :attr:`requires_fit` (it never meant "has been fitted": that is
        :attr:`is_fitted`)."""
        warnings.warn(
            "Scorer.fitted is deprecated: use requires_fit (needs fit) or is_fitted (has been "
            "fitted)",
            DeprecationWarning,
            stacklevel=2,
        )
        return self.requires_fit

    @property
    def params(self) -> dict[str, Any]:
        """The hyper-parameters this instance was built with."""
        return {k: getattr(self, k) for k in _param_names(type(self))}

    @property
    def is_fitted(self) -> bool:
        """True once :meth:`fit` (or :meth:`load_state`) has run on a method that fits."""
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
        *,
        names: dict[str, str] | None = None,
    ) -> Scorer:
        """Fit statistics on the training cache (labels allowed) and/or take the class prior.

        Without ``prior``, prior-based methods use the label frequencies of ``train``.
        Methods whose ``needs`` include ``"val"`` fit on the held-out validation cache ``val``
        instead of ``train``. Methods that fit nothing accept any input and return at once.
        Caches may be :class:`~sure_ood.cache.FeatureCache` objects or :func:`arrays`.
        ``names`` maps ``train``/``val``/``prior`` to how the caller gives them (the CLI: its
        flags), so a missing input's error says what to give.
        """
        if not self.requires_fit:
            return self
        from sure_ood.inputs import finite_training_rows

        def missing(what: str, key: str) -> InputError:
            tail = f": give {names[key]}" if names else "; none given"
            return InputError(f"method {self.name!r} is fitted on {what}{tail}")

        if "val" in self.needs:
            if val is None:
                raise missing("the validation split", "val")
            train = finite_training_rows(val, self.name, self.per_class_fit, "validation")
        if "train" in self.needs and train is None:
            raise missing("training features", "train")
        if "train" in self.needs:
            train = finite_training_rows(train, self.name, self.per_class_fit)
        if train is not None:
            self._num_classes = train.num_classes
        if "prior" in self.needs:
            if prior is None:
                if train is None:
                    give = (
                        f"{names['prior']} or {names['train']}"
                        if names
                        else "a prior or training features with labels"
                    )
                    raise InputError(f"method {self.name!r} needs a class prior: give {give}")
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
        if self.requires_fit and not self._is_fitted:
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
        if not self.requires_fit:
            return {}
        if not self._is_fitted:
            raise RuntimeError(f"method {self.name!r} is not fitted: no state to save")
        out = {k: np.asarray(getattr(self, k)) for k in self._state_keys}
        out["num_classes"] = np.asarray(self._num_classes, dtype=np.int64)
        return out

    def load_state(self, state: dict[str, np.ndarray]) -> Scorer:
        """Restore statistics written by :meth:`state`."""
        if not self.requires_fit:
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
    _check_legacy_fitted(cls, origin)
    cls.origin = origin
    _REGISTRY[cls.name] = cls
    return cls


def _check_legacy_fitted(cls: type[Scorer], origin: str) -> None:
    """Plugins written before ``requires_fit``: a class attribute ``fitted`` still works when
    it agrees with the needs (with a DeprecationWarning) and is an error naming the plugin
    when it does not, since whether a method fits now follows from its needs alone."""
    legacy = inspect.getattr_static(cls, "fitted", None)
    if not isinstance(legacy, bool | np.bool_):
        return
    derived = bool(set(cls.needs) & FIT_INPUTS)
    if bool(legacy) != derived:
        raise InputError(
            f"{origin}: method {cls.name!r} sets fitted = {bool(legacy)} but needs "
            f"{sorted(cls.needs)}: a method is fitted exactly when it needs one of "
            f"{sorted(FIT_INPUTS)}; declare that in 'needs' and remove 'fitted'"
        )
    warnings.warn(
        f"{origin}: method {cls.name!r} sets 'fitted', which is deprecated: whether a method "
        "fits follows from its 'needs' (train, val or prior); remove it",
        DeprecationWarning,
        stacklevel=3,
    )


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


def needs_of(method: str, params: dict[str, Any] | None = None) -> frozenset[str]:
    """What ``method`` reads when configured with ``params``, without building it.

    This decides which inputs a method's score jobs get (the training or validation split,
    the class prior): :meth:`Scorer.needs_for` of its class. The keywords are those of a
    config's method entry, so ``needs_of(**sure_ood.config.method_config(config, id))`` works.
    """
    return _lookup(method).needs_for(**(params or {}))


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


class PercentileScorer(Scorer):
    """A scorer whose one hyper-parameter is a percentile in [0, 100] (OpenOOD units)."""

    def __init__(self, percentile: float = 90.0) -> None:
        super().__init__()
        check_range(self.name, "percentile", percentile, 0.0, 100.0)
        self.percentile = float(percentile)
