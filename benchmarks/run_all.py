"""Run every benchmark of benchmarks/ and print one summary table (``make bench``).

Each benchmark runs as its own process (``sys.executable benchmarks/<script>``), its output is
streamed, and its headline figure is parsed from it:

==========  ====================================================  ==========================
name        figure                                                target (issue 10)
==========  ====================================================  ==========================
gradnorm    vectorised GradNorm vs per-sample backward loop       >= 100x
sure_step   one SURE step (SAM + RegMixup) vs one plain CE step   ~4x (theory), reported
extract     ``sure-ood extract`` vs a raw timm forward            >= 0.9x raw throughput
scoring     every cached method on 100,000 samples                seconds; memory linear in N
noop        Snakemake no-op rerun of the default workflow         <= 5 s
workflow    default workflow end to end, --cores 2                <= 300 s
==========  ====================================================  ==========================

``extract`` runs ``benchmarks/bench_extract.py`` when it exists (skipped with a note if not).
``noop`` and ``workflow`` come from one ``bench_workflow.py`` run (it also prints the per-rule
time and peak memory summarised from Snakemake's ``benchmark:`` files).

    .venv/bin/python benchmarks/run_all.py            # full: ~15-30 min on 2 cores
    .venv/bin/python benchmarks/run_all.py --quick    # smoke run: small sizes, digits_osr
    .venv/bin/python benchmarks/run_all.py --only gradnorm scoring --json bench.json

Machine load matters on shared cores: the load average (1/5/15 min) is printed with every
figure; ratios are measured side by side within each benchmark, so they are the robust part.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from machine import cpu_model, load_average

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def run(script: str, args: list[str], timeout: float) -> tuple[int, str, float]:
    """Run one benchmark script, streaming its output; return (rc, output, wall s)."""
    cmd = [sys.executable, str(HERE / script), *args]
    print(f"\n$ {' '.join(cmd)}", flush=True)
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    t0 = time.perf_counter()
    p = subprocess.Popen(
        cmd,
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        bufsize=1,
    )
    lines = []
    assert p.stdout is not None
    for line in p.stdout:
        print("  " + line, end="", flush=True)
        lines.append(line)
        if time.perf_counter() - t0 > timeout:
            p.kill()
            lines.append(f"\n[run_all] killed after {timeout:.0f} s\n")
            break
    rc = p.wait()
    return rc, "".join(lines), time.perf_counter() - t0


def table_rows(out: str) -> list[list[str]]:
    """Cells of every Markdown table row (``| a | b |``) of an output, header rows included."""
    rows = []
    for line in out.splitlines():
        line = line.strip()
        if line.startswith("|") and line.endswith("|") and not set(line) <= set("|-: "):
            rows.append([c.strip() for c in line.strip("|").split("|")])
    return rows


def last_json(out: str):
    """The last top-level JSON object printed (multi-line or on one line)."""
    starts = [m.start() for m in re.finditer(r"^\{", out, flags=re.M)]
    for s in reversed(starts):
        try:
            return json.JSONDecoder().raw_decode(out[s:])[0]
        except json.JSONDecodeError:
            continue
    return None


def num(s: str) -> float:
    return float(re.sub(r"[^0-9.eE+-]", "", s))


# ---- parsers: output -> (figure text, value, target text, met: bool | None) ---------------
def parse_gradnorm(out: str):
    speedups = []
    for r in table_rows(out):
        if len(r) == 6 and r[4].endswith("x"):
            speedups.append((f"{r[0]}/{r[1]}", num(r[4]), r[5]))
    if not speedups:
        return None
    # the target is for the default precision (float32); float64 rows are reported beside it
    judged = [t for t in speedups if t[0].endswith("/float32")] or speedups
    worst = min(judged, key=lambda t: t[1])
    fig = ", ".join(f"{k} {v:.0f}x (max rel diff {d})" for k, v, d in speedups)
    return f"vectorised vs loop: {fig}", worst[1], ">= 100x (float32)", worst[1] >= 100


def parse_sure_step(out: str):
    j = last_json(out)
    if not j or "ratio_sure_over_plain" not in j:
        return None
    r = j["ratio_sure_over_plain"]["median_per_repeat"]
    r2 = j.get("ratio_sure_2fwd_over_plain", {}).get("median_per_repeat")
    fig = (
        f"SURE step / plain CE step = {r:.2f}x (2-forward variant {r2}x; "
        f"{j['num_threads']} thread(s), batch {j['batch']})"
    )
    return fig, r, "~4x (2 SAM passes x 2B samples)", r <= 4.4


def parse_extract(out: str):
    j = last_json(out)
    cand = None
    if isinstance(j, dict):
        flat = {}

        def walk(d, pre=""):
            for k, v in d.items():
                if isinstance(v, dict):
                    walk(v, f"{pre}{k}.")
                else:
                    flat[f"{pre}{k}"] = v

        walk(j)
        keys = [k for k in flat if "ratio" in k.lower() and isinstance(flat[k], (int, float))]
        if keys:
            cand = (keys[0], float(flat[keys[0]]))
    if cand is None:
        m = re.findall(r"ratio[^0-9\n]*([0-9]+\.[0-9]+)", out, flags=re.I)
        if m:
            cand = ("ratio", float(m[-1]))
    if cand is None:
        return None
    return f"extract / raw forward: {cand[1]:.3f}x ({cand[0]})", cand[1], ">= 0.9x", cand[1] >= 0.9


def parse_scoring(out: str, max_method_s: float):
    methods = [r for r in table_rows(out) if len(r) == 4 and r[0] not in ("method",)]
    methods = [r for r in methods if re.match(r"^[a-z_]+$", r[0])]
    knn = [r for r in table_rows(out) if len(r) == 4 and r[0].isdigit()]
    if not methods:
        return None
    score_s = {r[0]: num(r[2]) for r in methods}
    fit_s = {r[0]: num(r[1]) for r in methods}
    peak = {r[0]: num(r[3]) for r in methods}
    n = re.search(r"N_test=(\d+)", out)
    data = re.search(r"\): (\d+) MiB", out)
    slow = max(score_s, key=score_s.get)
    fig = (
        f"{len(methods)} methods on N={n.group(1) if n else '?'}: total score "
        f"{sum(score_s.values()):.1f} s (+ fit {sum(fit_s.values()):.1f} s); slowest "
        f"{slow} {score_s[slow]:.2f} s; max peak {max(peak.values()):.0f} MiB (cache "
        f"{data.group(1) if data else '?'} MiB)"
    )
    met = score_s[slow] <= max_method_s
    if len(knn) >= 3:
        # KNN scaling: N_test 25k -> 100k at a fixed bank (rows 1 and 3)
        ratio = num(knn[2][3]) / max(num(knn[0][3]), 1e-9)
        fig += f"; KNN peak memory x{ratio:.1f} for N x4 (linear: ~4)"
        met = met and ratio <= 5.0
    return fig, score_s[slow], f"each method <= {max_method_s:.0f} s; memory linear", met


# ---- main --------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="small sizes, digits_osr workflow")
    ap.add_argument(
        "--only", nargs="+", metavar="NAME", help="gradnorm sure_step extract scoring workflow"
    )
    ap.add_argument("--skip", nargs="+", metavar="NAME", default=[])
    ap.add_argument(
        "--workflow-config",
        default=None,
        help="config of the workflow benchmark (default: config/config.yaml, "
        "--quick: config/digits_osr.yaml)",
    )
    ap.add_argument("--timeout", type=float, default=3600, help="per benchmark, seconds")
    ap.add_argument("--json", type=Path, help="also write the summary as JSON")
    args = ap.parse_args(argv)
    q = args.quick

    wf_json = Path(tempfile.mkdtemp(prefix="sure_ood_bench_")) / "workflow.json"
    wf_config = args.workflow_config or ("config/digits_osr.yaml" if q else "config/config.yaml")
    plan = {
        "gradnorm": (
            "bench_gradnorm.py",
            ["--n", "2000", "--loop-n", "50"] if q else [],
            parse_gradnorm,
        ),
        "sure_step": (
            "bench_sure_step.py",
            ["--repeats", "8", "--warmup", "2", "--threads", "1"]
            if q
            else ["--repeats", "60", "--warmup", "5", "--threads", "1"],
            parse_sure_step,
        ),
        "extract": ("bench_extract.py", ["--quick"] if q else [], parse_extract),
        "scoring": (
            "bench_scoring.py",
            ["--n", "10000", "--n-train", "2000", "--skip-knn-scaling"] if q else [],
            lambda out: parse_scoring(out, 10.0),
        ),
        "workflow": (
            "bench_workflow.py",
            ["--config-file", wf_config, "--json", str(wf_json)]
            + (["--noop-repeats", "2", "--no-imports"] if q else ["--profile-noop"]),
            None,
        ),
    }
    names = [n for n in (args.only or plan) if n not in args.skip]
    unknown = set(names) - set(plan)
    if unknown:
        ap.error(f"unknown benchmark(s) {sorted(unknown)}; known: {list(plan)}")

    print(
        f"machine: {cpu_model()}, {os.cpu_count()} logical CPUs; python {sys.version.split()[0]}"
        f"; load average {load_average()}; mode: {'quick' if q else 'full'}"
    )
    summary: list[dict] = []

    def record(name, status, figure="", value=None, target="", met=None, wall=None, load=""):
        summary.append(
            {
                "benchmark": name,
                "status": status,
                "figure": figure,
                "value": value,
                "target": target,
                "met": met,
                "wall_s": wall,
                "load": load,
            }
        )

    for name in names:
        script, sargs, parser = plan[name]
        if not (HERE / script).exists():
            record(name, "skipped", f"benchmarks/{script} not present (yet)")
            print(f"\n[run_all] {name}: benchmarks/{script} not present, skipped")
            continue
        if name == "extract" and q:
            help_out = subprocess.run(
                [sys.executable, str(HERE / script), "--help"],
                cwd=ROOT,
                capture_output=True,
                text=True,
            ).stdout
            if "--quick" not in help_out:
                sargs = []
        rc, out, wall = run(script, sargs, args.timeout)
        load = load_average()
        if name == "workflow":
            try:
                res = json.loads(wf_json.read_text())
            except (OSError, json.JSONDecodeError):
                record(name, f"failed (rc {rc})", wall=wall, load=load)
                continue
            if "run" in res:
                r = res["run"]
                s = res.get("summary", {})
                cp = s.get("critical_path_cpu", {}).get("s")
                fig = (
                    f"{Path(res['configfile']).name}: wall {r['wall_s']:.0f} s, CPU s of the "
                    f"whole run {r.get('cpu_s')} (/ {res['cores']} cores = "
                    f"{(r.get('cpu_s') or 0) / res['cores']:.0f} s: ~ the wall on idle cores), "
                    f"{s.get('jobs')} jobs, job CPU s {s.get('sum_cpu_s')} "
                    f"(/ {res['cores']} cores = {s.get('sum_cpu_s', 0) / res['cores']:.0f} s), "
                    f"CPU critical path {cp} s, peak RSS {r['peak_rss_mib']:.0f} MiB"
                )
                record(
                    "workflow",
                    "ok" if r["rc"] == 0 else f"failed (rc {r['rc']})",
                    fig,
                    r["wall_s"],
                    "<= 300 s (default config)",
                    r["wall_s"] <= 300 if r["rc"] == 0 else False,
                    wall,
                    f"{r['load_before']} -> {r['load_after']}",
                )
            if "noop" in res:
                n = res["noop"]
                fig = (
                    f"no-op rerun {n['median_s']:.2f} s (runs {n['times_s']}; CPU s "
                    f"{n.get('cpu_s')}: ~ the wall on an idle machine)"
                )
                if not n["nothing_to_do"]:
                    fig += "; SCHEDULED JOBS"
                record(
                    "noop",
                    "ok",
                    fig,
                    n["median_s"],
                    "<= 5 s, nothing scheduled",
                    n["median_s"] <= 5 and n["nothing_to_do"],
                    None,
                    n["load"],
                )
            continue
        parsed = parser(out) if rc == 0 else None
        if parsed is None:
            record(name, f"failed (rc {rc})" if rc else "unparsed output", wall=wall, load=load)
            continue
        fig, value, target, met = parsed
        record(name, "ok", fig, value, target, met, wall, load)

    print("\n## Summary\n")
    print(
        f"machine: {cpu_model()}, {os.cpu_count()} logical CPUs; "
        f"mode: {'quick (small sizes: targets indicative only)' if q else 'full'}\n"
    )
    print("| benchmark | figure | target | met | wall s | load avg after |")
    print("|---|---|---|---|---:|---|")
    for s in summary:
        met = {True: "yes", False: "**no**", None: "-"}[s["met"]]
        if s["status"] != "ok":
            met = s["status"]
        wall = f"{s['wall_s']:.0f}" if s["wall_s"] else ""
        print(
            f"| {s['benchmark']} | {s['figure']} | {s['target']} | {met} | {wall} | {s['load']} |"
        )
    if args.json:
        args.json.write_text(
            json.dumps({"cpu": cpu_model(), "quick": q, "summary": summary}, indent=2)
        )
    shutil.rmtree(wf_json.parent, ignore_errors=True)
    failed = [s for s in summary if s["status"].startswith("failed")]
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
