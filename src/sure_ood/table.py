"""Stage ``table``: collect a table's rows into CSV (fractions) and Markdown (percent, two
decimals, as the paper prints them), with the bootstrap intervals and, where the config gives
them, the published numbers beside ours."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from sure_ood.io import atomic_path, read_json, write_text

COLUMNS = [  # (row JSON key, column title)
    ("auroc", "AUROC"),
    ("fpr_at_95_tpr", "FPR@95"),
    ("fpr95_ood_pos", "FPR@95 (OpenOOD)"),
    ("aupr_in", "AUPR-In"),
    ("aupr_out", "AUPR-Out"),
    ("id_accuracy", "ACC"),
    ("oscr", "OSCR"),
]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--rows", nargs="+", required=True, type=Path, help="row JSON files, in order")
    p.add_argument("--table", required=True, help="the table's config (JSON)")
    p.add_argument("--out-csv", required=True, type=Path)
    p.add_argument("--out-md", required=True, type=Path)


def collect(rows: list[dict], table_cfg: dict):
    """A pandas DataFrame with one line per row (metrics as fractions)."""
    import pandas as pd

    lines = []
    published = table_cfg.get("published", {})
    for r in rows:
        cfg = r["provenance"]["row_config"]
        line = {
            "row": r["row"],
            "method": cfg.get("method"),
            "n_id": r["n_id"],
            "n_ood": r["n_ood"],
        }
        for key, _ in COLUMNS:
            line[key] = r.get(key, np.nan)
            if f"{key}_ci" in r:
                line[f"{key}_lo"], line[f"{key}_hi"] = r[f"{key}_ci"]
        for key in ("auroc_seed_std", "fpr_at_95_tpr_seed_std", "auroc_p_vs_ref"):
            if key in r:
                line[key] = r[key]
        pub = published.get(r["row"], {})
        for key in ("auroc", "fpr_at_95_tpr"):
            if key in pub:
                line[f"published_{key}"] = pub[key] / 100.0
        lines.append(line)
    return pd.DataFrame(lines)


def to_markdown(df, title: str) -> str:
    """Percent with two decimals; a bootstrap interval as [lo, hi] under each number."""

    def pct(v):
        return "" if v is None or (isinstance(v, float) and np.isnan(v)) else f"{100 * v:.2f}"

    cols = [(k, t) for k, t in COLUMNS if k in df and df[k].notna().any()]
    head = ["row", "method"] + [t for _, t in cols]
    has_pub = [k for k in ("auroc", "fpr_at_95_tpr") if f"published_{k}" in df]
    head += [f"published {dict(COLUMNS)[k]}" for k in has_pub]
    lines = [f"### {title}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for _, r in df.iterrows():
        cells = [str(r["row"]), str(r["method"])]
        for k, _ in cols:
            cell = pct(r[k])
            if f"{k}_lo" in r and not np.isnan(r[f"{k}_lo"]):
                cell += f" [{pct(r[f'{k}_lo'])}, {pct(r[f'{k}_hi'])}]"
            if f"{k}_seed_std" in r and not np.isnan(r.get(f"{k}_seed_std", np.nan)):
                cell += f" ±{pct(r[f'{k}_seed_std'])}"
            cells.append(cell)
        cells += [pct(r[f"published_{k}"]) for k in has_pub]
        lines.append("| " + " | ".join(cells) + " |")
    n_id, n_ood = int(df["n_id"].iloc[0]), int(df["n_ood"].iloc[0])
    lines += [
        "",
        f"Percent. [lo, hi]: bootstrap 95 % interval. {n_id} ID / {n_ood} OOD images. "
        "FPR@95: OOD accepted at 95 % ID TPR (SSB); OpenOOD: ID rejected at 95 % OOD TPR.",
        "",
    ]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    table_cfg = json.loads(args.table)
    rows = [read_json(p) for p in args.rows]
    df = collect(rows, table_cfg)
    with atomic_path(args.out_csv) as tmp:
        df.to_csv(tmp, index=False, float_format="%.6f")
    md = to_markdown(df, table_cfg.get("title", args.out_md.stem))
    write_text(args.out_md, md)
    print(md)
    return 0
