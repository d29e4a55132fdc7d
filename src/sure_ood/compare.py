"""``sure-ood compare``: paired bootstrap comparison of two table rows on the same images.

Each row JSON (written by ``sure-ood evaluate``) names its per-image scores in ``scores_file``:
a parquet with columns ``split`` (str), ``index`` (int), ``label`` (int, -1 = OOD),
``id_score`` (float, higher = ID) and ``pred`` (int). The two rows are aligned on
``(split, index)``; both must score exactly the same images. ID vs OOD is pooled over all
splits (the challenge's Easy U Hard setting).

    sure-ood compare ROW_A.json ROW_B.json [--n-boot 1000] [--seed 0] [--out diff.json]
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from sure_ood.io import InputError, read_json, write_json
from sure_ood.metrics import ALL_METRICS, paired_bootstrap

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


def _scores_path(row_path: Path, row: dict) -> Path:
    """``scores_file`` as written (relative to the working directory), else beside the row."""
    if not isinstance(row, dict) or "scores_file" not in row:
        raise InputError(f"{row_path}: no 'scores_file' key (is this a row JSON?)")
    p = Path(row["scores_file"])
    if p.is_absolute() or p.exists():
        return p
    beside = row_path.parent / p
    return beside if beside.exists() else p


def load_row_scores(row_path: str | Path) -> Any:
    """The per-image score table of a row, as a pandas DataFrame indexed by (split, index)."""
    import pandas as pd

    row_path = Path(row_path)
    path = _scores_path(row_path, read_json(row_path))
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
    """Paired bootstrap of row A minus row B (see :func:`sure_ood.metrics.paired_bootstrap`).

    Returns ``{"row_a", "row_b", "n_id", "n_ood", "n_boot", "seed", "alpha", "metrics":
    {name: {"a", "b", "delta", "ci": [lo, hi], "p_value", "significant"}}}``, fractions in
    [0, 1]; ``significant`` is ``p_value < alpha``.
    """
    path_a, path_b = Path(path_a), Path(path_b)
    unknown = [m for m in metrics if m not in ALL_METRICS]
    if unknown:
        raise InputError(f"unknown metric(s) {unknown}; known: {list(ALL_METRICS)}")
    df_a, df_b = _align(load_row_scores(path_a), load_row_scores(path_b), path_a, path_b)
    is_id = df_a["label"].to_numpy() != -1
    n_id, n_ood = int(is_id.sum()), int((~is_id).sum())
    if n_id == 0 or n_ood == 0:
        raise InputError(f"{path_a}: needs both ID and OOD images (has {n_id} ID, {n_ood} OOD)")
    sa, sb = df_a["id_score"].to_numpy(float), df_b["id_score"].to_numpy(float)
    for path, s in ((path_a, sa), (path_b, sb)):
        if not np.all(np.isfinite(s)):
            raise InputError(f"{path}: {int((~np.isfinite(s)).sum())} non-finite id_score values")
    labels = df_a["label"].to_numpy()[is_id]
    kwargs: dict[str, Any] = {}
    if any(m in ("oscr", "id_accuracy") for m in metrics):
        kwargs = {
            "id_correct_a": df_a["pred"].to_numpy()[is_id] == labels,
            "id_correct_b": df_b["pred"].to_numpy()[is_id] == labels,
        }
    res = paired_bootstrap(
        sa[is_id],
        sa[~is_id],
        sb[is_id],
        sb[~is_id],
        metrics=tuple(metrics),
        n_boot=n_boot,
        seed=seed,
        alpha=alpha,
        **kwargs,
    )
    for r in res.values():
        r["ci"] = list(r["ci"])
        r["significant"] = bool(r["p_value"] < alpha)
    return {
        "row_a": str(path_a),
        "row_b": str(path_b),
        "n_id": n_id,
        "n_ood": n_ood,
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
        f"{result['n_id']} ID + {result['n_ood']} OOD images, paired bootstrap "
        f"n_boot={result['n_boot']} seed={result['seed']}; values in %, delta = A - B in pp",
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
