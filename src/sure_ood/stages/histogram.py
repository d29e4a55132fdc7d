"""Stage ``histogram``: the ID vs OOD score distributions of every row of a table (PNG).

One job per table: one figure per row (``--out-dir``/<row>.png) and one grid figure with every
row (``--grid``), so a run starts one process per table, not per row. Each panel:

- densities of ID and of each OOD split on shared bins;
- a robust x-range: the 0.5-99.5 percentiles of all finite scores; scores beyond it are
  folded into the edge bins and counted in the legend ("n folded"), so a long tail (e.g.
  Mahalanobis' far-away images) cannot squash the bulk into one bin;
- the threshold at 95 % ID TPR (the k-th largest ID score, as :func:`sure_ood.metrics.
  fpr_at_95_tpr`) as a vertical line labelled with the FPR there;
- plain tick labels (no offset or scientific multiplier: ODIN's scores live near 1/C);
- the method and the row in the title, with AUROC and FPR@95.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np

from sure_ood.args import check_suffix
from sure_ood.io import InputError, atomic_path, read_json

TPR = 0.95
TAIL = (0.5, 99.5)  # percentiles of the plotted range


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--scores",
        required=True,
        nargs="+",
        type=Path,
        help="each row's fused score parquet (first replicate), in the order of --row-json",
    )
    p.add_argument(
        "--row-json", required=True, nargs="+", type=Path, help="each row's metrics JSON"
    )
    p.add_argument("--out-dir", type=Path, help="write <row>.png here for every row")
    p.add_argument("--out", nargs="+", type=Path, help="or: one .png per row, in order")
    p.add_argument("--grid", type=Path, help="one .png with every row (the table's grid)")
    p.add_argument("--bins", type=int, default=60)


def threshold_at_tpr(id_scores: np.ndarray, tpr: float = TPR) -> float:
    """The k-th largest ID score, k the smallest with k / N >= tpr (as fpr_at_95_tpr)."""
    from sure_ood.metrics import _k_for

    s = np.sort(id_scores[np.isfinite(id_scores)])
    return float(s[s.size - _k_for(tpr, s.size)])


def robust_edges(s: np.ndarray, bins: int) -> np.ndarray:
    """Bin edges over the 0.5-99.5 percentiles of the finite scores (all of them if flat)."""
    lo, hi = np.percentile(s, TAIL)
    if not hi > lo:
        lo, hi = float(s.min()), float(s.max())
    if not hi > lo:  # every score equal
        lo, hi = lo - 0.5, hi + 0.5
    return np.linspace(lo, hi, bins + 1)


def panel(ax, df, title: str, bins: int = 60) -> dict:
    """Draw one row's histogram on ``ax``; returns what was drawn (for tests and captions)."""
    from matplotlib.ticker import ScalarFormatter

    s = df["id_score"].to_numpy(float)
    finite = np.isfinite(s)
    if not finite.any():
        raise InputError(f"{title}: no finite scores to plot")
    is_id = df["label"].to_numpy() >= 0
    edges = robust_edges(s[finite], bins)
    lo, hi = edges[0], edges[-1]
    folded = {}

    def draw(sel: np.ndarray, name: str, alpha: float) -> None:
        x = s[sel & finite]
        n_out = int(((x < lo) | (x > hi)).sum())
        folded[name] = n_out
        label = f"{name} ({x.size}{f', {n_out} folded' if n_out else ''})"
        ax.hist(np.clip(x, lo, hi), bins=edges, alpha=alpha, density=True, label=label)

    draw(is_id, "ID", 0.6)
    for split in sorted(df.loc[~is_id, "split"].unique()):
        draw(~is_id & (df["split"] == split).to_numpy(), f"OOD {split}", 0.5)

    id_s, ood_s = s[is_id & finite], s[~is_id & finite]
    thr = fpr = None
    if id_s.size and ood_s.size:
        thr = threshold_at_tpr(id_s)
        fpr = float(np.count_nonzero(ood_s >= thr) / ood_s.size)
        ax.axvline(
            min(max(thr, lo), hi),
            color="k",
            linestyle="--",
            linewidth=1,
            label=f"95 % ID TPR: FPR {100 * fpr:.1f} %",
        )
    ax.set_xlim(lo, hi)
    fmt = ScalarFormatter(useOffset=False)
    fmt.set_scientific(False)
    ax.xaxis.set_major_formatter(fmt)
    ax.set_xlabel("id_score (higher = more in-distribution)")
    ax.set_ylabel("density")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    return {"edges": edges, "folded": folded, "threshold": thr, "fpr": fpr}


