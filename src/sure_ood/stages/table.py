"""Stage ``table``: collect a table's rows into CSV (fractions), Markdown and HTML (percent, two
decimals, as the paper prints them).

Each metric cell shows the row's mean over its training replicates with its 95 % interval
``[lo, hi]`` (two-level bootstrap: replicates, then test images; the image bootstrap for a row
with one replicate, which the footnote names; see :mod:`sure_ood.stages.evaluate`). Where rows have
several replicates, ``mean ± std`` columns give the spread over training seeds. Where the table
names a ``reference_row``, every other row is compared with it by the two-level paired bootstrap
(:func:`sure_ood.stages.compare.compare_rows`: replicates paired by seed index, images by
image): the
CSV gets ``<m>_delta`` (row − reference), ``<m>_delta_lo/_hi`` and ``<m>_p_vs_ref`` for AUROC and
FPR@95, and the Markdown/HTML mark with ``†`` a difference that is *not* significant at
``alpha`` (default 0.05). Where the config gives ``published`` numbers (percent), they are
printed beside ours.
"""

from __future__ import annotations

import argparse
import html
import json
from pathlib import Path

import numpy as np

from sure_ood.io import InputError, atomic_path, read_json, write_text

COLUMNS = [  # (row JSON key, column title)
    ("auroc", "AUROC"),
    ("fpr_at_95_tpr", "FPR@95"),
    ("fpr95_ood_pos", "FPR@95 (OpenOOD)"),
    ("aupr_in", "AUPR-In"),
    ("aupr_out", "AUPR-Out"),
    ("id_accuracy", "ACC"),
    ("oscr", "OSCR"),
]
TITLES = dict(COLUMNS)
SEED_COLUMNS = ("auroc", "fpr_at_95_tpr")  # mean ± std over replicates, when there are any
REF_METRICS = ("auroc", "fpr_at_95_tpr")  # paired comparison with the reference row
PUBLISHED = ("auroc", "fpr_at_95_tpr", "id_accuracy")
NOT_SIGNIFICANT = "†"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--rows", nargs="+", required=True, type=Path, help="row JSON files, in order")
    p.add_argument("--table", required=True, help="the table's config (JSON)")
    p.add_argument("--n-boot", type=int, required=True, help="paired bootstrap resamples (ref.)")
    p.add_argument("--seed", type=int, default=0, help="seed of the paired bootstrap")
    p.add_argument("--alpha", type=float, default=0.05, help="significance level (ref.)")
    p.add_argument("--out-csv", required=True, type=Path)
    p.add_argument("--out-md", required=True, type=Path)
    p.add_argument("--out-html", type=Path, default=None)


def compare_with_reference(
    row_paths: list[Path],
    rows: list[dict],
    reference_row: str,
    n_boot: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
) -> dict[str, dict]:
    """``{row id: compare_rows(row, reference)}`` for every row but the reference.

    A row whose comparison cannot be made (e.g. non-finite scores) is left out with a warning
    on stdout; its cells stay empty.
    """
    from sure_ood.stages.compare import compare_rows

    ids = [r["row"] for r in rows]
    if reference_row not in ids:
        raise InputError(f"reference_row {reference_row!r} is not among the rows {ids}")
    ref_path = row_paths[ids.index(reference_row)]
    out = {}
    for path, r in zip(row_paths, rows, strict=True):
        if r["row"] == reference_row:
            continue
        try:
            out[r["row"]] = compare_rows(
                path, ref_path, n_boot=n_boot, seed=seed, metrics=REF_METRICS, alpha=alpha
            )
        except InputError as e:
            print(f"warning: {r['row']} vs {reference_row}: no paired comparison ({e})")
    return out


