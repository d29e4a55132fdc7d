"""``sure-ood score``: score feature caches with one post-hoc method; one parquet of id_scores.

    sure-ood score --method NAME [--param key=value ...] --features F.npz [--features G.npz ...]
                   [--train-features T.npz] [--val-features V.npz] [--prior P.npy]
                   [--stats-out S.npz] --out S.parquet
    sure-ood score --list [--markdown] [--builtin]

The method is fitted once (training features and/or class prior) and scores every
``--features`` file. Output columns: ``split`` (file stem without a ``split~`` prefix),
``index`` (row in that file), ``label``, ``id_score`` (float64, higher = more
in-distribution; NaN kept), ``pred`` (argmax of the logits).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from sure_ood.args import check_suffix
from sure_ood.io import InputError, atomic_path, error_line, save_npz

log = logging.getLogger(__name__)

# How this command names each input of Scorer.fit, for its errors ("give --train-features").
FLAGS = {"train": "--train-features", "val": "--val-features", "prior": "--prior"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--list",
        action="store_true",
        help="describe every method: what it does, what it fits on, paper, reference code",
    )
    parser.add_argument(
        "--markdown", action="store_true", help="with --list: Markdown (docs/methods.md)"
    )
    parser.add_argument(
        "--builtin", action="store_true", help="with --list: built-in methods only (no plugins)"
    )
    parser.add_argument("--method", help="registered method name (see --list)")
    parser.add_argument(
        "--param",
        action="extend",
        nargs="+",
        default=[],
        metavar="KEY=VALUE",
        help="method hyper-parameter (repeatable); VALUE is parsed as YAML (1, 0.5, true, text)",
    )
    parser.add_argument(
        "--features",
        action="extend",
        nargs="+",
        default=[],
        metavar="F.npz",
        help="feature cache to score (repeatable, e.g. ID test and OOD test)",
    )
    parser.add_argument("--train-features", help="training feature cache (fitting, prior)")
    parser.add_argument(
        "--val-features", help="validation feature cache (methods fitted on the val split)"
    )
    parser.add_argument("--prior", help=".npy class prior (length C, sums to 1)")
    parser.add_argument("--stats-out", help="write the fitted statistics here (.npz)")
    parser.add_argument("--out", help="output .parquet")


def parse_params(items: Sequence[str]) -> dict[str, Any]:
    """``["T=2", "fit=true"]`` -> ``{"T": 2, "fit": True}`` (values parsed as YAML scalars)."""
    import yaml

    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise InputError(f"--param {item!r}: expected KEY=VALUE")
        try:
            out[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError as e:
            raise InputError(f"--param {item!r}: cannot parse the value ({e})") from e
    return out


def split_name(path: str | os.PathLike) -> str:
    """``.../split~id_test.npz`` -> ``id_test``."""
    stem = Path(path).name.removesuffix(".npz")
    return stem.removeprefix("split~")


def load_prior(path: str | os.PathLike, num_classes: int | None) -> np.ndarray:
    from sure_ood.scores import check_prior

    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: prior file not found")
    if path.is_dir():
        raise InputError(f"{path}: is a directory, not a .npy prior")
    try:
        prior = np.load(path, allow_pickle=False)
    except Exception as e:  # noqa: BLE001 - zip, pickle, truncation: one line naming the file
        raise InputError(f"{path}: not a readable .npy file ({error_line(e)})") from e
    if not isinstance(prior, np.ndarray):
        prior.close()
        raise InputError(f"{path}: an .npz archive; --prior takes a .npy vector (length C)")
    if prior.dtype.kind not in "fiu":
        raise InputError(f"{path}: the prior must be real numbers, got dtype {prior.dtype}")
    return check_prior(prior, num_classes, str(path))


def score_files(
    method: str,
    params: dict[str, Any] | None,
    feature_paths: Sequence[str | os.PathLike],
    train_path: str | os.PathLike | None = None,
    prior_path: str | os.PathLike | None = None,
    stats_out: str | os.PathLike | None = None,
    val_path: str | os.PathLike | None = None,
):
    """Fit ``method`` once, score every feature file; returns a pandas DataFrame.

    Columns: split, index, label, id_score (float64; NaN kept), pred.
    """
    import pandas as pd

    from sure_ood import scores
    from sure_ood.cache import load_cache
    from sure_ood.inputs import check_same_space, check_split_names

    scorer = scores.get(method, **(params or {}))
    if not feature_paths:
        raise InputError("no --features file given")
    check_split_names(feature_paths, split_name)
    needed = scorer.required_keys()

    # Scorer.fit is the one door: it checks what the method is fitted on and takes the prior
    # from the training labels when no --prior is given; here only the files are read.
    train = load_cache(train_path) if train_path is not None and scorer.requires_fit else None
    val = None
    if val_path is not None and "val" in scorer.needs:
        val = load_cache(val_path)
    prior = None
    if prior_path is not None and "prior" in scorer.needs:
        prior = load_prior(prior_path, train.num_classes if train is not None else None)
    scorer.fit(train, prior, val=val, names=FLAGS)
    fitted_classes = scorer.num_classes
    fitted_from = val_path if val is not None else train_path if train is not None else prior_path

    frames = []
    first_classes: tuple[int, str] | None = None
    for path in feature_paths:
        cache = _load_for(path, needed, method)
        if train is not None:
            check_same_space(train, cache, method)
        if first_classes is None:
            first_classes = (cache.num_classes, str(path))
        elif cache.num_classes != first_classes[0]:
            raise InputError(
                f"{path}: {cache.num_classes} classes, but {first_classes[1]} has "
                f"{first_classes[0]}"
            )
        if fitted_classes is not None and cache.num_classes != fitted_classes:
            raise InputError(
                f"{path}: {cache.num_classes} classes, but {fitted_from} has {fitted_classes}"
            )
        s = scorer.score(cache)
        bad = int((~np.isfinite(s)).sum())
        if bad:
            msg = f"{method}: {bad} of {len(s)} scores in {path} are NaN/inf (kept as NaN)"
            log.warning(msg)
            print(f"sure-ood score: warning: {msg}", file=sys.stderr)
            s = np.where(np.isfinite(s), s, np.nan)
        frames.append(
            pd.DataFrame(
                {
                    "split": split_name(path),
                    "index": np.arange(len(cache), dtype=np.int64),
                    "label": cache.labels.astype(np.int64),
                    "id_score": s.astype(np.float64),
                    "pred": np.asarray(cache.logits).argmax(axis=1).astype(np.int64),
                }
            )
        )
    if stats_out is not None:
        state = scorer.state()
        state["method"] = np.array(method)
        save_npz(stats_out, **state)
    return pd.concat(frames, ignore_index=True)


def _load_for(path: str | os.PathLike, needed: tuple[str, ...], method: str):
    from sure_ood.cache import load_cache

    cache = load_cache(path)
    for key in needed:
        present = key in cache.extra or getattr(cache, key, None) is not None
        if not present:
            if key == "odin_score":
                raise InputError(
                    f"{path}: missing key 'odin_score' needed by {method!r}; ODIN needs the "
                    "network and runs in the 'odin' rule (sure-ood odin)"
                )
            raise InputError(f"{path}: missing key {key!r} needed by method {method!r}")
    return cache


def run(args: argparse.Namespace) -> int:
    if args.list:
        from sure_ood import scores
        from sure_ood.scores import catalog, plugins

        names = scores.available()
        if args.builtin:
            names = [n for n in names if catalog.is_builtin(n)]
        print((catalog.markdown(names) if args.markdown else catalog.text(names)).rstrip("\n"))
        if not args.builtin:
            for reason in plugins.broken().values():
                print(f"sure-ood score: warning: {reason}", file=sys.stderr)
        return 0
    if not args.method:
        raise InputError("--method is required (or --list)")
    if not args.out:
        raise InputError("--out is required")
    from sure_ood.inputs import check_out_not_input

    inputs = [("--features", f) for f in args.features]
    inputs += [("--train-features", args.train_features), ("--prior", args.prior)]
    inputs.append(("--val-features", args.val_features))
    check_out_not_input(args.out, inputs)
    check_out_not_input(args.stats_out, inputs)
    check_suffix(args.out, "--out", ".parquet", ".pq", what="a parquet table")
    if args.stats_out:
        check_suffix(args.stats_out, "--stats-out", ".npz", what="an .npz archive")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    df = score_files(
        args.method,
        parse_params(args.param),
        args.features,
        args.train_features,
        args.prior,
        args.stats_out,
        args.val_features,
    )
    with atomic_path(args.out) as tmp:
        df.to_parquet(tmp, index=False)
    n_nan = int(df["id_score"].isna().sum())
    print(
        f"sure-ood score: {args.method}: {len(df)} images in {df['split'].nunique()} split(s)"
        f"{f', {n_nan} NaN' if n_nan else ''} -> {args.out}"
    )
    return 0
