"""The feature cache: one forward pass, saved once, read by every post-hoc score.

An ``.npz`` file with (N images, C classes, D feature dims):

========================  =========  ===========================================================
key                       shape      meaning
========================  =========  ===========================================================
``logits``                [N, C]     the head's output (cosine heads: tau * cos, eval-time clip)
``features``              [N, D]     the head's input h (the CLS token as the head sees it)
``labels``                [N]        class index in sorted class order; -1 for OOD images
``head_weight``           [C, D]     the last layer's weight (raw, not normalised)
``head_bias``             [C]        the last layer's bias (absent when the head has none)
``head_type``             scalar     ``"linear"`` or ``"cosine"``
``head_temperature``      scalar     cosine heads only: the fixed temperature tau
``head_feature_clip``     scalar     cosine heads only, optional: eval-time clip h <= value
``prenorm_features``      [N, D]     optional: the CLS token before the final norm
========================  =========  ===========================================================

Users can score features computed elsewhere by writing a file with these keys.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from sure_ood.io import InputError, load_npz, save_npz

HEAD_TYPES = ("linear", "cosine")


@dataclass
class FeatureCache:
    """In-memory view of one cache file; ``source`` names it in error messages."""

    logits: np.ndarray
    features: np.ndarray
    labels: np.ndarray
    head_weight: np.ndarray
    head_type: str = "linear"
    head_bias: np.ndarray | None = None
    head_temperature: float | None = None
    head_feature_clip: float | None = None
    prenorm_features: np.ndarray | None = None
    source: str = "<memory>"
    extra: dict[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.validate()
        self.labels = np.asarray(self.labels).astype(np.int64, copy=False)

    @property
    def num_classes(self) -> int:
        return int(self.head_weight.shape[0])

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def validate(self) -> None:
        from sure_ood.inputs import check_cache  # dtypes, C and D >= 1, label range

        check_cache(self)
        src = self.source
        if self.head_type not in HEAD_TYPES:
            raise InputError(
                f"{src}: head_type must be one of {HEAD_TYPES}, got {self.head_type!r}"
            )
        if self.logits.ndim != 2:
            raise InputError(f"{src}: 'logits' must be [N, C], got shape {self.logits.shape}")
        if self.features.ndim != 2:
            raise InputError(f"{src}: 'features' must be [N, D], got shape {self.features.shape}")
        n, c = self.logits.shape
        if self.features.shape[0] != n or self.labels.shape != (n,):
            raise InputError(
                f"{src}: 'logits' {self.logits.shape}, 'features' {self.features.shape} and "
                f"'labels' {self.labels.shape} disagree on the number of images"
            )
        if self.head_weight.shape != (c, self.features.shape[1]):
            raise InputError(
                f"{src}: 'head_weight' must be [C, D] = [{c}, {self.features.shape[1]}], "
                f"got {self.head_weight.shape}"
            )
        if self.head_bias is not None and self.head_bias.shape != (c,):
            raise InputError(f"{src}: 'head_bias' must be [{c}], got {self.head_bias.shape}")
        if self.head_type == "cosine" and self.head_temperature is None:
            raise InputError(f"{src}: cosine head needs the key 'head_temperature'")
        if self.prenorm_features is not None and self.prenorm_features.shape != self.features.shape:
            raise InputError(
                f"{src}: 'prenorm_features' {self.prenorm_features.shape} must match "
                f"'features' {self.features.shape}"
            )

    def to_arrays(self) -> dict[str, np.ndarray]:
        out = {
            "logits": self.logits,
            "features": self.features,
            "labels": self.labels,
            "head_weight": self.head_weight,
            "head_type": np.array(self.head_type),
        }
        if self.head_bias is not None:
            out["head_bias"] = self.head_bias
        if self.head_temperature is not None:
            out["head_temperature"] = np.array(self.head_temperature, dtype=np.float64)
        if self.head_feature_clip is not None:
            out["head_feature_clip"] = np.array(self.head_feature_clip, dtype=np.float64)
        if self.prenorm_features is not None:
            out["prenorm_features"] = self.prenorm_features
        out.update(self.extra)
        return out


REQUIRED_KEYS = ("logits", "features", "labels", "head_weight", "head_type")
OPTIONAL_KEYS = ("head_bias", "head_temperature", "head_feature_clip", "prenorm_features")


def save_cache(path: str | os.PathLike, cache: FeatureCache) -> None:
    """Write the cache atomically (temporary file, then rename)."""
    save_npz(path, **cache.to_arrays())


def load_cache(path: str | os.PathLike, required: tuple[str, ...] = ()) -> FeatureCache:
    """Read and validate a cache file; a missing key is an error naming file and key."""
    path = Path(path)
    arrays = load_npz(path)
    for key in REQUIRED_KEYS + tuple(required):
        if key not in arrays:
            raise InputError(f"{path}: missing key {key!r} (has: {sorted(arrays)})")
    known = set(REQUIRED_KEYS) | set(OPTIONAL_KEYS)
    scalar = {k: arrays[k].item() for k in ("head_temperature", "head_feature_clip") if k in arrays}
    return FeatureCache(
        logits=arrays["logits"],
        features=arrays["features"],
        labels=arrays["labels"],
        head_weight=arrays["head_weight"],
        head_type=str(arrays["head_type"]),
        head_bias=arrays.get("head_bias"),
        head_temperature=scalar.get("head_temperature"),
        head_feature_clip=scalar.get("head_feature_clip"),
        prenorm_features=arrays.get("prenorm_features"),
        source=str(path),
        extra={k: v for k, v in arrays.items() if k not in known},
    )
