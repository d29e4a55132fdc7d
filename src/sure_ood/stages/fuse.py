"""Stage ``fuse``: one score per image from several views (and optionally several models).

SURE-OOD averages the per-crop OOD scores and, for the class prediction, the per-crop softmax
vectors (docs/method.md#fusion; SSB-OSR metric_result_GradNorm.py). ``median`` and ``max``
are offered as ablations; with several test models this is an output-level ensemble, to
compare with the weight-space soup.
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


# Rows of logits turned into probabilities at once while fusing (~64 MB of float32 at 1000
# classes): the fusion streams through each cache instead of holding float64 copies of all.
BLOCK_BYTES = 64 * 2**20


def _read_arrays(path: Path, keys: tuple[str, ...]) -> dict[str, np.ndarray]:
    """Only ``keys`` of an ``.npz`` (its other members, e.g. features, are never read)."""
    try:
        with np.load(path, allow_pickle=False) as z:
            missing = [k for k in keys if k not in z.files]
            if missing:
                raise InputError(f"{path}: missing key(s) {missing} (has: {sorted(z.files)})")
            return {k: z[k] for k in keys}
    except FileNotFoundError as e:
        raise InputError(f"{path}: file not found") from e
    except (ValueError, OSError, EOFError) as e:
        raise InputError(f"{path}: not a readable .npz file ({e})") from e


def add_softmax(acc: np.ndarray, logits: np.ndarray) -> None:
    """``acc += softmax(logits, axis=1)`` in float32, a block of rows at a time.

    float32 is exact enough here: the fused softmax only feeds an argmax, and a float32 mean of
    a few probabilities moves by ~1e-7 relative, which can flip only exact near-ties (the test
    compares with float64)."""
    from scipy.special import softmax

    rows = max(1, BLOCK_BYTES // (4 * max(1, logits.shape[1])))
    for i in range(0, len(logits), rows):
        acc[i : i + rows] += softmax(logits[i : i + rows].astype(np.float32), axis=1)


def fused_prediction(out: pd.DataFrame, feature_paths, n_inputs: int) -> np.ndarray:
    """argmax of the mean softmax over the caches of every input (SSB-OSR's class prediction).

    ``out``: the aligned (split, index, label) rows; each split must have exactly ``n_inputs``
    caches (one per score file), each with that split's images in ``index`` order. Streams:
    one split at a time, one cache's logits at a time, float32 sums (:func:`add_softmax`),
    so memory stays at two (images x classes) float32 arrays of the largest split.
    """
    splits = set(out["split"])
    by_split: dict[str, list[Path]] = {}
    for fp in feature_paths:
        split = _split_name(fp)
        if split not in splits:
            raise InputError(f"{fp}: split {split!r} is not in the scores ({sorted(splits)})")
        by_split.setdefault(split, []).append(Path(fp))
    for split in splits:
        paths = by_split.get(split, [])
        if len(paths) != n_inputs:
            raise InputError(
                f"split {split!r}: {len(paths)} feature cache(s) for {n_inputs} score file(s); "
                f"give one cache per score file and split"
            )
    pred = np.empty(len(out), dtype=np.int64)
    for split in sorted(splits):
        sel = (out["split"] == split).to_numpy()
        idx = out.loc[sel, "index"].to_numpy()
        labels = out.loc[sel, "label"].to_numpy()
        acc = None
        for fp in by_split[split]:
            a = _read_arrays(fp, ("logits", "labels"))
            n = len(a["labels"])
            if n != sel.sum() or not np.array_equal(idx, np.arange(n)):
                raise InputError(
                    f"{fp}: {n} images, but the scores have {int(sel.sum())} images of "
                    f"split {split!r} (indices 0..{n - 1} expected)"
                )
            if not np.array_equal(a["labels"].astype(np.int64), labels):
                raise InputError(f"{fp}: labels disagree with the scores of split {split!r}")
            if acc is None:
                acc = np.zeros(a["logits"].shape, dtype=np.float32)
            elif acc.shape != a["logits"].shape:
                raise InputError(
                    f"{fp}: {a['logits'].shape[1]} classes, other caches of split {split!r} "
                    f"have {acc.shape[1]}"
                )
            add_softmax(acc, a["logits"])
            del a
        pred[sel] = acc.argmax(axis=1)
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
