"""Stage ``verify``: compare a finished run with a reference, row by row and file by file.

A reference is either

- a **committed reference run**, ``results/reference/<bench>/``: the run's table CSVs and
  Markdown, and ``manifest.json`` with the sha256 of every checkpoint, feature cache, score
  file and table, the package versions, the numerics mode, the benchmark name and a digest of
  the config (every row's config subtree, as its row JSON records it); or
- **published numbers** (``tables.<table>.published`` of a config, in percent), as for the
  SURE-OOD experiment on ImageNet-1K vs SSB.

Each row of the reference gets one verdict:

- ``identical``: every metric and interval of the row is the same number (CSV text);
- ``within``: every metric lies inside the reference row's bootstrap 95 % interval (committed
  reference), or the published number lies inside our row's interval widened by
  ``--tolerance`` percentage points on each side (published numbers);
- ``outside``: otherwise (the metrics that are outside are named).

Exit status: 0 when no row is outside, 1 when one is, 2 on bad input (an unfinished run, a
reference from another benchmark or config, a manifest that does not parse). verify reads
the run and never writes into it; its report goes to ``--out`` and stdout.

``--write-reference DIR`` turns a finished run into a reference (``make reference``);
``--readme FILE`` rewrites the part of FILE between ``<!-- default-run:start -->`` and
``<!-- default-run:end -->`` with the reference's tables, and the part between
``<!-- claims:start -->`` and ``<!-- claims:end -->`` (where FILE has them) with its claim
verdicts (``make readme``).
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import sys
from pathlib import Path
from typing import Any

from sure_ood.io import InputError, file_digest, read_json, write_json, write_text
from sure_ood.stages.evaluate import SEED_METRICS

MANIFEST = "manifest.json"
FORMAT = 1
CLAIMS = "claims"  # tables/claims.*, written by the claims stage (a reserved table name)
# metric columns of a table CSV (fractions): a row's metrics, as evaluate writes them; the CI
# columns are <metric>_lo / <metric>_hi
METRICS = SEED_METRICS
# the files of a run whose bytes a reference records (relative to results/<bench>/)
FILE_PATTERNS = (
    "data/classes.json",
    "data/prior.npy",
    "data/split~*/manifest.parquet",
    "data/split~*/summary.json",
    "runs/**/final.safetensors",
    "test_models/**/model.safetensors",
    "features/**/*.npz",
    "odin/**/*.npz",
    "scores/**/*.parquet",
    "fused/**/*.parquet",
    "tables/*.csv",
    "tables/*.md",
)
README_START = "<!-- default-run:start -->"
README_END = "<!-- default-run:end -->"
CLAIMS_START = "<!-- claims:start -->"
CLAIMS_END = "<!-- claims:end -->"
VERDICTS = ("reproduced", "inconclusive", "contradicted")
DEFAULT_TOLERANCE = 1.0


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", nargs="?", type=Path, help="the finished run: results/<bench>")
    p.add_argument(
        "--reference",
        type=Path,
        help="a reference folder (with manifest.json; default results/reference/<bench>) or "
        "a config file whose tables give `published` numbers",
    )
    p.add_argument(
        "--published",
        help="published numbers as JSON {table: {row: {metric: percent}}} (the workflow's)",
    )
    p.add_argument(
        "--tolerance",
        type=float,
        default=DEFAULT_TOLERANCE,
        help="published numbers: widen our interval by this many points (default 1.0)",
    )
    p.add_argument("--out", type=Path, help="write the report (JSON) here; never inside the run")
    p.add_argument(
        "--write-reference",
        type=Path,
        metavar="DIR",
        help="write the run as a reference into DIR instead of checking it",
    )
    p.add_argument(
        "--tables",
        nargs="+",
        help="with --write-reference: the tables in the config's order (default: by name)",
    )
    p.add_argument(
        "--readme",
        type=Path,
        metavar="FILE",
        help="rewrite FILE's default-run section from --reference instead of checking a run",
    )


# ---- the run ------------------------------------------------------------------------------
def row_files(run_dir: Path) -> dict[str, Path]:
    """``{"table/row": path}`` of every row JSON of a run."""
    return {f"{p.parent.name}/{p.stem}": p for p in sorted((run_dir / "rows").glob("*/*.json"))}


def row_config_digests(run_dir: Path) -> dict[str, str]:
    """sha256 of each row's config subtree (row, model, recipes, method) from its row JSON."""
    out = {}
    for key, path in row_files(run_dir).items():
        cfg = read_json(path).get("provenance", {}).get("config")
        if cfg is None:
            raise InputError(f"{path}: no provenance.config (written by an older sure-ood?)")
        out[key] = subtree_digest(cfg)
    return out