def collect(rows: list[dict], table_cfg: dict, comparisons: dict[str, dict] | None = None):
    """A pandas DataFrame with one line per row (metrics as fractions)."""
    import pandas as pd

    lines = []
    published = table_cfg.get("published", {})
    ref = table_cfg.get("reference_row")
    comparisons = comparisons or {}
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
        line["n_replicates"] = r.get("n_replicates", len(r.get("replicates", [0])))
        line["ci_method"] = r.get("ci_method")
        for key, _ in COLUMNS:
            for stat in ("mean", "std"):
                if f"{key}_seed_{stat}" in r:
                    line[f"{key}_seed_{stat}"] = r[f"{key}_seed_{stat}"]
        if ref is not None:
            line["reference_row"] = ref
            cmp = comparisons.get(r["row"], {}).get("metrics", {})
            for key in REF_METRICS:
                if r["row"] == ref:
                    line[f"{key}_delta"] = 0.0
                    line[f"{key}_delta_lo"] = line[f"{key}_delta_hi"] = 0.0
                    line[f"{key}_p_vs_ref"] = np.nan
                elif key in cmp:
                    line[f"{key}_delta"] = cmp[key]["delta"]
                    line[f"{key}_delta_lo"], line[f"{key}_delta_hi"] = cmp[key]["ci"]
                    line[f"{key}_p_vs_ref"] = cmp[key]["p_value"]
                else:
                    line[f"{key}_delta"] = line[f"{key}_p_vs_ref"] = np.nan
                    line[f"{key}_delta_lo"] = line[f"{key}_delta_hi"] = np.nan
        pub = published.get(r["row"], {})
        for key in PUBLISHED:
            if key in pub:
                line[f"published_{key}"] = pub[key] / 100.0
        lines.append(line)
    return pd.DataFrame(lines)


def _missing(v) -> bool:
    return v is None or (isinstance(v, (float, np.floating)) and np.isnan(v))


def _pct(v) -> str:
    return "" if _missing(v) else f"{100 * v:.2f}"


def _get(r, key):
    return r[key] if key in r else np.nan


def render_cells(df, alpha: float = 0.05) -> tuple[list[str], list[list[str]], list[str]]:
    """Header, body (strings, percent) and footnotes shared by the Markdown and HTML tables."""
    cols = [(k, t) for k, t in COLUMNS if k in df and df[k].notna().any()]
    seed_cols = [
        k for k in SEED_COLUMNS if f"{k}_seed_mean" in df and df[f"{k}_seed_mean"].notna().any()
    ]
    ref_rows = df["reference_row"].dropna() if "reference_row" in df else []
    ref = str(ref_rows.iloc[0]) if len(ref_rows) else None
    pub_cols = [
        k for k in PUBLISHED if f"published_{k}" in df and df[f"published_{k}"].notna().any()
    ]

    head = ["row", "method"] + [t for _, t in cols]
    head += [f"{TITLES[k]} mean ± std (seeds)" for k in seed_cols]
    if ref is not None:
        head += [f"Δ {TITLES[k]} vs {ref} (pp)" for k in REF_METRICS]
    head += [f"published {TITLES[k]}" for k in pub_cols]

    def not_significant(r, k) -> bool:
        p = _get(r, f"{k}_p_vs_ref")
        return ref is not None and r["row"] != ref and not _missing(p) and p >= alpha

    body = []
    for _, r in df.iterrows():
        cells = [str(r["row"]), "" if _missing(r["method"]) else str(r["method"])]
        for k, _ in cols:
            cell = _pct(r[k])
            if not _missing(_get(r, f"{k}_lo")):
                cell += f" [{_pct(r[f'{k}_lo'])}, {_pct(r[f'{k}_hi'])}]"
            if k in REF_METRICS and not_significant(r, k):
                cell += f" {NOT_SIGNIFICANT}"
            cells.append(cell)
        for k in seed_cols:
            mean, std = _get(r, f"{k}_seed_mean"), _get(r, f"{k}_seed_std")
            n = int(_get(r, "n_replicates")) if not _missing(_get(r, "n_replicates")) else 1
            cells.append("" if _missing(mean) else f"{_pct(mean)} ± {_pct(std)} (n={n})")
        if ref is not None:
            for k in REF_METRICS:
                d = _get(r, f"{k}_delta")
                if r["row"] == ref:
                    cells.append("reference")
                elif _missing(d):
                    cells.append("")
                else:
                    mark = f" {NOT_SIGNIFICANT}" if not_significant(r, k) else ""
                    cells.append(f"{100 * d:+.2f} (p={r[f'{k}_p_vs_ref']:.3f}){mark}")
        cells += [_pct(_get(r, f"published_{k}")) for k in pub_cols]
        body.append(cells)

    n_id, n_ood = int(df["n_id"].iloc[0]), int(df["n_ood"].iloc[0])
    n_rep = df["n_replicates"] if "n_replicates" in df else None
    several = n_rep is not None and (n_rep > 1).any()
    what = (
        "mean over the row's training replicates; [lo, hi]: its 95 % interval, two-level "
        "stratified bootstrap (replicates, then test images)"
        if several
        else "[lo, hi]: stratified bootstrap 95 % interval over the test images"
    )
    notes = [
        f"Percent; {what}. {n_id} ID / {n_ood} OOD images. FPR@95: OOD accepted at 95 % ID TPR "
        "(SSB); OpenOOD: ID rejected at 95 % OOD TPR."
    ]
    if several and (n_rep <= 1).any():
        single = ", ".join(str(x) for x in df.loc[n_rep <= 1, "row"])
        notes.append(
            f"One replicate (interval from the test images only, no training noise): {single}."
        )
    if seed_cols:
        notes.append(
            "mean ± std (seeds): over the row's replicates (training seeds), sample std; n = "
            "number of replicates."
        )
    if ref is not None:
        notes.append(
            f"Δ: row − {ref} in percentage points, two-level paired bootstrap (replicates paired "
            "by seed index, images by image); "
            f"{NOT_SIGNIFICANT} = difference from {ref} not significant (p ≥ {alpha:g})."
        )
    if pub_cols:
        notes.append("published: the paper's numbers (percent), for comparison.")
    return head, body, notes


