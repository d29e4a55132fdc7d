"""The workflow submitted to a real (single-node, localhost) SLURM cluster.

Runs only as root on a Debian/Ubuntu machine with apt (tests/slurm/start_cluster.sh installs
and starts slurmctld, slurmd and munge; it exits 77 elsewhere and these tests skip).
Set SURE_OOD_SKIP_SLURM=1 to skip them anyway.

    .venv/bin/pytest -m slurm tests/test_slurm.py

What is checked, through the real `snakemake-executor-plugin-slurm`:
- the digits_osr experiment runs to its tables with `--workflow-profile workflow/profiles/slurm`;
- every non-local rule became one SLURM job and the local rules did not;
- GPU rules (config `resources.<rule>.gpu: 1`) were submitted with `--gpus=1` and SLURM
  allocated them a GPU (the cluster has two fake ones), CPU rules got none;
- the training job, "preempted" (requeued with `scontrol requeue`) after its first saved
  epoch, is restarted by SLURM (the profile submits with `--requeue`) and resumes from its
  state file;
- the tables equal those of a local run of the same config (thread counts are pinned by the
  rules, the code is seeded and resuming restores the RNG states, so CPU results are
  bit-identical, requeue or not).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest
import yaml

pytestmark = [pytest.mark.slurm, pytest.mark.workflow]

REPO = Path(__file__).resolve().parents[1]
SLURM_DIR = REPO / "tests" / "slurm"
CONFIG = "config/digits_osr.yaml"
# Wall-clock limit of the whole cluster run (seconds); the run itself takes ~3-5 min.
CLUSTER_TIMEOUT = int(os.environ.get("SURE_OOD_SLURM_TIMEOUT", "1200"))
LOCAL_TIMEOUT = int(os.environ.get("SURE_OOD_LOCAL_TIMEOUT", "900"))
GPU_RULES = ("train", "extract", "odin")
# Files of the repository a run needs (the package itself is installed in the environment).
WORKFLOW_FILES = ("Snakefile", "workflow", "config", "envs", "profiles")
# Extra config for both runs: ask for one GPU in every GPU rule, as a GPU site would.
GPU_OVERLAY = {"resources": {rule: {"gpu": 1} for rule in GPU_RULES}}
# Tables to build (comma-separated ids, or "all"); default: the config's first table, which
# already needs every stage (and keeps the cluster run to a few minutes on 2 cores).
TABLES = os.environ.get("SURE_OOD_SLURM_TABLES", "")


# ---------------------------------------------------------------------------------------------
# the cluster
# ---------------------------------------------------------------------------------------------
class Cluster:
    def __init__(self, state: Path):
        self.state = state
        self.env = dict(os.environ, SLURM_CONF=str(state / "slurm.conf"))
        # the environment's bin first: jobs inherit PATH (sbatch --export=ALL) and must find
        # the same python, snakemake and sure-ood
        self.env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{self.env.get('PATH', '')}"

    def run(self, *args: str, timeout: int = 30) -> str:
        return subprocess.run(
            list(args), env=self.env, capture_output=True, text=True, timeout=timeout, check=True
        ).stdout


@pytest.fixture(scope="session")
def slurm_cluster():
    if os.environ.get("SURE_OOD_SKIP_SLURM") == "1":
        pytest.skip("SURE_OOD_SKIP_SLURM=1")
    # Not under pytest's tmp dir: its parents are mode 0700 and munged runs as user munge.
    state = Path(tempfile.mkdtemp(prefix="sure-ood-slurm."))
    start = subprocess.run(
        ["bash", str(SLURM_DIR / "start_cluster.sh"), str(state)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    if start.returncode == 77:
        shutil.rmtree(state, ignore_errors=True)
        reason = [ln for ln in start.stderr.splitlines() if "SKIP:" in ln]
        pytest.skip(reason[-1].split("SKIP:", 1)[1].strip() if reason else start.stderr.strip())
    try:
        if start.returncode != 0:
            pytest.fail(f"start_cluster.sh failed ({start.returncode}):\n{start.stderr}")
        yield Cluster(state)
    finally:
        stop = subprocess.run(
            ["bash", str(SLURM_DIR / "stop_cluster.sh"), str(state), "--purge"],
            capture_output=True,
            text=True,
            timeout=180,
        )
        sys.stderr.write(stop.stderr)


class JobRecorder(threading.Thread):
    """Polls `scontrol show job` while a run lasts and keeps each job's last record.

    SLURM forgets finished jobs after MinJobAge (300 s on the test cluster), so the jobs of a
    longer run are collected while it runs, straight from the controller.

    With `preempt_in` set to a run's folder, it also plays the cluster that preempts a job:
    once the running `train` job has saved its first epoch (a `state.pt` exists there), it
    requeues that job (`scontrol requeue`, as SLURM does to a preempted `--requeue` job) and
    lets it start again at once (a requeued job otherwise waits ~3 min for its BeginTime).
    """

    def __init__(self, cluster: Cluster, interval: float = 1.0, preempt_in: Path | None = None):
        super().__init__(daemon=True)
        self.cluster, self.interval, self.preempt_in = cluster, interval, preempt_in
        self.jobs: dict[str, dict[str, str]] = {}
        self.requeued: str | None = None
        self.errors: list[str] = []
        self._running_since: dict[str, float] = {}
        self._done = threading.Event()

    def poll(self) -> None:
        try:
            out = self.cluster.run("scontrol", "-o", "show", "job")
        except (subprocess.SubprocessError, OSError):
            return
        for line in out.splitlines():
            rec = dict(re.findall(r"(\w+)=(\S*)", line))
            if "JobId" in rec:
                self.jobs[rec["JobId"]] = rec

    def _states(self) -> list[tuple[str, float]]:
        """(SLURM comment of the train job that owns it, mtime) of every saved state: the
        SLURM plugin names a job `rule_train_wildcards_` + its wildcard values joined by `_`,
        and a run's state lives in runs/model~M/recipe~R/seed~S/state/."""
        out = []
        for p in (self.preempt_in / "results").glob("*/runs/**/state.pt"):
            levels = dict(
                part.split("~", 1) for part in p.relative_to(self.preempt_in).parts if "~" in part
            )
            wildcards = "_".join(levels[k] for k in ("model", "recipe", "seed"))
            try:
                out.append((f"rule_train_wildcards_{wildcards}", p.stat().st_mtime))
            except FileNotFoundError:  # replaced atomically between glob and stat
                pass
        return out

    def maybe_preempt(self) -> None:
        if self.preempt_in is None or self.requeued:
            return
        for rec in self.jobs.values():
            if rec.get("Comment", "").startswith("rule_train") and rec["JobState"] == "RUNNING":
                seen = self._running_since.setdefault(rec["JobId"], time.time())
                # only this job's own state counts: with several train jobs running at once,
                # another run's saved epoch says nothing about this one
                own = [p for p in self._states() if p[0] == rec["Comment"]]
                if not any(mtime > seen for _, mtime in own):
                    continue  # this job has not saved an epoch yet
                try:
                    self.cluster.run("scontrol", "requeue", rec["JobId"])
                    self.requeued = rec["JobId"]
                    for _ in range(60):
                        time.sleep(0.5)
                        state = self.cluster.run("squeue", "-h", "-t", "all", "-j", rec["JobId"])
                        if "PD" in state.split():
                            self.cluster.run(
                                "scontrol", "update", f"JobId={rec['JobId']}", "StartTime=now"
                            )
                            return
                    self.errors.append(f"requeued job {rec['JobId']} never became pending")
                except subprocess.CalledProcessError as e:
                    self.errors.append(f"{e.cmd}: {e.stderr}")
                return

    def run(self) -> None:
        while not self._done.wait(self.interval):
            self.poll()
            self.maybe_preempt()

    def stop(self) -> dict[str, dict[str, str]]:
        self._done.set()
        self.join()
        self.poll()
        return self.jobs


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------
def copy_workflow(dest: Path) -> Path:
    """Copy the workflow's files (tracked or new, not ignored ones like results/) to dest."""
    dest.mkdir(parents=True)
    try:
        listed = subprocess.run(
            ["git", "ls-files", "-co", "--exclude-standard", "--", *WORKFLOW_FILES],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.splitlines()
    except (OSError, subprocess.CalledProcessError):
        listed = [
            str(p.relative_to(REPO))
            for top in WORKFLOW_FILES
            for p in ([REPO / top] if (REPO / top).is_file() else (REPO / top).rglob("*"))
            if p.is_file() and "__pycache__" not in p.parts
        ]
    for rel in listed:
        if (REPO / rel).is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / rel, dest / rel)
    (dest / "gpu.yaml").write_text(yaml.safe_dump(GPU_OVERLAY))
    return dest


