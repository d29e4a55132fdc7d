"""Ecosystem conventions that can be checked offline.

- envs/sure-ood.yaml works from Snakemake's copy of it: every relative path in it resolves, from
  the copy's folder (<workdir>/.snakemake/conda/), to this repository's package; its pins are
  pyproject's;
- plain `snakemake` picks up the default profile;
- a LICENSE file matching pyproject's license;
- finished checkpoints are protected();
- the Snakemake workflow catalog's metadata file names files that exist.
"""

from __future__ import annotations

import re
import tomllib

import yaml
from conftest import ROOT, copy_workflow, run_snakemake

PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def _pip_lines() -> list[str]:
    env = yaml.safe_load((ROOT / "envs/sure-ood.yaml").read_text())
    (pip,) = [d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d]
    return pip


def test_env_file_paths_resolve_from_snakemakes_copy(tmp_path):
    work = copy_workflow(tmp_path / "work")
    for name in ("pyproject.toml", "src"):  # what a checkout has at its root
        (work / name).symlink_to(ROOT / name)
    copy_dir = work / ".snakemake" / "conda"  # where Snakemake writes <hash>.yaml
    copy_dir.mkdir(parents=True)
    paths = [
        line.removeprefix("-e").strip()
        for line in _pip_lines()
        if line.startswith(("-e", ".", "/"))
    ]
    assert paths, "the env file installs no local package"
    for rel in paths:
        assert not rel.startswith("/"), f"absolute path {rel} in envs/sure-ood.yaml"
        target = (copy_dir / rel).resolve()
        pyproject = tomllib.loads((target / "pyproject.toml").read_text())
        assert pyproject["project"]["name"] == "sure-ood", target


def test_env_file_pins_are_pyprojects():
    pins = {line for line in _pip_lines() if "==" in line}
    assert pins == set(PYPROJECT["project"]["dependencies"]) - {
        d for d in PYPROJECT["project"]["dependencies"] if d.startswith("snakemake-executor")
    }


def test_license_file_matches_pyproject():
    text = (ROOT / "LICENSE").read_text()
    assert text.startswith("MIT License") and PYPROJECT["project"]["license"]["text"] == "MIT"


def test_plain_snakemake_uses_the_default_profile(tmp_path):
    work = copy_workflow(tmp_path / "work")
    r = run_snakemake(work, "-n", "--configfile", "config/digits_osr.yaml")
    assert "Using workflow specific profile profiles/default" in r.stdout + r.stderr


def test_final_checkpoints_are_protected():
    text = (ROOT / "workflow/rules/finalize_swa.smk").read_text()
    output = text.split("output:")[1].split("log:")[0]
    assert re.search(r"protected\(\s*f\"\{OUT\}/runs/.*final\.safetensors\"", output), output


def test_workflow_catalog_metadata():
    meta = yaml.safe_load((ROOT / ".snakemake-workflow-catalog.yml").read_text())
    usage = meta["usage"]
    assert "--configfile" in usage["mandatory-flags"]["flags"]
    assert usage["software-stack-deployment"]["conda"] is True  # envs/sure-ood.yaml
    assert usage["report"] is True  # workflow/report/
    # the catalog's usage conventions: config/ with config.yaml and README.md, a LICENSE
    for name in ("config/config.yaml", "config/README.md", "LICENSE", "envs/sure-ood.yaml"):
        assert (ROOT / name).is_file(), name


def test_posthoc_tables_use_the_model_with_its_final_layernorm():
    """As the published post-hoc table: its RP+GradNorm row is the tricks table's `sure` row."""
    from sure_ood.config import resolve_row, row_test_models

    for name in ("config.yaml", "digits_osr.yaml"):
        cfg = yaml.safe_load((ROOT / "config" / name).read_text())

        def test_model(table, row, cfg=cfg):
            return [tm.id for tm in row_test_models(resolve_row(cfg, table, row), 0)]

        assert test_model("posthoc", "rp_gradnorm") == test_model("tricks", "sure"), name
        assert not any(tm.endswith("-noln") for tm in test_model("posthoc", "msp")), name
