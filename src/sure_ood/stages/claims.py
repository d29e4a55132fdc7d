"""Stage ``claims``: one line per published claim of SURE-OOD, with a verdict.

A claim (config section ``claims``) names rows of one table and the expected direction:

- ``kind: pair``: row ``a`` is better (``expect: better``) or worse than row ``b``;
- ``kind: best_of``: row ``a`` is better (or worse) than every row of ``among`` (default: every
  other row of the table).

"Better" reads the claim's ``metric``: higher AUROC, lower FPR@95. Each comparison is the
two-level paired bootstrap of :func:`sure_ood.stages.compare.compare_rows` (replicates paired
by seed index, images by image; the difference of the replicate means). Verdict on the claim's
metric:

- *inconclusive*: the 95 % interval of the difference contains 0;
- *reproduced*: the interval lies on the claimed side of 0;
- *contradicted*: it lies on the other side.

A best_of claim is reproduced when every comparison is, contradicted when any is, and
inconclusive otherwise; its line shows the comparison with the strongest other row among those
that decide the verdict (the smallest effect in the claimed direction). Where the config gives
``published`` numbers for both rows, the published difference is printed beside ours (best_of:
against the strongest row with a published number). Effects are in percentage points in the
Markdown/HTML and in fractions in the CSV, like the tables.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from sure_ood.io import InputError, atomic_path, read_json, write_text

METRICS = ("auroc", "fpr_at_95_tpr")
TITLES = {"auroc": "AUROC", "fpr_at_95_tpr": "FPR@95"}
LOWER_IS_BETTER = {"fpr_at_95_tpr"}
VERDICTS = ("reproduced", "contradicted", "inconclusive")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--rows", nargs="+", required=True, type=Path, help="row JSONs the claims use")
    p.add_argument(
        "--claims",
        required=True,
        help="the claims (JSON): {id: claim} or a list of claims with `id`, each with its `rows`",
    )
    p.add_argument(
        "--published", required=True, help="published numbers per table (JSON; {} for none)"
    )
    p.add_argument("--n-boot", type=int, required=True, help="bootstrap resamples")
    p.add_argument("--seed", type=int, default=0, help="seed of the bootstrap")
    p.add_argument("--alpha", type=float, default=0.05, help="1 - interval level")
    p.add_argument("--out-csv", required=True, type=Path)
    p.add_argument("--out-md", required=True, type=Path)
    p.add_argument("--out-html", type=Path, default=None)


def claimed_sign(metric: str, expect: str) -> int:
    """+1 when the claim says the difference a - b is positive, -1 when negative."""
    if expect not in ("better", "worse"):
        raise InputError(f"expect: unknown direction {expect!r} (better or worse)")
    sign = -1 if metric in LOWER_IS_BETTER else 1
    return sign if expect == "better" else -sign


def verdict(lo: float, hi: float, sign: int) -> str:
    """reproduced / contradicted / inconclusive from the interval of a - b and the claimed sign."""
    if lo <= 0.0 <= hi:
        return "inconclusive"
    return "reproduced" if (lo > 0) == (sign > 0) else "contradicted"


def combine(verdicts: list[str]) -> str:
    """A best_of claim: reproduced if every comparison is, contradicted if any is."""
    if any(v == "contradicted" for v in verdicts):
        return "contradicted"
    return "reproduced" if all(v == "reproduced" for v in verdicts) else "inconclusive"


def _published_delta(
    published: dict, table: str, a: str, others: list[str], metric: str, sign: int
) -> float | None:
    """a - b in the paper's numbers (fraction); for several rows b, the published row with the
    smallest effect in the claimed direction; None when a or every b lacks the number."""
    pub = published.get(table, {})
    if metric not in pub.get(a, {}):
        return None
    deltas = [(pub[a][metric] - pub[b][metric]) / 100.0 for b in others if metric in pub.get(b, {})]
    return min(deltas, key=lambda d: sign * d) if deltas else None


def evaluate_claim(
    cid: str,
    claim: dict,
    row_paths: dict[tuple[str, str], Path],
    published: dict | None = None,
    compare=None,
) -> dict[str, Any]:
    """One line of the claims table (fractions). ``compare(path_a, path_b)`` returns
    :func:`sure_ood.stages.compare.compare_rows`'s result (injected by :func:`run`). Keys the
    claim lacks take the schema's defaults."""
    from sure_ood.defaults import with_defaults

    claim = with_defaults("claim", claim)
    table, kind = claim["table"], claim["kind"]
    metric = claim["metric"]
    sign = claimed_sign(metric, claim["expect"])
    rows = claim.get("rows") or [claim["a"], claim["b"]]
    a, others = rows[0], rows[1:]
    missing = [r for r in rows if (table, r) not in row_paths]
    if missing:
        raise InputError(f"claims.{cid}: no row JSON for {table}/{missing[0]}")
    results = {b: compare(row_paths[(table, a)], row_paths[(table, b)]) for b in others}
    verdicts = {}
    for b, res in results.items():
        lo, hi = res["metrics"][metric]["ci"]
        verdicts[b] = verdict(lo, hi, sign)
    overall = combine(list(verdicts.values())) if kind == "best_of" else verdicts[others[0]]
    # the line shows the comparison that decides the verdict: among those with the overall
    # verdict, the smallest effect in the claimed direction (the strongest competitor)
    deciding = [b for b in others if verdicts[b] == overall]
    vs = min(deciding, key=lambda b: sign * results[b]["metrics"][metric]["delta"])
    res = results[vs]
    line: dict[str, Any] = {
        "claim": cid,
        "text": claim.get("text", cid),
        "kind": kind,
        "table": table,
        "a": a,
        "b": vs,
        "n_compared": len(others),
        "expect": claim["expect"],
        "metric": metric,
        "n_pairs": res["n_pairs"],
        "bootstrap": res["bootstrap"],
    }
    for m in METRICS:
        r = res["metrics"][m]
        line[f"{m}_a"], line[f"{m}_b"] = r["a"], r["b"]
        line[f"{m}_delta"] = r["delta"]
        line[f"{m}_delta_lo"], line[f"{m}_delta_hi"] = r["ci"]
        line[f"{m}_p"] = r["p_value"]
        pub_sign = claimed_sign(m, claim["expect"])
        line[f"published_{m}_delta"] = _published_delta(
            published or {}, table, a, [vs] if kind == "pair" else others, m, pub_sign
        )
    line["verdict"] = overall
    if kind == "best_of":
        line["verdicts"] = ";".join(f"{b}:{v}" for b, v in verdicts.items())
    return line