def to_markdown(df, title: str, alpha: float = 0.05) -> str:
    """Percent with two decimals; a bootstrap interval as [lo, hi] after each number."""
    head, body, notes = render_cells(df, alpha)
    lines = [f"### {title}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(cells) + " |" for cells in body]
    lines += [""] + [n + "  " for n in notes[:-1]] + notes[-1:] + [""]
    return "\n".join(lines)


def to_html(df, title: str, alpha: float = 0.05) -> str:
    """A standalone HTML page of the same table (for the Snakemake report)."""
    return html_page(title, *render_cells(df, alpha))


def html_page(title: str, head: list[str], body: list[list[str]], notes: list[str]) -> str:
    """A standalone HTML page of one table: header, rows of cells, footnotes."""
    esc = html.escape
    rows_html = "\n".join(
        "<tr>" + "".join(f"<td>{esc(c)}</td>" for c in cells) + "</tr>" for cells in body
    )
    return f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>{esc(title)}</title>
<style>
body {{ font-family: sans-serif; font-size: 13px; margin: 1em; }}
table {{ border-collapse: collapse; }}
th, td {{ border: 1px solid #ccc; padding: 3px 8px; text-align: right; white-space: nowrap; }}
th {{ background: #f0f0f0; }}
td:first-child, td:nth-child(2) {{ text-align: left; }}
p.note {{ color: #444; max-width: 60em; }}
</style></head>
<body>
<h3>{esc(title)}</h3>
<table>
<thead><tr>{"".join(f"<th>{esc(h)}</th>" for h in head)}</tr></thead>
<tbody>
{rows_html}
</tbody>
</table>
{"".join(f'<p class="note">{esc(n)}</p>' for n in notes)}
</body></html>
"""


def run(args: argparse.Namespace) -> int:
    table_cfg = json.loads(args.table)
    rows = [read_json(p) for p in args.rows]
    comparisons = None
    ref = table_cfg.get("reference_row")
    if ref is not None and args.n_boot > 0:
        comparisons = compare_with_reference(
            args.rows, rows, ref, n_boot=args.n_boot, seed=args.seed, alpha=args.alpha
        )
    df = collect(rows, table_cfg, comparisons)
    with atomic_path(args.out_csv) as tmp:
        df.to_csv(tmp, index=False, float_format="%.6f")
    title = table_cfg.get("title", args.out_md.stem)
    md = to_markdown(df, title, args.alpha)
    write_text(args.out_md, md)
    if args.out_html is not None:
        write_text(args.out_html, to_html(df, title, args.alpha))
    print(md)
    return 0
