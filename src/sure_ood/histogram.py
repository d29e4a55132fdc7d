"""Stage ``histogram``: the ID vs OOD score distributions of one row (matplotlib PNG)."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from sure_ood.io import InputError, atomic_path, read_json


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--scores", required=True, type=Path, help="fused score parquet (first replicate)"
    )
    p.add_argument("--row-json", required=True, type=Path, help="the row's metrics (for the title)")
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--bins", type=int, default=60)


def plot(df, title: str, out: Path, bins: int = 60) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s = df["id_score"].to_numpy(float)
    finite = np.isfinite(s)
    if not finite.any():
        raise InputError(f"{out}: no finite scores to plot")
    is_id = df["label"].to_numpy() >= 0
    edges = np.histogram_bin_edges(s[finite], bins=bins)
    fig, ax = plt.subplots(figsize=(6, 3.6), dpi=110)
    ax.hist(s[finite & is_id], bins=edges, alpha=0.6, density=True, label=f"ID ({is_id.sum()})")
    for split in sorted(df.loc[~is_id, "split"].unique()):
        sel = finite & ~is_id & (df["split"] == split).to_numpy()
        ax.hist(s[sel], bins=edges, alpha=0.5, density=True, label=f"OOD {split} ({sel.sum()})")
    ax.set_xlabel("id_score (higher = more in-distribution)")
    ax.set_ylabel("density")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


def run(args: argparse.Namespace) -> int:
    import pandas as pd

    row = read_json(args.row_json)
    df = pd.read_parquet(args.scores)
    title = (
        f"{row['table']} / {row['row']}: AUROC {100 * row['auroc']:.2f}, "
        f"FPR@95 {100 * row['fpr_at_95_tpr']:.2f}"
    )
    if "auroc_seed_mean" in row:  # the plot is the first replicate's; say so
        title += (
            f"\n(replicate {row['replicates'][0]}; over {len(row['replicates'])} replicates AUROC "
            f"{100 * row['auroc_seed_mean']:.2f} ± {100 * row['auroc_seed_std']:.2f})"
        )
    plot(df, title, args.out, args.bins)
    print(args.out)
    return 0