def title_of(row: dict) -> str:
    """``method — table / row`` with AUROC and FPR@95 (and the seed spread, if any)."""
    method = (row.get("row_config") or {}).get("method", "?")
    title = (
        f"{method} — {row['table']} / {row['row']}\nAUROC {100 * row['auroc']:.2f}, "
        f"FPR@95 {100 * row['fpr_at_95_tpr']:.2f}"
    )
    if "auroc_seed_mean" in row:  # the plot is the first replicate's; say so
        title += (
            f"\n(replicate {row['replicates'][0]}; over {len(row['replicates'])} replicates "
            f"AUROC {100 * row['auroc_seed_mean']:.2f} ± {100 * row['auroc_seed_std']:.2f})"
        )
    return title


def _save(fig, out: Path) -> None:
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png")


def plot(df, title: str, out: Path, bins: int = 60) -> dict:
    """One row's figure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.8), dpi=110)
    drawn = panel(ax, df, title, bins)
    fig.tight_layout()
    _save(fig, out)
    plt.close(fig)
    return drawn


def plot_grid(items: list[tuple[object, str]], title: str, out: Path, bins: int = 60) -> None:
    """Every row of a table in one figure, three panels per line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = min(3, len(items))
    rows = math.ceil(len(items) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5.2 * cols, 3.6 * rows), dpi=90, squeeze=False)
    for ax, (df, t) in zip(axes.flat, items, strict=False):
        panel(ax, df, t, bins)
    for ax in list(axes.flat)[len(items) :]:
        ax.set_axis_off()
    fig.suptitle(title)
    fig.tight_layout()
    _save(fig, out)
    plt.close(fig)


def run(args: argparse.Namespace) -> int:
    import pandas as pd

    if len(args.scores) != len(args.row_json):
        raise InputError(
            f"--scores names {len(args.scores)} files but --row-json {len(args.row_json)}"
        )
    if args.out is None and args.out_dir is None and args.grid is None:
        raise InputError("give --out-dir, --out or --grid")
    if args.out is not None and len(args.out) != len(args.row_json):
        raise InputError(f"--out names {len(args.out)} files but --row-json {len(args.row_json)}")
    for path in args.out or []:
        check_suffix(path, "--out", ".png", what="PNG figures")
    if args.grid is not None:
        check_suffix(args.grid, "--grid", ".png", what="PNG figures")
    rows = []
    for path in args.row_json:
        row = read_json(path)
        missing = [k for k in ("table", "row", "auroc", "fpr_at_95_tpr") if k not in row]
        if not isinstance(row, dict) or missing:
            raise InputError(f"{path}: not a row JSON (missing {missing or 'everything'})")
        rows.append(row)
    items = [(pd.read_parquet(p), title_of(r)) for p, r in zip(args.scores, rows, strict=True)]
    outs = args.out or (
        [args.out_dir / f"{r['row']}.png" for r in rows] if args.out_dir is not None else []
    )
    if args.out_dir is not None:
        args.out_dir.mkdir(parents=True, exist_ok=True)
    for (df, title), out in zip(items, outs, strict=False):
        plot(df, title, out, args.bins)
        print(out)
    if args.grid is not None:
        plot_grid(items, f"{rows[0]['table']}: every row", args.grid, args.bins)
        print(args.grid)
    return 0
