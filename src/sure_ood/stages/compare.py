"""``sure-ood compare``: two-level paired bootstrap comparison of two table rows.

Each row JSON (written by ``sure-ood evaluate``) names the per-image scores of each training
replicate in ``replicate_scores_files`` (older rows: one ``scores_file``): parquet files with
columns ``split`` (str), ``index`` (int), ``label`` (int, -1 = OOD), ``id_score`` (float,
higher = ID) and ``pred`` (int). Relative paths are resolved from the row JSON's place in its
results tree (beside it, or below a folder above it), so the command works from any working
directory. Replicate j of A is paired with replicate j of B (same seed index: runs that share
their parent), images are aligned on ``(split, index)`` and must be the same in both; ID vs OOD
is pooled over all splits (the challenge's Easy U Hard setting). The difference of the
replicate means is resampled at two levels (replicate pairs, then images: see
:func:`sure_ood.metrics.two_level_paired_bootstrap`); with one replicate pair this is the paired
image bootstrap. Rows with different replicate counts are compared on their first common ones.

    sure-ood compare ROW_A.json ROW_B.json [--n-boot 1000] [--seed 0] [--out diff.json]
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from sure_ood.io import InputError, read_json, write_json
from sure_ood.metrics import ALL_METRICS, two_level_paired_bootstrap

COLUMNS = ("split", "index", "label", "id_score", "pred")
DEFAULT_METRICS: tuple[str, ...] = ("auroc", "fpr_at_95_tpr")
_LABELS = {
    "auroc": "AUROC",
    "fpr_at_95_tpr": "FPR@95TPR",
    "fpr95_ood_pos": "FPR@95 (OOD pos)",
    "aupr_in": "AUPR-In",
    "aupr_out": "AUPR-Out",
    "id_accuracy": "ID accuracy",
    "oscr": "OSCR",
}
_LOWER_IS_BETTER = {"fpr_at_95_tpr", "fpr95_ood_pos"}
_BOOT = {
    "two_level": "two-level paired bootstrap (replicates, then images)",
    "images": "paired image bootstrap (one replicate)",
}


def _resolve(row_path: Path, p: Path) -> Path:
    """A score file named in a row JSON: absolute as is; relative from the row's results root,
    i.e. beside the row JSON or below the first folder above it that holds the path (a row at
    ``W/results/b/rows/t/r.json`` names ``results/b/scores/...``, found under ``W``)."""
    if p.is_absolute():
        return p
    here = row_path.resolve().parent
    for folder in (here, *here.parents):
        if (folder / p).exists():
            return folder / p
    raise InputError(
        f"{row_path}: scores file {p} not found beside the row JSON or under any folder above it"
    )


def row_score_paths(row_path: str | Path) -> list[Path]:
    """The score files of a row JSON, one per training replicate, in replicate order."""
    row_path = Path(row_path)
    row = read_json(row_path)
    if not isinstance(row, dict) or not ("replicate_scores_files" in row or "scores_file" in row):
        raise InputError(f"{row_path}: no 'scores_file' key (is this a row JSON?)")
    files = row.get("replicate_scores_files") or [row["scores_file"]]
    return [_resolve(row_path, Path(f)) for f in files]


def load_scores(path: Path, row_path: Path) -> Any:
    """One score file as a pandas DataFrame indexed by (split, index)."""
    import pandas as pd

    if not path.exists():
        raise InputError(f"{row_path}: scores_file {path} not found")
    try:
        df = pd.read_parquet(path, columns=list(COLUMNS))
    except Exception as e:  # noqa: BLE001 - pyarrow raises several types; one clear message
        raise InputError(
            f"{path} (from {row_path}): unreadable or missing columns {COLUMNS}: {e}"
        ) from e
    if df.empty:
        raise InputError(f"{path}: no images")
    df = df.set_index(["split", "index"])
    if not df.index.is_unique:
        dup = df.index[df.index.duplicated()][0]
        raise InputError(f"{path}: image {dup} appears more than once")
    return df


def load_row_scores(row_path: str | Path) -> list[Any]:
    """Per-image score tables of every replicate of a row (see :func:`load_scores`)."""
    return [load_scores(p, Path(row_path)) for p in row_score_paths(row_path)]


def _align(df_a: Any, df_b: Any, path_a: Path, path_b: Path) -> tuple[Any, Any]:
    only_a = df_a.index.difference(df_b.index)
    only_b = df_b.index.difference(df_a.index)
    if len(only_a) or len(only_b):
        ex = (list(only_a[:1]) + list(only_b[:1]))[0]
        raise InputError(
            f"{path_a} and {path_b} score different image sets: {len(only_a)} images only in "
            f"the first, {len(only_b)} only in the second (e.g. split/index {ex})"
        )
    df_b = df_b.loc[df_a.index]
    bad = df_a["label"].to_numpy() != df_b["label"].to_numpy()
    if bad.any():
        raise InputError(
            f"{path_a} and {path_b} disagree on the label of {int(bad.sum())} images "
            f"(e.g. split/index {df_a.index[np.argmax(bad)]})"
        )
    return df_a, df_b


def compare_rows(
    path_a: str | Path,
    path_b: str | Path,
    n_boot: int = 1000,
    seed: int = 0,
    *,
    metrics: Sequence[str] = DEFAULT_METRICS,
    alpha: float = 0.05,
) -> dict[str, Any]:
    """Two-level paired bootstrap of row A minus row B (replicate means).

    Returns ``{"row_a", "row_b", "n_id", "n_ood", "n_replicates_a", "n_replicates_b",
    "n_pairs", "bootstrap" ("two_level" or "images" for one pair), "n_boot", "seed", "alpha",
    "metrics": {name: {"a", "b", "delta", "ci": [lo, hi], "p_value", "significant"}}}``,
    fractions in [0, 1]; ``a``/``b`` are means over the paired replicates; ``significant`` is
    ``p_value < alpha``.
    """
    path_a, path_b = Path(path_a), Path(path_b)
    unknown = [m for m in metrics if m not in ALL_METRICS]
    if unknown:
        raise InputError(f"unknown metric(s) {unknown}; known: {list(ALL_METRICS)}")
    reps_a, reps_b = load_row_scores(path_a), load_row_scores(path_b)
    n_pairs = min(len(reps_a), len(reps_b))
    if len(reps_a) != len(reps_b):
        print(
            f"warning: {path_a} has {len(reps_a)} replicates, {path_b} {len(reps_b)}: "
            f"comparing the first {n_pairs}"
        )
    pairs, correct = [], []
    need_correct = any(m in ("oscr", "id_accuracy") for m in metrics)
    for df_a, df_b in zip(reps_a[:n_pairs], reps_b[:n_pairs], strict=True):
        df_a, df_b = _align(df_a, df_b, path_a, path_b)
        is_id = df_a["label"].to_numpy() != -1
        n_id, n_ood = int(is_id.sum()), int((~is_id).sum())
        if n_id == 0 or n_ood == 0:
            raise InputError(f"{path_a}: needs both ID and OOD images (has {n_id} ID, {n_ood} OOD)")
        sa, sb = df_a["id_score"].to_numpy(float), df_b["id_score"].to_numpy(float)
        for path, s in ((path_a, sa), (path_b, sb)):
            if not np.all(np.isfinite(s)):
                raise InputError(
                    f"{path}: {int((~np.isfinite(s)).sum())} non-finite id_score values"
                )
        pairs.append((sa[is_id], sa[~is_id], sb[is_id], sb[~is_id]))
        labels = df_a["label"].to_numpy()[is_id]
        correct.append(
            (df_a["pred"].to_numpy()[is_id] == labels, df_b["pred"].to_numpy()[is_id] == labels)
        )
    res = two_level_paired_bootstrap(
        pairs,
        metrics=tuple(metrics),
        n_boot=n_boot,
        seed=seed,
        alpha=alpha,
        id_correct=correct if need_correct else None,
    )
    for r in res.values():
        r["ci"] = list(r["ci"])
        r["significant"] = bool(r["p_value"] < alpha)
    return {
        "row_a": str(path_a),
        "row_b": str(path_b),
        "n_id": len(pairs[0][0]),
        "n_ood": len(pairs[0][1]),
        "n_replicates_a": len(reps_a),
        "n_replicates_b": len(reps_b),
        "n_pairs": n_pairs,
        "bootstrap": "two_level" if n_pairs > 1 else "images",
        "n_boot": n_boot,
        "seed": seed,
        "alpha": alpha,
        "metrics": res,
    }


def format_summary(result: dict[str, Any]) -> str:
    """Readable table: A, B, delta and its CI in percentage points, p-value."""
    level = round(100 * (1 - result["alpha"]))
    lines = [
        f"A: {result['row_a']}",
        f"B: {result['row_b']}",
        f"{result['n_id']} ID + {result['n_ood']} OOD images, {result['n_pairs']} replicate "
        f"pair(s), {_BOOT[result['bootstrap']]} n_boot={result['n_boot']} seed={result['seed']}; "
        "values in % (means over replicates), delta = A - B in pp",
        f"{'metric':<18}{'A':>8}{'B':>8}{'delta':>9}   {f'{level}% CI':<18}{'p':>8}",
    ]
    for name, r in result["metrics"].items():
        lo, hi = r["ci"]
        note = " (lower is better)" if name in _LOWER_IS_BETTER else ""
        star = "*" if r["significant"] else " "
        lines.append(
            f"{_LABELS.get(name, name):<18}{100 * r['a']:>8.2f}{100 * r['b']:>8.2f}"
            f"{100 * r['delta']:>+9.2f}   [{100 * lo:+.2f}, {100 * hi:+.2f}]".ljust(63)
            + f"{r['p_value']:>8.4f}{star}{note}"
        )
    lines.append(f"* p < {result['alpha']}")
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("row_a", type=Path, help="row JSON of system A")
    parser.add_argument("row_b", type=Path, help="row JSON of system B (same images)")
    parser.add_argument("--n-boot", type=int, default=1000, help="bootstrap resamples")
    parser.add_argument("--seed", type=int, default=0, help="seed of the resampling")
    parser.add_argument("--alpha", type=float, default=0.05, help="1 - confidence level")
    parser.add_argument(
        "--metrics",
        nargs="+",
        default=list(DEFAULT_METRICS),
        choices=list(ALL_METRICS),
        help="metrics to compare (default: %(default)s)",
    )
    parser.add_argument("--out", type=Path, default=None, help="write the comparison as JSON")


def run(args: argparse.Namespace) -> int:
    if args.n_boot < 1:
        raise InputError(f"--n-boot must be >= 1, got {args.n_boot}")
    if not 0 < args.alpha < 1:
        raise InputError(f"--alpha must be in (0, 1), got {args.alpha}")
    result = compare_rows(
        args.row_a,
        args.row_b,
        n_boot=args.n_boot,
        seed=args.seed,
        metrics=args.metrics,
        alpha=args.alpha,
    )
    print(format_summary(result))
    if args.out is not None:
        write_json(args.out, result)
    return 0
