"""The repository stands alone: no reference to material outside it, no machine path.

Every text file git tracks (code, configs, docs, tests) is searched for references to a
document that is not in the repository ("spec 4.4"-style section numbers, ``../shared``) and
for absolute paths of a build machine (``/work/...``, ``/home/<user>``). Documented
placeholders such as ``/data/imagenet_ssb`` or ``/models/...`` are fine.
"""

from __future__ import annotations

import re
import subprocess

import pytest
from conftest import ROOT

FORBIDDEN = [
    (re.compile(r"\bspec \d+(\.\d+)?\b", re.I), "a section of a document outside the repository"),
    (
        re.compile(r"\b(spec|design) sections? \d", re.I),
        "a section of a document outside the repository",
    ),
    (re.compile(r"\.\./shared\b"), "a folder outside the repository"),
    (re.compile(r"(?<![\w.])/work/"), "a build machine's path"),
    (re.compile(r"(?<![\w.])/home/\w"), "a user's home folder"),
]
TEXT = (".py", ".smk", ".md", ".yaml", ".yml", ".toml", ".rst", ".sh", ".txt", ".cfg")


def _tracked() -> list[str]:
    try:
        out = subprocess.run(
            ["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.split()
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    names = [n for n in out if n.endswith(TEXT) or n in ("Snakefile", "Makefile", ".ci/run")]
    return [n for n in names if n != "tests/test_standalone_docs.py"]


def test_no_reference_outside_the_repository():
    problems = []
    for name in _tracked():
        path = ROOT / name
        if not path.is_file():
            continue
        for lineno, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            for pattern, what in FORBIDDEN:
                if pattern.search(line):
                    problems.append(f"{name}:{lineno}: {what}: {line.strip()[:90]}")
    assert not problems, "\n".join(problems)


def test_method_doc_anchors_referenced_in_the_code_exist():
    """Every docs/method.md#anchor named in the repository is an anchor of docs/method.md."""
    anchors = set(re.findall(r'<a id="([a-z0-9-]+)"></a>', (ROOT / "docs/method.md").read_text()))
    used = set()
    for name in _tracked():
        path = ROOT / name
        if path.is_file():
            used |= set(re.findall(r"method\.md#([a-z0-9-]+)", path.read_text(errors="replace")))
    assert used, "no reference to docs/method.md"
    assert used <= anchors, sorted(used - anchors)
