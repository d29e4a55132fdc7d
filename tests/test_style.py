"""The code style is checked in CI: ruff's lint and formatter, and snakefmt for the rules.

`make test` runs this file with the unit tests, so a lint error or an unformatted file fails
CI; `make lint` runs the same tools (plus `snakemake --lint`, which tests/test_workflow.py
checks) by hand. Each tool reads its settings from pyproject.toml.
"""

from __future__ import annotations

import shutil
import subprocess

import pytest
from conftest import ROOT

PYTHON_TREES = ["src", "tests", "benchmarks", "examples"]


def _run(*cmd: str) -> subprocess.CompletedProcess:
    if shutil.which(cmd[0]) is None:
        pytest.fail(f"{cmd[0]} is not installed (it is pinned in requirements.txt)")
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)


@pytest.mark.parametrize(
    "cmd",
    [
        ("ruff", "check", *PYTHON_TREES),
        ("ruff", "format", "--check", *PYTHON_TREES),
        ("snakefmt", "--check", "Snakefile", "workflow"),
    ],
    ids=["ruff-check", "ruff-format", "snakefmt"],
)
def test_style_is_clean(cmd):
    r = _run(*cmd)
    assert r.returncode == 0, f"{' '.join(cmd)} failed:\n{r.stdout}{r.stderr}"
