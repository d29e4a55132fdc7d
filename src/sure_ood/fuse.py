"""Stage ``fuse``: one score per image from several views (and optionally several models).

SURE-OOD averages the per-crop OOD scores and, for the class prediction, the per-crop softmax
vectors (spec section 8; SSB-OSR metric_result_GradNorm.py). ``median`` and ``max`` are offered
as ablations; with several test models this is an output-level ensemble, to compare with the
weight-space soup.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from sure_ood.io import InputError, atomic_path

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
    return path.stem.removeprefix("split~")


def fuse(score_paths: list[Path], fusion: str = "mean", feature_paths=()) -> pd.DataFrame:  # noqa: F821
    """Fuse aligned score tables; images must be the same (split, index) in every input."""
    import pandas as pd
    from scipy.special import softmax

    frames = []
    for p in score_paths:
        try:
            frames.append(
                pd.read_parquet(p).sort_values(KEYS, kind="stable").reset_index(drop=True)
            )
        except (OSError, ValueError) as e:
            raise InputError(f"{p}: cannot read scores ({e})") from e
    base = frames[0]
    for p, f in zip(score_paths[1:], frames[1:], strict=True):
        if len(f) != len(base) or not (f[KEYS].to_numpy() == base[KEYS].to_numpy()).all():
            raise InputError(f"{p}: not the same images as {score_paths[0]}")
        if not (f["label"].to_numpy() == base["label"].to_numpy()).all():
            raise InputError(f"{p}: labels disagree with {score_paths[0]}")
    out = base[KEYS + ["label"]].copy()
    out["id_score"] = _combine(np.stack([f["id_score"].to_numpy(float) for f in frames]), fusion)
    out["pred"] = base["pred"].to_numpy()
    if len(frames) > 1 and feature_paths:
        from sure_ood.cache import load_cache

        probs: dict[str, list[np.ndarray]] = {}
        for fp in feature_paths:
            probs.setdefault(_split_name(fp), []).append(softmax(load_cache(fp).logits, axis=1))
        pred = out["pred"].to_numpy().copy()
        for split, ps in probs.items():
            sel = (out["split"] == split).to_numpy()
            mean_p = np.mean(ps, axis=0)
            idx = out.loc[sel, "index"].to_numpy()
            pred[sel] = mean_p[idx].argmax(axis=1)
        out["pred"] = pred
    elif len(frames) > 1:
        # without caches, majority vote of the per-view predictions (ties -> lowest class)
        preds = np.stack([f["pred"].to_numpy() for f in frames])
        out["pred"] = [np.bincount(col).argmax() for col in preds.T]
    return out


def run(args: argparse.Namespace) -> int:
    out = fuse(args.scores, args.fusion, args.features)
    with atomic_path(args.out) as tmp:
        out.to_parquet(tmp, index=False)
    print(f"{args.out}: {len(out)} images from {len(args.scores)} score file(s), {args.fusion}")
    return 0