def snakemake(workdir: Path, args: list[str], env: dict, timeout: int, log: Path):
    """Run Snakemake in workdir; on timeout or error kill it (it can ignore SIGTERM while it
    polls SLURM) and its whole process group, so no run outlives the test."""
    cmd = [sys.executable, "-m", "snakemake", *args]
    t0 = time.monotonic()
    with open(log, "w") as fh:
        proc = subprocess.Popen(
            cmd, cwd=workdir, env=env, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            rc = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            rc = "timeout"
        finally:
            if proc.poll() is None:
                for sig, grace in ((signal.SIGTERM, 10), (signal.SIGKILL, 10)):
                    try:
                        os.killpg(proc.pid, sig)
                        proc.wait(timeout=grace)
                        break
                    except (ProcessLookupError, subprocess.TimeoutExpired):
                        continue
    elapsed = time.monotonic() - t0
    text = log.read_text()
    assert rc == 0, f"snakemake: {rc} after {elapsed:.0f}s; log {log}:\n{text[-6000:]}"
    return text, elapsed


def table_targets(workdir: Path) -> list[str]:
    """The table files the runs build: results/<bench>/tables/<table>.{csv,md}."""
    cfg = yaml.safe_load((workdir / CONFIG).read_text())
    if TABLES == "all":
        tables = list(cfg["tables"])
    elif TABLES:
        tables = TABLES.split(",")
    else:
        tables = list(cfg["tables"])[:1]
    bench = cfg["benchmark"]["name"]
    return [f"results/{bench}/tables/{t}.{ext}" for t in tables for ext in ("csv", "md")]


def read_files(workdir: Path, paths: list[str]) -> dict[str, bytes]:
    return {p: (workdir / p).read_bytes() for p in paths}


def job_counts(dry_run_log: str) -> dict[str, int]:
    """rule -> number of jobs, from the "Job stats" table of a dry run."""
    stats = dry_run_log.split("Job stats:", 1)[1].split("\ntotal", 1)[0]
    return {m[1]: int(m[2]) for m in re.finditer(r"^(\w+)\s+(\d+)\s*$", stats, re.M)}


def sbatch_calls(log_text: str) -> dict[str, str]:
    """rule -> its sbatch command line, from the plugin's debug output (--verbose)."""
    calls = {}
    for line in log_text.splitlines():
        m = re.search(
            r"sbatch call: (sbatch .*--comment '?rule_(\w+?)(?:_wildcards_\S*)?'? .*)", line
        )
        if m:
            calls.setdefault(m.group(2), m.group(1))
    return calls


# ---------------------------------------------------------------------------------------------
# the test
# ---------------------------------------------------------------------------------------------
def test_cluster_is_up(slurm_cluster):
    assert slurm_cluster.run("sinfo", "-h", "-o", "%T").split()[0] in {"idle", "mixed", "allocated"}
    assert "gpu:2" in slurm_cluster.run("sinfo", "-h", "-o", "%G")


def test_digits_osr_on_slurm_matches_local(slurm_cluster, tmp_path):
    if not (REPO / CONFIG).is_file() or not (REPO / "Snakefile").is_file():
        pytest.skip(f"the workflow ({CONFIG}, Snakefile) is not there yet")
    on_slurm = copy_workflow(tmp_path / "slurm")
    local = copy_workflow(tmp_path / "local")
    targets = table_targets(on_slurm)
    configs = [*targets, "--configfile", CONFIG, "gpu.yaml"]

    # Dry run: how many jobs each rule has.
    dry, _ = snakemake(on_slurm, ["-n", *configs], slurm_cluster.env, 300, tmp_path / "dry.log")
    planned = job_counts(dry)
    assert planned.get("train"), dry[-3000:]
    recorder = JobRecorder(slurm_cluster, preempt_in=on_slurm)
    recorder.start()
    try:
        log, slurm_s = snakemake(
            on_slurm,
            [
                "--workflow-profile",
                "workflow/profiles/slurm",
                *configs,
                # the test cluster has no accounting database: poll with squeue, no account
                "--slurm-status-command",
                "squeue",
                "--slurm-no-account",
                # poll fast (MinJobAge 300 >= 3 x 2 s); the default 40 s is for shared clusters
                "--slurm-init-seconds-before-status-checks",
                "2",
                "--slurm-keep-successful-logs",
                "--jobs",
                "4",
                "--verbose",  # prints each sbatch call
            ],
            slurm_cluster.env,
            CLUSTER_TIMEOUT,
            tmp_path / "slurm.log",
        )
    finally:
        jobs = recorder.stop()
    print(f"SLURM run: {slurm_s:.0f} s, {len(jobs)} SLURM jobs")

    # --- what went to SLURM ------------------------------------------------------------------
    by_rule: dict[str, list[dict]] = {}
    for rec in jobs.values():
        m = re.match(r"rule_(\w+?)(?:_wildcards_.*)?$", rec.get("Comment", ""))
        assert m, f"a SLURM job not submitted by Snakemake: {rec}"
        by_rule.setdefault(m.group(1), []).append(rec)
    failed = [
        f"{r['JobId']} {r['Comment']} {r['JobState']}: {r.get('StdOut')}"
        for r in jobs.values()
        if r["JobState"] != "COMPLETED"
    ]
    assert not failed, "SLURM jobs that did not complete (Snakemake retried them):\n" + "\n".join(
        failed
    )
    # every job of a submitted rule went to SLURM once (no retries were needed) ...
    assert {rule: len(recs) for rule, recs in by_rule.items()} == {
        rule: planned[rule] for rule in by_rule
    }
    # ... GPU rules always, the cheap local rules never
    assert {r for r in GPU_RULES if r in planned} <= by_rule.keys(), sorted(by_rule)
    for rule in ("score", "fuse", "evaluate", "table", "histogram", "all"):
        assert rule not in by_rule, f"local rule {rule} was submitted to SLURM"

    # --- GPU requests: the sbatch line and SLURM's own record ------------------------------
    calls = sbatch_calls(log)
    for rule, recs in by_rule.items():
        gpu = rule in GPU_RULES
        assert ("--gpus=1" in calls[rule]) == gpu, calls[rule]
        for rec in recs:
            assert (rec.get("TresPerJob") == "gres:gpu:1") == gpu, rec
    # threads pinned: SLURM's CPU allocation is the rule's threads (1 by default here)
    assert all(re.search(r"--cpus-per-task=\d+", c) for c in calls.values())

    # --- the "preempted" training job: requeued by SLURM, resumed from its saved epoch ------
    assert not recorder.errors, recorder.errors
    assert recorder.requeued, "the train job finished before the test could requeue it"
    assert "--requeue" in calls["train"], calls["train"]
    train = jobs[recorder.requeued]
    assert (train["JobState"], train["Restarts"]) == ("COMPLETED", "1"), train
    train_logs = [p.read_text() for p in (on_slurm / "results" / "logs").rglob("train.log")]
    resumed = [t for t in train_logs if "resuming from" in t]
    assert len(resumed) == 1, "\n---\n".join(t[:1500] for t in train_logs)

    # --- logs where docs/slurm.md says they are ---------------------------------------------
    train_id = by_rule["train"][0]["JobId"]
    train_logs = list((on_slurm / ".snakemake" / "slurm_logs" / "rule_train").rglob("*.log"))
    assert any(p.name == f"{train_id}.log" for p in train_logs), train_logs
    assert list((on_slurm / "results" / "logs").rglob("train.log"))

    # --- same config locally: identical tables -----------------------------------------------
    _, local_s = snakemake(
        local,
        ["--workflow-profile", "profiles/default", *configs, "--cores", "2"],
        slurm_cluster.env,
        LOCAL_TIMEOUT,
        tmp_path / "local.log",
    )
    print(f"local run: {local_s:.0f} s")
    got, want = read_files(on_slurm, targets), read_files(local, targets)
    for name in want:
        assert got[name] == want[name], (
            f"{name} differs between SLURM and local runs:\n--- SLURM\n{got[name].decode()}\n"
            f"--- local\n{want[name].decode()}"
        )
