"""Inputs validated at the door: every check a stage makes on the files it is given, in one
place, before any work. Each failure is one :class:`~sure_ood.io.InputError` line naming the
file (or option) and what is wrong.

- feature caches (:func:`check_cache`, run by every ``FeatureCache``): dtype kinds (integer
  labels; real floating-point logits, features and head), at least one class and one feature
  dimension, labels within [-1, C-1];
- a fitted method's training cache against each test cache (:func:`check_same_space`): the
  same feature size D and class count C;
- non-finite training rows (:func:`finite_training_rows`, run by ``Scorer.fit``): left out of
  the fitted statistics with a warning that counts them; refused where leaving them out
  changes what the method means (a per-class statistic whose class would have no row);
- names (:func:`check_split_names`, :func:`check_out_not_input`): two inputs that would be
  counted as the same split, and an output path that is one of the inputs;
- score tables (:func:`read_score_table`): readable parquet, the columns, integer labels,
  unique (split, index) rows.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from sure_ood.io import InputError, error_line

if TYPE_CHECKING:
    import pandas as pd

    from sure_ood.cache import FeatureCache

log = logging.getLogger(__name__)

# cache keys that hold real numbers (logits, activations, head parameters)
REAL_KEYS = ("logits", "features", "head_weight", "head_bias", "prenorm_features")


def warn(msg: str) -> None:
    """A warning on stderr (the job's log) and in the logging tree."""
    log.warning(msg)
    print(f"sure-ood: warning: {msg}", file=sys.stderr)


# ---- feature caches -------------------------------------------------------------------------
def check_dtypes(arrays: dict[str, np.ndarray | None], source: str) -> None:
    """Integer labels; real floating-point logits, features and head parameters.

    Float labels would be truncated (2.5 -> class 2) and complex values would lose their
    imaginary part in the float64 arithmetic of the scores: both are refused.
    """
    labels = arrays.get("labels")
    if labels is not None and np.asarray(labels).dtype.kind not in "iu":
        raise InputError(
            f"{source}: 'labels' must be integers (class index, -1 = OOD), "
            f"got dtype {np.asarray(labels).dtype}"
        )
    for key in REAL_KEYS:
        value = arrays.get(key)
        if value is None:
            continue
        dtype = np.asarray(value).dtype
        if dtype.kind == "c":
            raise InputError(
                f"{source}: {key!r} is complex ({dtype}); logits, features and head "
                "parameters must be real floating-point numbers"
            )
        if dtype.kind != "f":
            raise InputError(f"{source}: {key!r} must be floating-point numbers, got dtype {dtype}")


def check_cache(cache: FeatureCache) -> None:
    """dtype kinds, C >= 1, D >= 1, labels within [-1, C-1] (shapes: ``FeatureCache``)."""
    src = cache.source
    check_dtypes(
        {
            "labels": cache.labels,
            "logits": cache.logits,
            "features": cache.features,
            "head_weight": cache.head_weight,
            "head_bias": cache.head_bias,
            "prenorm_features": cache.prenorm_features,
        },
        src,
    )
    if np.ndim(cache.head_weight) == 2:
        c, d = np.shape(cache.head_weight)
        if c == 0:
            raise InputError(f"{src}: no classes ('head_weight' has shape {(c, d)}, C = 0)")
        if d == 0:
            raise InputError(f"{src}: no features ('head_weight' has shape {(c, d)}, D = 0)")
    labels = np.asarray(cache.labels)
    if labels.ndim == 1 and labels.size and np.ndim(cache.head_weight) == 2:
        c = np.shape(cache.head_weight)[0]
        bad = (labels < -1) | (labels > c - 1)
        if bad.any():
            examples = sorted(set(labels[bad].tolist()))[:5]
            raise InputError(
                f"{src}: {int(bad.sum())} label(s) outside [-1, {c - 1}] (e.g. {examples}); "
                f"labels are class indices 0..{c - 1} of the {c} classes, -1 = OOD"
            )


def check_same_space(train: FeatureCache, test: FeatureCache, method: str) -> None:
    """A method fitted on ``train`` scores ``test``: same feature size D and classes C."""
    if test.num_classes != train.num_classes:
        raise InputError(
            f"{test.source}: {test.num_classes} classes, but {train.source} has "
            f"{train.num_classes} ({method!r} is fitted on it)"
        )
    if test.features.shape[1] != train.features.shape[1]:
        raise InputError(
            f"{test.source}: {test.features.shape[1]} feature dimensions, but {train.source} "
            f"has {train.features.shape[1]} ({method!r} is fitted on it)"
        )


def finite_training_rows(
    train: FeatureCache, method: str, per_class: bool, split: str = "training"
) -> FeatureCache:
    """The training (or, with ``split="validation"``, validation) cache without its rows whose
    logits or features are not finite.

    Fitted statistics (means, covariances, percentiles, neighbour banks, templates) are
    estimated from the finite rows; a warning counts the rows left out. Refused when no row
    is left, or, for a method whose statistics are per class (``per_class``), when a class
    that had training images has none left: its statistic would be missing, not estimated.
    """
    from sure_ood.cache import FeatureCache

    def given(key):  # the Python API's ArrayCache holds only what the method reads
        try:
            return getattr(train, key)
        except InputError:
            return None

    keep = np.ones(len(train), dtype=bool)
    for arr in (given("logits"), given("features"), given("prenorm_features")):
        if arr is not None:
            keep &= np.isfinite(np.asarray(arr)).all(axis=1)
    dropped = int((~keep).sum())
    if not dropped:
        return train
    if not keep.any():
        raise InputError(
            f"{train.source}: all {len(train)} {split} rows have non-finite logits or "
            f"features; nothing to fit {method!r} on"
        )
    if per_class:
        had = set(np.unique(train.labels[train.labels >= 0]).tolist())
        left = set(np.unique(train.labels[keep & (train.labels >= 0)]).tolist())
        lost = sorted(had - left)
        if lost:
            raise InputError(
                f"{train.source}: every {split} row of class(es) {lost[:10]} has non-finite "
                f"logits or features; {method!r} needs per-class statistics"
            )
    first = int(np.flatnonzero(~keep)[0])
    warn(
        f"{method}: {dropped} of {len(train)} {split} rows of {train.source} have non-finite "
        f"logits or features (first at row {first}); left out of the fitted statistics"
    )
    if not isinstance(train, FeatureCache):
        return train.rows(keep)
    return FeatureCache(
        logits=train.logits[keep],
        features=train.features[keep],
        labels=train.labels[keep],
        head_weight=train.head_weight,
        head_type=train.head_type,
        head_bias=train.head_bias,
        head_temperature=train.head_temperature,
        head_feature_clip=train.head_feature_clip,
        prenorm_features=None if train.prenorm_features is None else train.prenorm_features[keep],
        source=train.source,
        extra={},
    )


# ---- names ----------------------------------------------------------------------------------
def check_split_names(paths: Sequence[str | os.PathLike], split_name) -> None:
    """Two inputs whose split names collide would be counted as one split (``split~id_test``
    from two folders: twice the ID images). ``split_name`` maps a path to its split."""
    seen: dict[str, str] = {}
    for p in paths:
        name = split_name(p)
        if name in seen:
            raise InputError(
                f"{p}: split name {name!r} collides with {seen[name]}; give each split once "
                "(file names split~<name>.npz must differ)"
            )
        seen[name] = str(p)


def _same_file(a: Path, b: Path) -> bool:
    try:
        if a.exists() and b.exists():
            return os.path.samefile(a, b)
    except OSError:
        pass
    return a.resolve() == b.resolve()


def check_out_not_input(
    out: str | os.PathLike | None, inputs: Iterable[tuple[str, str | os.PathLike | None]]
) -> None:
    """``--out`` must not be one of the inputs (it would be replaced by the output).
    ``inputs``: (option, path) pairs."""
    if out is None:
        return
    out = Path(out)
    for option, p in inputs:
        if p is not None and _same_file(out, Path(p)):
            raise InputError(
                f"--out {out} is also an input ({option} {p}); writing it would destroy "
                "the input: choose another output path"
            )


# ---- score tables ---------------------------------------------------------------------------
SCORE_COLUMNS = ("split", "index", "label", "id_score", "pred")


def read_score_table(path: str | os.PathLike, columns: Sequence[str] = SCORE_COLUMNS):
    """A score parquet, checked: readable, its columns, integer labels/index/pred, unique
    (split, index) rows and labels >= -1."""
    import pandas as pd

    path = Path(path)
    if path.is_dir():
        raise InputError(f"{path}: is a directory, not a .parquet score file")
    if not path.exists():
        raise InputError(f"{path}: file not found")
    try:
        df = pd.read_parquet(path)
    except Exception as e:  # noqa: BLE001 - pyarrow raises many types; one line for all
        raise InputError(f"{path}: cannot read scores: not a parquet file ({error_line(e)})") from e
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise InputError(
            f"{path}: missing score columns {missing} (has {sorted(map(str, df.columns))})"
        )
    _check_score_frame(df, path)
    return df


def _check_score_frame(df: pd.DataFrame, path: Path) -> None:
    for col in ("index", "label", "pred"):
        if col in df.columns and df[col].dtype.kind not in "iu":
            raise InputError(f"{path}: column {col!r} must be integers, got {df[col].dtype}")
    if "id_score" in df.columns and df["id_score"].dtype.kind not in "fiu":
        raise InputError(f"{path}: column 'id_score' must be numbers, got {df['id_score'].dtype}")
    if "label" in df.columns and len(df) and int(df["label"].min()) < -1:
        raise InputError(f"{path}: labels below -1 (min {int(df['label'].min())}); -1 = OOD")
    if {"split", "index"} <= set(df.columns):
        dup = df.duplicated(["split", "index"])
        if dup.any():
            row = df.loc[dup, ["split", "index"]].iloc[0]
            raise InputError(
                f"{path}: {int(dup.sum())} duplicate (split, index) rows, e.g. split "
                f"{row['split']!r} index {int(row['index'])}; an image would be counted twice"
            )
