"""numpy arrays as a feature cache: the Python API's input, without a file.

Why its own module: :meth:`Scorer.score(logits=z) <sure_ood.scores.scorer.Scorer.score>` and
``fit(arrays(...))`` take in-memory arrays; :class:`ArrayCache` holds only what was given (MSP
needs logits alone) and names any array a method reads but was not given.
:func:`train_labelled` gives the labelled rows of a cache or of arrays alike.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from sure_ood.cache import FeatureCache
from sure_ood.io import InputError

if TYPE_CHECKING:  # the Scorer imports this module
    from sure_ood.scores.scorer import Scorer

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
