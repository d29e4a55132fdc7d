"""The README as a user reads it: every shell command dry-runs with the job count it states,
and its Python example runs.

Commands: each `snakemake ...` line of a ```bash block is run with `-n` in a fresh copy of the
workflow (tests/conftest.py copy_workflow); a count written "(N jobs)" or "N jobs on a fresh
checkout" must be the number Snakemake schedules. Lines that need data this machine does not
have (`/data/...`, `<partition>` placeholders) or a finished run (`--report`) are skipped, and
the test says which.
"""

from __future__ import annotations

import re
import shlex
import shutil

import pytest
from conftest import ROOT, copy_workflow, run_snakemake

README = (ROOT / "README.md").read_text()


def _blocks(lang: str) -> list[str]:
    return re.findall(rf"^```{lang}\n(.*?)^```", README, re.M | re.S)


def _commands() -> list[tuple[str, str]]:
    """(command, comment) of every snakemake line, continuation lines joined."""
    out = []
    for block in _blocks("bash"):
        for line in block.replace("\\\n", " ").splitlines():
            cmd, _, comment = line.partition("#")
            if cmd.strip().startswith("snakemake"):
                out.append((" ".join(cmd.split()), comment.strip()))
    return out


def _stated_jobs(comment: str) -> int | None:
    m = re.search(r"(\d+) jobs? on a fresh checkout", comment) or re.search(
        r"\((\d+) jobs?[;)]", comment
    )
    return int(m.group(1)) if m else None


COMMANDS = _commands()
SKIP = ("/data/", "<", "--report")


def test_the_readme_has_commands_with_counts():
    assert len(COMMANDS) >= 6
    assert sum(_stated_jobs(c) is not None for _, c in COMMANDS) >= 5


@pytest.fixture(scope="module")
def checkout(tmp_path_factory):
    """What a fresh clone has: the workflow and the committed references (with a reference of
    its config, the default target ends with `verify`)."""
    work = copy_workflow(tmp_path_factory.mktemp("readme"))
    shutil.copytree(ROOT / "results/reference", work / "results/reference")
    return work


@pytest.mark.parametrize(("cmd", "comment"), COMMANDS, ids=[c for c, _ in COMMANDS])
def test_readme_command_dry_runs_with_its_job_count(cmd, comment, checkout):
    if any(s in cmd for s in SKIP):
        pytest.skip("needs local data or a finished run")
    args = shlex.split(cmd)[1:]
    r = run_snakemake(checkout, "-n", *args)
    out = r.stdout + r.stderr
    m = re.search(r"^total\s+(\d+)$", out, re.M)
    scheduled = int(m.group(1)) if m else 0
    assert scheduled > 0 or "Nothing to be done" in out, out[-3000:]
    expected = _stated_jobs(comment)
    if expected is not None:
        assert scheduled == expected, f"README says {expected} jobs for `{cmd}`, it is {scheduled}"


def test_readme_python_example_runs(capsys):
    (block,) = _blocks("python")
    exec(compile(block, "README.md", "exec"), {})
    assert "AUROC" in capsys.readouterr().out
