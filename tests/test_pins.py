"""The package pins agree across pyproject.toml, requirements.txt and envs/sure-ood.yaml.

The rule, read off the three files' own roles:

- every entry is an exact pin ``name==version`` (names compared after PEP 503 normalisation);
- requirements.txt (what ``make`` installs: runtime + tests and tooling) pins exactly the
  packages of pyproject's ``dependencies`` plus its ``test`` extra, at the same versions;
- envs/sure-ood.yaml (the conda environment of every rule's job) pins exactly pyproject's
  runtime ``dependencies``, at the same versions, except the packages in ``NOT_IN_JOB_ENV``
  (each with its reason); no test tooling (jobs run no tests). Its python satisfies
  pyproject's ``requires-python``.

A failure names the package and the files that disagree. Each check also runs on a
deliberately broken copy of the files, so it is known to fail when it should.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
import yaml
from conftest import ROOT
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name

# pyproject runtime dependencies that a job's environment does not need, and why.
NOT_IN_JOB_ENV = {
    "snakemake-executor-plugin-slurm": "submits jobs to SLURM: the Snakemake that launches the "
    "workflow needs it, not the environment a job runs in",
}


def _pins(lines: list[str], where: str) -> dict[str, str]:
    """``{normalised name: version}`` of requirement lines; a non-exact pin is an error."""
    pins: dict[str, str] = {}
    for line in lines:
        req = Requirement(line)
        specs = list(req.specifier)
        if len(specs) != 1 or specs[0].operator != "==":
            raise AssertionError(f"{where}: {line!r} is not an exact pin (name==version)")
        name = canonicalize_name(req.name)
        if name in pins:
            raise AssertionError(f"{where}: {req.name} is pinned twice")
        pins[name] = specs[0].version
    return pins


def read_pins(root: Path) -> dict[str, dict[str, str]]:
    """The pins of each file (pyproject split into runtime and test), by file label."""
    pyproject = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    req_lines = [
        s
        for line in (root / "requirements.txt").read_text().splitlines()
        if (s := line.split("#", 1)[0].strip())
    ]
    env = yaml.safe_load((root / "envs/sure-ood.yaml").read_text())
    (pip,) = [d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d]
    local = ("-e", ".", "/")  # the package itself, installed from the checkout
    return {
        "pyproject.toml [dependencies]": _pins(pyproject["dependencies"], "pyproject.toml"),
        "pyproject.toml [test]": _pins(
            pyproject["optional-dependencies"]["test"], "pyproject.toml [test]"
        ),
        "requirements.txt": _pins(req_lines, "requirements.txt"),
        "envs/sure-ood.yaml": _pins(
            [p for p in pip if not p.startswith(local)], "envs/sure-ood.yaml"
        ),
    }


def disagreements(root: Path) -> list[str]:
    """Every pin that differs between the files, and every package missing from a file that
    should pin it, one message each."""
    pins = read_pins(root)
    runtime, test = pins["pyproject.toml [dependencies]"], pins["pyproject.toml [test]"]
    problems = []
    expected = {
        "requirements.txt": {**runtime, **test},
        "envs/sure-ood.yaml": {k: v for k, v in runtime.items() if k not in NOT_IN_JOB_ENV},
    }
    for label, want in expected.items():
        have, left_out = pins[label], NOT_IN_JOB_ENV if label.startswith("envs") else {}
        for name in sorted(want.keys() | have.keys()):
            if name not in have:
                problems.append(
                    f"{name}: pinned in pyproject.toml ({want[name]}), missing from {label}"
                )
            elif name in left_out:
                problems.append(f"{name}: pinned in {label}, which NOT_IN_JOB_ENV leaves out")
            elif name not in want:
                source = "pyproject.toml" + (" [dependencies]" if label.startswith("envs") else "")
                problems.append(f"{name}: pinned in {label} ({have[name]}), not in {source}")
            elif have[name] != want[name]:
                problems.append(
                    f"{name}: {want[name]} in pyproject.toml but {have[name]} in {label}"
                )
    return problems


def test_pins_agree_across_the_three_files():
    assert disagreements(ROOT) == []


def test_the_job_env_python_satisfies_requires_python():
    env = yaml.safe_load((ROOT / "envs/sure-ood.yaml").read_text())
    (python,) = [d for d in env["dependencies"] if isinstance(d, str) and d.startswith("python")]
    version = python.split("=", 1)[1]
    requires = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    assert version in SpecifierSet(requires), f"envs/sure-ood.yaml: {python} vs {requires}"


def test_every_exception_is_a_runtime_dependency():
    """An exception for a package pyproject does not pin would hide nothing: drop it."""
    runtime = read_pins(ROOT)["pyproject.toml [dependencies]"]
    assert set(NOT_IN_JOB_ENV) <= set(runtime)


def _copy(tmp_path: Path) -> Path:
    for name in ("pyproject.toml", "requirements.txt", "envs/sure-ood.yaml"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text((ROOT / name).read_text())
    return tmp_path


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} not in {path.name}: update this test"
    path.write_text(text.replace(old, new, 1))


@pytest.mark.parametrize(
    "file, old, new, message",
    [
        (
            "requirements.txt",
            "\nnumpy==",
            "\nnumpy==0.0.0\nnumpy==",
            "requirements.txt: numpy is pinned twice",
        ),
        (
            "envs/sure-ood.yaml",
            "      - pandas==",
            "      - pandas>=",
            "envs/sure-ood.yaml: 'pandas>=",
        ),
        ("pyproject.toml", '"ruff==', '"ruff>=', "pyproject.toml [test]: 'ruff>="),
    ],
)
def test_malformed_pins_are_refused(tmp_path, file, old, new, message):
    root = _copy(tmp_path)
    _edit(root / file, old, new)
    with pytest.raises(AssertionError, match=re.escape(message)):
        disagreements(root)


def test_a_differing_or_missing_pin_is_named_with_its_files(tmp_path):
    root = _copy(tmp_path)
    runtime = read_pins(ROOT)["pyproject.toml [dependencies]"]
    _edit(root / "envs/sure-ood.yaml", f"torch=={runtime['torch']}", "torch==0.0.1")
    _edit(root / "requirements.txt", f"tqdm=={runtime['tqdm']}\n", "")
    _edit(root / "requirements.txt", "\n# tests and tooling", "\nrich==1.0.0\n# tests and tooling")
    _edit(root / "envs/sure-ood.yaml", "      - -e ", "      - pytest==9.2.0\n      - -e ")
    slurm = f"snakemake-executor-plugin-slurm=={runtime['snakemake-executor-plugin-slurm']}"
    _edit(root / "envs/sure-ood.yaml", "      - -e ", f"      - {slurm}\n      - -e ")
    assert sorted(disagreements(root)) == sorted(
        [
            f"torch: {runtime['torch']} in pyproject.toml but 0.0.1 in envs/sure-ood.yaml",
            f"tqdm: pinned in pyproject.toml ({runtime['tqdm']}), missing from requirements.txt",
            "rich: pinned in requirements.txt (1.0.0), not in pyproject.toml",
            "pytest: pinned in envs/sure-ood.yaml (9.2.0), not in pyproject.toml [dependencies]",
            "snakemake-executor-plugin-slurm: pinned in envs/sure-ood.yaml, which NOT_IN_JOB_ENV "
            "leaves out",
        ]
    )
