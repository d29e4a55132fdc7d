"""Reruns: the same config gives the same tables; an edit reruns exactly what it touches.

- two runs of the digits_osr workflow from scratch give byte-identical tables (CPU);
- editing one scoring method's hyper-parameters reruns that method's score jobs and what
  depends on them, nothing else;
- editing a stage's package code reruns that stage (each rule has a ``code`` param, the hash of
  the package modules the stage runs); comments, docstrings and formatting do not count.

The edits are checked with ``snakemake -n`` on a copy of the session's full run (results and
``.snakemake`` metadata), so the shared run itself is never touched.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from conftest import BIN, ROOT, copy_workflow, run_snakemake, snakemake_env

from sure_ood.code_version import code_version, method_code_version

CONFIG = "config/digits_osr.yaml"
UPSTREAM = {
    "prepare_data", "prepare_data_ood", "train", "finalize_swa", "make_test_model", "extract"
}  # fmt: skip


def _copy_run(src: Path, dest: Path) -> Path:
    """A copy of a finished run, metadata and modification times included."""
    shutil.copytree(src, dest, symlinks=True, ignore=shutil.ignore_patterns("locks", "log"))
    return dest


def _up_to_date_copy(src: Path, dest: Path, env: dict | None = None) -> Path:
    """A copy of the session's run, checked to be up to date before the test edits it.

    The package code is part of every job's params: if someone edited it since the run was
    made (a shared working tree), everything is rightly out of date and the test cannot say
    anything, so it is skipped (test_nothing_to_do_after_a_full_run fails loudly then).
    """
    work = _copy_run(src, dest)
    jobs = _dry_run(work, env)
    if jobs:
        pytest.skip(f"the package changed since the session's run: {len(jobs)} jobs to rerun")
    return work


def _dry_run(work: Path, env: dict | None = None) -> list[tuple[str, str]]:
    """(rule, first output) of every job ``snakemake -n`` would run."""
    cmd = [str(BIN / "snakemake"), "-n", "--configfile", CONFIG]
    r = subprocess.run(
        cmd, cwd=work, env=env or snakemake_env(), capture_output=True, text=True, timeout=600
    )
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-4000:]
    jobs = []
    for m in re.finditer(r"^(?:local)?rule (\w+):\n((?:    .*\n)*)", out, re.M):
        o = re.search(r"^    output: ([^,\n]+)", m.group(2), re.M)
        jobs.append((m.group(1), o.group(1).strip() if o else ""))
    if not jobs:
        assert "Nothing to be done" in out, out[-4000:]
    return jobs


@pytest.mark.workflow
def test_two_runs_from_scratch_give_identical_tables(digits_run, tmp_path):
    work = copy_workflow(tmp_path / "second")
    run_snakemake(work, "--cores", "2", "--configfile", CONFIG, timeout=3600)
    first, second = digits_run / "results/digits_osr", work / "results/digits_osr"
    tables = sorted(p.relative_to(first) for p in (first / "tables").glob("*.csv"))
    assert tables, "no table in the first run"
    assert tables == sorted(p.relative_to(second) for p in (second / "tables").glob("*.csv"))
    for t in tables:
        assert (first / t).read_bytes() == (second / t).read_bytes(), f"{t} differs"
        md = t.with_suffix(".md")
        assert (first / md).read_bytes() == (second / md).read_bytes(), f"{md} differs"


@pytest.mark.workflow
def test_editing_a_method_reruns_only_its_jobs(digits_run, tmp_path):
    work = _up_to_date_copy(digits_run, tmp_path / "run")
    cfg = yaml.safe_load((work / CONFIG).read_text())
    rows = [
        (t, r) for t, tab in cfg["tables"].items() for r in tab["rows"]
        if {**tab.get("defaults", {}), **tab["rows"][r]}.get("method") == "energy"
    ]  # fmt: skip
    assert rows, "the digits config has no energy row any more"
    cfg.setdefault("methods", {})["energy"] = {"method": "energy", "params": {"temperature": 2.0}}
    (work / CONFIG).write_text(yaml.safe_dump(cfg, sort_keys=False))

    jobs = _dry_run(work)
    rules = {rule for rule, _ in jobs}
    assert rules <= {"score", "fuse", "evaluate", "histogram", "table", "claims", "all"}, jobs
    scores = [o for rule, o in jobs if rule == "score"]
    assert scores and all("/method~energy/" in o for o in scores), scores
    for rule in ("fuse", "evaluate"):  # a one-view row may have no fuse job
        outs = [o for r, o in jobs if r == rule]
        assert outs or rule == "fuse", (rule, jobs)
        assert all(any(f"/{t}/{r}" in o for t, r in rows) for o in outs), (rule, outs)
    assert {Path(o).stem for r, o in jobs if r == "table"} == {t for t, _ in rows}
    # one histogram job per table (figures/<table>/ holds every row's PNG)
    assert {Path(o).name for r, o in jobs if r == "histogram"} == {t for t, _ in rows}


@pytest.mark.workflow
def test_editing_a_stage_code_reruns_that_stage(digits_run, tmp_path):
    src = tmp_path / "src"
    shutil.copytree(ROOT / "src/sure_ood", src / "sure_ood", ignore=shutil.ignore_patterns("*.pyc"))
    env = snakemake_env()
    env["PYTHONPATH"] = f"{src}{os.pathsep}{env.get('PYTHONPATH', '')}"
    work = _up_to_date_copy(digits_run, tmp_path / "run", env)
    score_py = src / "sure_ood/stages/score.py"
    text = score_py.read_text()

    # comments, docstrings and formatting are not code: nothing to do
    edited = text.replace('"""', '"""Edited docstring. ', 1) + "\n# a comment\n\n\n"
    score_py.write_text(edited)
    assert _dry_run(work, env) == []

    # a code change reruns every score job and what depends on them, nothing upstream
    score_py.write_text(text + "\nSCORE_CODE_EDITED = True\n")
    jobs = _dry_run(work, env)
    rules = {rule for rule, _ in jobs}
    assert "score" in rules and not rules & UPSTREAM, sorted(rules)
    done = {str(p.relative_to(work)) for p in (work / "results").rglob("scores/**/scores.parquet")}
    assert {o for r, o in jobs if r == "score"} == done


@pytest.mark.workflow
@pytest.mark.parametrize(
    ("edited", "methods", "odin_jobs"),
    [
        ("scores/msp.py", {"msp"}, False),
        # ODIN's scorer module: the odin rule's jobs and the two methods that read its scores
        ("scores/odin.py", {"odin", "rw_odin"}, True),
    ],
)
def test_editing_one_method_module_reruns_only_its_jobs(
    digits_run, tmp_path, edited, methods, odin_jobs
):
    """A dry run after editing one scorer module schedules that method's score jobs (and
    what depends on them), no other method's, and the odin rule only for ODIN's module."""
    from sure_ood.config import method_config

    src = tmp_path / "src"
    shutil.copytree(ROOT / "src/sure_ood", src / "sure_ood", ignore=shutil.ignore_patterns("*.pyc"))
    env = snakemake_env()
    env["PYTHONPATH"] = f"{src}{os.pathsep}{env.get('PYTHONPATH', '')}"
    work = _up_to_date_copy(digits_run, tmp_path / "run", env)
    module = src / "sure_ood" / edited
    module.write_text(module.read_text() + "\nMETHOD_CODE_EDITED = True\n")

    jobs = _dry_run(work, env)
    rules = {rule for rule, _ in jobs}
    assert not rules & UPSTREAM, sorted(rules)
    assert ("odin" in rules) is odin_jobs, sorted(rules)
    cfg = yaml.safe_load((work / CONFIG).read_text())

    def method_of(out: str) -> str:
        method_id = re.search(r"/method~([^/]+)/", out).group(1)
        return method_config(cfg, method_id)["method"]

    scheduled = {o for r, o in jobs if r == "score"}
    assert scheduled and {method_of(o) for o in scheduled} == methods, sorted(scheduled)
    done = {
        str(p.relative_to(work))
        for p in (work / "results").rglob("scores/**/scores.parquet")
        if method_of(str(p)) in methods
    }
    assert scheduled == done  # every one of its jobs, none of another method's


# ---- code_version on copies of the package (no Snakemake) ----------------------------------
@pytest.fixture
def package_copy(tmp_path):
    def make(name: str, edit=None) -> Path:
        root = tmp_path / name
        shutil.copytree(ROOT / "src/sure_ood", root / "sure_ood")
        if edit:
            edit(root / "sure_ood")
        return root

    return make


def _append(rel: str, text: str):
    def edit(pkg: Path) -> None:
        f = pkg / rel
        f.write_text(f.read_text() + text)

    return edit


@pytest.mark.parametrize(
    ("edited", "stage", "changes"),
    [
        ("stages/score.py", "score", True),
        ("metrics.py", "evaluate", True),  # imported by evaluate (inside a function)
        ("cache.py", "score", True),  # imported by score
        ("scores/msp.py", "score", True),  # registered by the scores package
        ("stages/train.py", "evaluate", False),  # not run by evaluate
        ("stages/histogram.py", "score", False),
        # the CLI reads job files for every stage: that must not pull the registry in
        ("scores/msp.py", "train", False),
        ("scores/msp.py", "extract", False),
        # the odin stage imports ODIN's module, not the registry: only ODIN's code counts
        ("scores/odin.py", "odin", True),
        ("stages/odin.py", "odin", True),
        ("scores/scorer.py", "odin", True),  # the Scorer class scores/odin.py imports
        ("scores/msp.py", "odin", False),  # another method
        ("scores/__init__.py", "odin", False),  # the list of built-in methods
    ],
)
def test_code_version_follows_the_modules_a_stage_imports(package_copy, edited, stage, changes):
    base = package_copy("base")
    new = package_copy("new", _append(edited, "\nEDITED = 1\n"))
    assert (code_version(stage, base) != code_version(stage, new)) is changes


@pytest.mark.parametrize(
    ("edited", "method", "changes"),
    [
        ("scores/msp.py", "msp", True),
        ("scores/msp.py", "energy", False),  # another method's module
        ("scores/__init__.py", "energy", False),  # the list of built-in methods
        ("scores/numeric.py", "energy", True),  # shared helpers it imports
        ("scores/scorer.py", "energy", True),  # the Scorer class and the registry
        ("scores/geometry.py", "energy", False),  # head geometry: energy reads logits only
        ("scores/odin.py", "rw_odin", True),  # imported by rw_odin
        ("scores/odin.py", "odin", True),
        ("scores/odin.py", "energy", False),
        ("stages/odin.py", "odin", False),  # the odin rule's code: its outputs rerun this job
        ("stages/score.py", "energy", True),  # the stage itself
    ],
)
def test_method_code_version_follows_only_its_method(package_copy, edited, method, changes):
    """A score job's code version covers the stage and its own method, not the others."""
    base = package_copy("base")
    new = package_copy("new", _append(edited, "\nEDITED = 1\n"))
    module = f"sure_ood.scores.{method}"
    assert (method_code_version(module, base) != method_code_version(module, new)) is changes


