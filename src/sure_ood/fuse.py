"""Stage ``fuse``: one score per image from several views (and optionally several models).

SURE-OOD averages the per-crop OOD scores and, for the class prediction, the per-crop softmax
vectors (spec section 8; SSB-OSR metric_result_GradNorm.py). ``median`` and ``max`` are offered
as ablations; with several test models this is an output-level ensemble, to compare with the
weight-space soup.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from sure_ood.io import InputError, atomic_path

if TYPE_CHECKING:
    import pandas as pd

FUSIONS = ("mean", "median", "max")
KEYS = ["split", "index"]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--scores", nargs="+", required=True, type=Path, help="score parquets")
    p.add_argument(
        "--features",
        nargs="*",
        default=[],
        type=Path,
        help="feature caches of the same views (to fuse the softmax for the class prediction)",
    )
    p.add_argument("--fusion", default="mean", choices=FUSIONS)
    p.add_argument("--out", required=True, type=Path)


def _combine(stack: np.ndarray, fusion: str) -> np.ndarray:
    if fusion == "mean":
        return stack.mean(axis=0)
    if fusion == "median":
        return np.median(stack, axis=0)
    if fusion == "max":
        return stack.max(axis=0)
    raise InputError(f"fusion: unknown fusion {fusion!r} (choose from {FUSIONS})")


def _split_name(path: Path) -> str:
    return Path(path).name.removesuffix(".npz").removeprefix("split~")


def _read_scores(path: Path) -> pd.DataFrame:
    from sure_ood.inputs import read_score_table  # readable, columns, dtypes, unique rows

    df = read_score_table(path, KEYS + ["label", "id_score", "pred"])
    return df.sort_values(KEYS, kind="stable").reset_index(drop=True)


def fused_prediction(out: pd.DataFrame, feature_paths, n_inputs: int) -> np.ndarray:
    """argmax of the mean softmax over the caches of every input (SSB-OSR's class prediction).

    ``out``: the aligned (split, index, label) rows; each split must have exactly ``n_inputs``
    caches (one per score file), each with that split's images in ``index`` order.
    """
    from scipy.special import softmax

    from sure_ood.cache import load_cache

    splits = set(out["split"])
    probs: dict[str, list[np.ndarray]] = {}
    for fp in feature_paths:
        split = _split_name(fp)
        if split not in splits:
            raise InputError(f"{fp}: split {split!r} is not in the scores ({sorted(splits)})")
        cache = load_cache(fp)
        sel = (out["split"] == split).to_numpy()
        idx = out.loc[sel, "index"].to_numpy()
        if len(cache) != sel.sum() or not np.array_equal(idx, np.arange(len(cache))):
            raise InputError(
                f"{fp}: {len(cache)} images, but the scores have {int(sel.sum())} images of "
                f"split {split!r} (indices 0..{len(cache) - 1} expected)"
            )
        if not np.array_equal(cache.labels, out.loc[sel, "label"].to_numpy()):
            raise InputError(f"{fp}: labels disagree with the scores of split {split!r}")
        p = softmax(cache.logits.astype(np.float64), axis=1)
        if probs.get(split) and probs[split][0].shape != p.shape:
            raise InputError(
                f"{fp}: {p.shape[1]} classes, other caches of split {split!r} have "
                f"{probs[split][0].shape[1]}"
            )
        probs.setdefault(split, []).append(p)
    pred = np.empty(len(out), dtype=np.int64)
    for split in splits:
        ps = probs.get(split, [])
        if len(ps) != n_inputs:
            raise InputError(
                f"split {split!r}: {len(ps)} feature cache(s) for {n_inputs} score file(s); "
                f"give one cache per score file and split"
            )
        sel = (out["split"] == split).to_numpy()
        pred[sel] = np.mean(ps, axis=0).argmax(axis=1)
    return pred


def fuse(score_paths: list[Path], fusion: str = "mean", feature_paths=()) -> pd.DataFrame:
    """Fuse aligned score tables; images must be the same (split, index) in every input.

    ``id_score``: the ``fusion`` of the inputs' scores. ``pred``: with one input, its own;
    with several and their feature caches, argmax of the mean softmax (SURE-OOD); with several
    and no caches, the majority vote of the inputs' predictions (ties -> lowest class).
    """
    if not score_paths:
        raise InputError("fuse: no score file given")
    if fusion not in FUSIONS:
        raise InputError(f"fusion: unknown fusion {fusion!r} (choose from {FUSIONS})")
    frames = [_read_scores(p) for p in score_paths]
    base = frames[0]
    for p, f in zip(score_paths[1:], frames[1:], strict=True):
        if len(f) != len(base) or not (f[KEYS].to_numpy() == base[KEYS].to_numpy()).all():
            raise InputError(f"{p}: not the same images as {score_paths[0]}")
        if not (f["label"].to_numpy() == base["label"].to_numpy()).all():
            raise InputError(f"{p}: labels disagree with {score_paths[0]}")
    out = base[KEYS + ["label"]].copy()
    out["id_score"] = _combine(np.stack([f["id_score"].to_numpy(float) for f in frames]), fusion)
    if len(frames) == 1:
        out["pred"] = base["pred"].to_numpy()
    elif feature_paths:
        out["pred"] = fused_prediction(out, feature_paths, len(frames))
    else:
        preds = np.stack([f["pred"].to_numpy() for f in frames])
        out["pred"] = [int(np.bincount(col).argmax()) for col in preds.T]
    return out


def run(args: argparse.Namespace) -> int:
    from sure_ood.inputs import check_out_not_input

    check_out_not_input(
        args.out,
        [("--scores", p) for p in args.scores] + [("--features", p) for p in args.features],
    )
    out = fuse(args.scores, args.fusion, args.features)
    with atomic_path(args.out) as tmp:
        out.to_parquet(tmp, index=False)
    print(f"{args.out}: {len(out)} images from {len(args.scores)} score file(s), {args.fusion}")
    return 0