def _pp(v: float | None, signed: bool = True) -> str:
    if v is None or v != v:
        return ""
    return f"{100 * v:+.2f}" if signed else f"{100 * v:.2f}"


def render(lines: list[dict]) -> tuple[list[str], list[list[str]], list[str]]:
    """Header, body and footnotes shared by the Markdown and HTML claims tables."""
    pub = [m for m in METRICS if any(ln.get(f"published_{m}_delta") is not None for ln in lines)]
    head = ["claim", "rows (a vs b)"]
    for m in METRICS:
        head += [f"Δ {TITLES[m]} (pp) [95 % interval]", f"p ({TITLES[m]})"]
    head += [f"published Δ {TITLES[m]} (pp)" for m in pub]
    head += ["verdict"]
    body = []
    for ln in lines:
        rows = f"{ln['a']} vs {ln['b']}"
        if ln["kind"] == "best_of":
            rows = f"{ln['a']} vs {ln['n_compared']} rows (closest: {ln['b']})"
        cells = [ln["text"], f"{ln['table']}: {rows}"]
        for m in METRICS:
            cells.append(
                f"{_pp(ln[f'{m}_delta'])} [{_pp(ln[f'{m}_delta_lo'])}, {_pp(ln[f'{m}_delta_hi'])}]"
            )
            cells.append(f"{ln[f'{m}_p']:.3f}")
        cells += [_pp(ln.get(f"published_{m}_delta")) for m in pub]
        cells.append(f"{ln['verdict']} ({TITLES[ln['metric']]})")
        body.append(cells)
    n_pairs = sorted({int(ln["n_pairs"]) for ln in lines})
    notes = [
        "Δ = a − b in percentage points, means over training replicates (FPR@95: lower is "
        "better). Interval and p: two-level paired bootstrap (replicates paired by seed index, "
        f"then images by image); replicate pairs per comparison: {', '.join(map(str, n_pairs))}.",
        "Verdict on the metric in brackets: reproduced = interval on the claimed side of 0, "
        "contradicted = on the other side, inconclusive = the interval contains 0. A best-of "
        "claim compares a with every other row and shows the closest one; it is reproduced only "
        "if every comparison is.",
    ]
    if any(int(ln["n_pairs"]) == 1 for ln in lines):
        notes.append(
            "With one replicate pair the interval holds test-set noise only (image bootstrap)."
        )
    if pub:
        notes.append(
            "published Δ: the same difference in the paper's numbers (best-of: against the "
            "strongest row the paper gives a number for)."
        )
    return head, body, notes


def to_markdown(lines: list[dict], title: str = "Published claims") -> str:
    head, body, notes = render(lines)
    out = [f"### {title}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    out += ["| " + " | ".join(cells) + " |" for cells in body]
    out += [""] + [n + "  " for n in notes[:-1]] + notes[-1:] + [""]
    return "\n".join(out)


def to_html(lines: list[dict], title: str = "Published claims") -> str:
    from sure_ood.stages.table import html_page

    head, body, notes = render(lines)
    return html_page(title, head, body, notes)


def run(args: argparse.Namespace) -> int:
    import pandas as pd

    from sure_ood.stages.compare import compare_rows

    claims = json.loads(args.claims)
    if isinstance(claims, list):  # the rule's form: in config order, each with its id
        claims = {c["id"]: {k: v for k, v in c.items() if k != "id"} for c in claims}
    published = json.loads(args.published)
    row_paths = {}
    for p in args.rows:
        r = read_json(p)
        row_paths[(r["table"], r["row"])] = p
    cache: dict[tuple[Path, Path], dict] = {}

    def compare(pa: Path, pb: Path) -> dict:
        if (pa, pb) not in cache:
            cache[(pa, pb)] = compare_rows(
                pa, pb, n_boot=args.n_boot, seed=args.seed, metrics=METRICS, alpha=args.alpha
            )
        return cache[(pa, pb)]

    lines = [evaluate_claim(cid, c, row_paths, published, compare) for cid, c in claims.items()]
    with atomic_path(args.out_csv) as tmp:
        pd.DataFrame(lines).to_csv(tmp, index=False, float_format="%.6f")
    md = to_markdown(lines)
    write_text(args.out_md, md)
    if args.out_html is not None:
        write_text(args.out_html, to_html(lines))
    print(md)
    return 0