def test_adding_a_method_changes_no_existing_code_version(package_copy):
    """A new built-in method (its module and its line in the scores package) reruns nothing
    that exists: no stage's version but the registry-wide ``score`` one, no method's version."""

    def add_method(pkg: Path) -> None:
        (pkg / "scores/new_method.py").write_text(
            "from sure_ood.scores.scorer import Scorer, register\n\n\n"
            "@register\nclass NewMethod(Scorer):\n    name = 'new_method'\n"
        )
        init = pkg / "scores/__init__.py"
        init.write_text(init.read_text().replace("    msp,\n", "    msp,\n    new_method,\n", 1))

    base, new = package_copy("base"), package_copy("new", add_method)
    assert "new_method" in (new / "sure_ood/scores/__init__.py").read_text()
    stages = sorted(p.stem for p in (base / "sure_ood/stages").glob("[a-z]*.py"))
    changed = [s for s in stages if code_version(s, base) != code_version(s, new)]
    assert changed == ["score"]  # the registry-wide version (no rule uses it), nothing else
    methods = sorted(p.stem for p in (base / "sure_ood/scores").glob("*.py"))
    methods = [
        m for m in methods if "\n@register\n" in (base / f"sure_ood/scores/{m}.py").read_text()
    ]
    assert {"msp", "odin", "rw_odin", "energy", "gradnorm_closed"} <= set(methods)
    for m in methods:
        module = f"sure_ood.scores.{m}"
        assert method_code_version(module, base) == method_code_version(module, new), m