def subtree_digest(subtree: Any) -> str:
    """sha256 of a config subtree as canonical JSON (sorted keys, no spaces)."""
    text = json.dumps(json.loads(json.dumps(subtree)), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def config_digest(row_digests: dict[str, str]) -> str:
    """One digest of a config's rows: equal for the same rows with the same subtrees."""
    return subtree_digest(dict(sorted(row_digests.items())))


def file_digests(run_dir: Path) -> dict[str, str]:
    """``{relative path: sha256}`` of every checkpoint, cache, score file and table."""
    out = {}
    for pattern in FILE_PATTERNS:
        for p in sorted(run_dir.glob(pattern)):
            if p.is_file() and not p.name.startswith("."):
                out[p.relative_to(run_dir).as_posix()] = file_digest(p)
    return dict(sorted(out.items()))


def read_table_csv(path: Path) -> dict[str, dict[str, str]]:
    """``{row id: {column: text}}`` of a table CSV (text, so that equal means identical)."""
    try:
        with open(path, newline="") as fh:
            return {r["row"]: r for r in csv.DictReader(fh)}
    except FileNotFoundError as e:
        raise InputError(f"{path}: table not found") from e
    except (KeyError, csv.Error) as e:
        raise InputError(f"{path}: not a table CSV with a `row` column ({e})") from e


def _benchmark_of(run_dir: Path) -> str:
    return run_dir.resolve().name


def _check_outside(path: Path, run_dir: Path, what: str) -> None:
    """verify never writes into the run it checks."""
    p, r = path.resolve(), run_dir.resolve()
    if p == r or r in p.parents:
        raise InputError(f"{what} {path} is inside the run {run_dir}: verify never writes there")


# ---- the reference ------------------------------------------------------------------------
def load_manifest(ref_dir: Path) -> dict:
    """The reference's manifest, checked; the error names the file and what is wrong."""
    path = ref_dir / MANIFEST
    if not path.exists():
        raise InputError(f"{path}: no reference manifest (make reference writes one)")
    try:
        m = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise InputError(f"{path}: reference manifest is not valid JSON ({e})") from e
    if not isinstance(m, dict):
        raise InputError(f"{path}: reference manifest is not a JSON object")
    missing = [
        k
        for k in ("benchmark", "config_sha256", "row_configs", "files", "tables", "numerics")
        if k not in m
    ]
    if missing:
        raise InputError(f"{path}: reference manifest lacks {', '.join(missing)}")
    return m


def write_reference(run_dir: Path, dest: Path, order: list[str] | None = None) -> dict:
    """Copy a finished run's tables into ``dest`` and write its manifest; returns it.

    ``order``: the tables in the config's order (the README prints them so)."""
    from sure_ood import numerics
    from sure_ood.stages.evaluate import package_versions

    _check_outside(dest, run_dir, "the reference")
    rows = row_config_digests(run_dir)
    if not rows:
        raise InputError(f"{run_dir}: no rows (rows/<table>/<row>.json): not a finished run")
    tables = list(dict.fromkeys(k.split("/")[0] for k in rows))
    if order:
        unknown = sorted(set(order) - set(tables))
        if unknown:
            raise InputError(f"{run_dir}: no rows of the tables {', '.join(unknown)}")
        tables = list(order) + [t for t in tables if t not in order]
    missing = [t for t in tables if not (run_dir / "tables" / f"{t}.csv").exists()]
    if missing:
        raise InputError(f"{run_dir}: tables not built yet: {', '.join(missing)}")
    # the claims table too, when the config has claims: a cheaper schedule or another machine
    # is judged by whether its verdicts match the reference's (benchmarks/bench_workflow.py)
    claims = [CLAIMS] if (run_dir / "tables" / f"{CLAIMS}.csv").exists() else []
    for t in tables + claims:
        for ext in ("csv", "md"):
            src = run_dir / "tables" / f"{t}.{ext}"
            write_text(dest / "tables" / src.name, src.read_text())
    manifest = {
        "format": FORMAT,
        "benchmark": _benchmark_of(run_dir),
        "numerics": numerics.current(),
        "config_sha256": config_digest(rows),
        "row_configs": rows,
        "tables": tables,
        "versions": {"python": sys.version.split()[0], **package_versions()},
        "files": file_digests(run_dir),
        "regenerate": "make reference",
    }
    write_json(dest / MANIFEST, manifest)
    return manifest


# ---- comparing ----------------------------------------------------------------------------
def _same_row(ours: dict[str, str], ref: dict[str, str]) -> bool:
    cols = [c for c in ref if c in METRICS or c.endswith(("_lo", "_hi"))]
    return all(ours.get(c) == ref[c] for c in cols)


def _num(text: str | None) -> float:
    try:
        return float(text) if text not in (None, "") else float("nan")
    except ValueError:
        return float("nan")


def compare_with_reference(run_dir: Path, ref_dir: Path) -> dict:
    """Verdict per row and the files whose bytes differ. Raises InputError on bad input."""
    m = load_manifest(ref_dir)
    bench = _benchmark_of(run_dir)
    if m["benchmark"] != bench:
        raise InputError(
            f"{ref_dir}: reference of benchmark {m['benchmark']!r}, run is {bench!r} ({run_dir})"
        )
    ref_rows = {
        (t, row): line
        for t in m["tables"]
        for row, line in read_table_csv(ref_dir / "tables" / f"{t}.csv").items()
    }
    have = row_files(run_dir)
    missing = [f"{t}/{r}" for t, r in ref_rows if f"{t}/{r}" not in have]
    missing += [
        f"tables/{t}.csv" for t in m["tables"] if not (run_dir / "tables" / f"{t}.csv").exists()
    ]
    if missing:
        raise InputError(f"{run_dir}: unfinished run; missing: {', '.join(missing)}")
    ours_cfg = row_config_digests(run_dir)
    other = sorted(
        k for k, d in m["row_configs"].items() if k in ours_cfg and ours_cfg[k] != d
    ) + sorted(k for k in m["row_configs"] if k not in ours_cfg)
    if other:
        raise InputError(
            f"{ref_dir}: reference of another config (rows whose config differs: "
            f"{', '.join(other)})"
        )
    rows = []
    tables = {t: read_table_csv(run_dir / "tables" / f"{t}.csv") for t in m["tables"]}
    for (t, row), ref in ref_rows.items():
        ours = tables[t].get(row)
        if ours is None:
            raise InputError(f"{run_dir}/tables/{t}.csv: row {row!r} missing (rebuild the table)")
        if _same_row(ours, ref):
            rows.append({"table": t, "row": row, "verdict": "identical", "outside": []})
            continue
        outside = []
        for k in METRICS:
            lo, hi = _num(ref.get(f"{k}_lo")), _num(ref.get(f"{k}_hi"))
            v = _num(ours.get(k))
            if lo == lo and hi == hi and not lo <= v <= hi:  # NaN-safe: no interval, no check
                outside.append(k)
        verdict = "outside" if outside else "within"
        rows.append({"table": t, "row": row, "verdict": verdict, "outside": outside})
    ours_files = file_digests(run_dir)
    files = {
        p: "missing" if p not in ours_files else "differs"
        for p, d in m["files"].items()
        if ours_files.get(p) != d
    }
    return {
        "run": str(run_dir),
        "reference": str(ref_dir),
        "benchmark": bench,
        "numerics": m["numerics"],
        "rows": rows,
        "files_differing": files,
        "files_compared": len(m["files"]),
    }


def published_numbers(path: Path) -> dict:
    """``{table: {row: {metric: percent}}}`` from a config file's ``tables.*.published``."""
    import yaml

    try:
        cfg = yaml.safe_load(path.read_text())
    except FileNotFoundError as e:
        raise InputError(f"{path}: reference not found") from e
    except yaml.YAMLError as e:
        raise InputError(f"{path}: not a YAML/JSON config ({e})") from e
    out = {
        t: tc["published"]
        for t, tc in (cfg or {}).get("tables", {}).items()
        if isinstance(tc, dict) and tc.get("published")
    }
    if not out:
        raise InputError(f"{path}: no table gives `published` numbers")
    return out


def compare_with_published(run_dir: Path, published: dict, tolerance: float) -> dict:
    """Verdict per published row: identical to 2 decimals, within our interval +- tolerance
    (percentage points), or outside."""
    missing = []
    tables = {}
    for t, rows in published.items():
        path = run_dir / "tables" / f"{t}.csv"
        tables[t] = read_table_csv(path) if path.exists() else {}
        missing += [f"{t}/{r}" for r in rows if r not in tables[t]]
    if missing:
        raise InputError(f"{run_dir}: unfinished run; missing rows: {', '.join(missing)}")
    out = []
    for t, rows in published.items():
        for row, metrics in rows.items():
            ours = tables[t][row]
            verdicts, outside = [], []
            for k, pub in metrics.items():
                v = 100 * _num(ours.get(k))
                lo = 100 * _num(ours.get(f"{k}_lo")) - tolerance
                hi = 100 * _num(ours.get(f"{k}_hi")) + tolerance
                if f"{v:.2f}" == f"{float(pub):.2f}":
                    verdicts.append("identical")
                elif (lo <= pub <= hi) if lo == lo else abs(v - pub) <= tolerance:
                    verdicts.append("within")
                else:
                    outside.append(k)
            verdict = "outside" if outside else ("within" if "within" in verdicts else "identical")
            out.append({"table": t, "row": row, "verdict": verdict, "outside": outside})
    return {
        "run": str(run_dir),
        "reference": "published numbers",
        "benchmark": _benchmark_of(run_dir),
        "tolerance_pp": tolerance,
        "rows": out,
        "files_differing": {},
        "files_compared": 0,
    }


def report_markdown(rep: dict) -> str:
    counts = {v: sum(r["verdict"] == v for r in rep["rows"]) for v in ("identical", "within")}
    counts["outside"] = sum(r["verdict"] == "outside" for r in rep["rows"])
    lines = [
        f"verify {rep['run']} against {rep['reference']}",
        "",
        "| table | row | verdict | outside |",
        "|---|---|---|---|",
    ]
    lines += [
        f"| {r['table']} | {r['row']} | {r['verdict']} | {', '.join(r['outside'])} |"
        for r in rep["rows"]
    ]
    lines += ["", ", ".join(f"{n} {v}" for v, n in counts.items()) + " rows"]
    if rep["files_compared"]:
        diff = rep["files_differing"]
        lines.append(
            f"files: {rep['files_compared'] - len(diff)}/{rep['files_compared']} identical"
        )
        lines += [f"  {state}: {p}" for p, state in diff.items()]
    return "\n".join(lines) + "\n"


# ---- README -------------------------------------------------------------------------------
def readme_section(ref_dir: Path) -> str:
    """The tables of a reference, in its manifest's order, as the README prints them."""
    m = load_manifest(ref_dir)
    parts = [(ref_dir / "tables" / f"{t}.md").read_text().strip() for t in m["tables"]]
    note = (
        f"<!-- generated by `make readme` from {ref_dir.as_posix()} "
        f"(numerics: {m['numerics']}); do not edit by hand -->"
    )
    return note + "\n\n" + "\n\n".join(parts) + "\n"


def readme_claims(ref_dir: Path) -> str:
    """The reference's claim verdicts as the README lists them: one bullet per verdict, each
    claim with its effect in the verdict's metric (points, mean over replicates) and interval."""
    path = ref_dir / "tables" / f"{CLAIMS}.csv"
    note = f"<!-- generated by `make readme` from {path.as_posix()}; do not edit by hand -->"
    if not path.exists():
        return f"{note}\n\n(this reference has no claims table)\n"
    with path.open(newline="") as f:
        claims = list(csv.DictReader(f))
    names = {"auroc": "AUROC", "fpr_at_95_tpr": "FPR@95"}
    lines = [note, ""]
    for verdict in VERDICTS:
        items = []
        for c in claims:
            if c["verdict"] != verdict:
                continue
            m = c["metric"]
            d, lo, hi = (100 * float(c[f"{m}_delta{k}"]) for k in ("", "_lo", "_hi"))
            closest = f" (closest: {c['b']})" if c["kind"] == "best_of" else ""
            effect = f"Δ {names.get(m, m)} {d:+.2f} [{lo:+.2f}, {hi:+.2f}]"
            items.append(f"  - {c['text']}: {effect}{closest}")
        if items:
            lines += [f"- *{verdict}* ({len(items)} of {len(claims)}):", *items]
    return "\n".join(lines) + "\n"


def _between(text: str, start: str, end: str, body: str, readme: Path) -> str:
    if start not in text or end not in text:
        raise InputError(f"{readme}: no {start} ... {end} markers")
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    return f"{head}{start}\n{body}{end}{tail}"


def update_readme(readme: Path, ref_dir: Path) -> bool:
    """Rewrite the text between the README's markers; True if it changed."""
    text = readme.read_text()
    new = _between(text, README_START, README_END, readme_section(ref_dir), readme)
    if CLAIMS_START in new or CLAIMS_END in new:
        new = _between(new, CLAIMS_START, CLAIMS_END, readme_claims(ref_dir), readme)
    if new != text:
        write_text(readme, new)
    return new != text


# ---- CLI ----------------------------------------------------------------------------------
def run(args: argparse.Namespace) -> int:
    if args.readme is not None:
        if args.reference is None:
            raise InputError("--readme needs --reference (e.g. results/reference/mnist_osr)")
        changed = update_readme(args.readme, args.reference)
        print(f"{args.readme}: {'updated' if changed else 'already up to date'}")
        return 0
    if args.run_dir is None:
        raise InputError("give the run to check: sure-ood verify results/<bench>")
    run_dir = args.run_dir
    if not run_dir.is_dir():
        raise InputError(f"{run_dir}: no such run folder")
    if args.write_reference is not None:
        m = write_reference(run_dir, args.write_reference, args.tables)
        print(f"{args.write_reference}: reference of {m['benchmark']} ({len(m['files'])} files)")
        return 0
    if args.out is not None:
        _check_outside(args.out, run_dir, "the report")
    if args.published is not None:
        rep = compare_with_published(run_dir, json.loads(args.published), args.tolerance)
    elif args.reference is not None and args.reference.is_file():
        rep = compare_with_published(run_dir, published_numbers(args.reference), args.tolerance)
    else:
        ref = args.reference or Path("results/reference") / _benchmark_of(run_dir)
        rep = compare_with_reference(run_dir, ref)
    print(report_markdown(rep), end="")
    if args.out is not None:
        write_json(args.out, rep)
    return 1 if any(r["verdict"] == "outside" for r in rep["rows"]) else 0
