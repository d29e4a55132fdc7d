"""Shared fixtures: the repository root and a runner for real Snakemake in a temp copy."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


@pytest.fixture(autouse=True)
def _restore_torch_functions():
    """A stage run in the test process in portable mode installs sure_ood.portable_blas (in a
    job it lasts the job's process); the tests after it get torch's own functions back."""
    yield
    portable_blas = sys.modules.get("sure_ood.portable_blas")
    if portable_blas is not None and portable_blas.installed():
        portable_blas.uninstall()


def snakemake_env() -> dict:
    env = dict(os.environ)
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


def copy_workflow(dest: Path) -> Path:
    """Copy what a user checks out (Snakefile, workflow/, config/, profiles/) into ``dest``."""
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copy(ROOT / "Snakefile", dest / "Snakefile")
    for d in ("workflow", "config", "envs", "profiles"):
        shutil.copytree(ROOT / d, dest / d, dirs_exist_ok=True)
    return dest


def run_snakemake(workdir: Path, *args: str, check: bool = True, timeout: int = 2400):
    cmd = [str(BIN / "snakemake"), *args]
    r = subprocess.run(
        cmd, cwd=workdir, env=snakemake_env(), capture_output=True, text=True, timeout=timeout
    )
    if check and r.returncode != 0:
        raise AssertionError(
            f"{' '.join(cmd)} failed ({r.returncode}):\n{r.stdout[-4000:]}\n{r.stderr[-6000:]}"
        )
    return r


# the longest command a job may have (the log begins with it: a reader reruns it by hand)
MAX_COMMAND = 300


def shell_commands(dry_run_output: str) -> list[str]:
    """The shell commands of a ``snakemake -n -p`` run (rules without a command left out)."""
    found = re.findall(r"^Shell command: (.+)$", dry_run_output, re.M)
    return [c for c in found if c.strip() != "None"]


@pytest.fixture(scope="session")
def digits_run(tmp_path_factory):
    """One real run of the digits_osr workflow, shared by the workflow tests."""
    work = copy_workflow(tmp_path_factory.mktemp("digits_run"))
    # a generous limit: on 2 cores shared with other jobs the ~100 jobs can take 20+ minutes
    run_snakemake(work, "--cores", "2", "--configfile", "config/digits_osr.yaml", timeout=3600)
    return work