def test_code_version_ignores_comments_docstrings_and_formatting(package_copy):
    def edit(pkg: Path) -> None:
        f = pkg / "stages/score.py"
        text = f.read_text().replace('"""', '"""Reworded. ', 1)
        f.write_text("# a new comment\n" + text.replace("\n\n\n", "\n\n\n\n") + "\n# end\n")

    base, new = package_copy("base"), package_copy("new", edit)
    assert code_version("score", base) == code_version("score", new)


def test_every_rule_has_its_code_version_param():
    for smk in sorted((ROOT / "workflow/rules").glob("*.smk")):
        if smk.stem == "common":
            continue
        text = smk.read_text()
        # `rule NAME:`, or an indented `rule:` with a `name:` (extract.smk defines its rules in
        # a loop, one body)
        rules = re.findall(r"^[ ]*rule(?: (\w+))?:\n(.*?)(?=^[ ]*rule[ :]|\Z)", text, re.M | re.S)
        assert rules, smk.name
        for rule, body in rules:
            # the stage the rule's command runs (write_reference runs `sure-ood verify`)
            stage = (re.findall(r"sure-ood (\w+)", body) or [rule])[0]
            # score: per method (get_score_code -> method_code_version)
            version = "code=get_score_code" if rule == "score" else f'code=code_version("{stage}")'
            assert version in body, f"{smk.name}: rule {rule}"
