"""Hostile inputs: configs that are code or bombs, bad caches, colliding names, leftovers.

Each test asserts the exact behaviour: a one-line message naming the file/key and what is
wrong, or a correct result. The families:

- configs are data: YTE templates refused before Snakemake loads them, size/nesting bounded,
  ids bounded by file-name limits, split fractions that empty a split rejected by key;
- inputs validated at the door (``sure_ood.inputs``): dtype kinds, label range, train/test
  agreement on D and C, non-finite training rows, colliding split names, ``--out`` among the
  inputs, unreadable files;
- writes (``sure_ood.io.atomic_path``): no temp file left on SIGTERM or after SIGKILL + rerun,
  the caller's umask, disk-full / read-only errors naming the file, byte-identical outputs.
"""

from __future__ import annotations

import copy
import subprocess
import sys
import textwrap

import pytest
import yaml
from conftest import ROOT, copy_workflow, run_snakemake

from sure_ood.config import ConfigError, check_config, load_schema, validate_config
from sure_ood.trust import (
    ALLOW_YTE_ENV,
    MAX_CONFIG_DEPTH,
    ConfigTrustError,
    check_config_file,
    check_config_tree,
)

SCHEMA = load_schema(ROOT / "workflow/schemas/config.schema.yaml")
DIGITS = (ROOT / "config/digits_osr.yaml").read_text()
BASE = yaml.safe_load(DIGITS)

# a config whose one templated value would create a marker file when rendered
YTE_PAYLOAD = "?__import__('pathlib').Path('{marker}').touch() or 'digits_osr'"


def _yte_config(marker) -> str:
    payload = YTE_PAYLOAD.format(marker=marker)
    return DIGITS.replace(
        "benchmark:\n  name: digits_osr", f'__use_yte__: true\nbenchmark:\n  name: "{payload}"'
    )


def _alias_bomb(levels: int = 30, width: int = 2) -> str:
    """``l0: [x, x]``, ``l1: [*l0, *l0]``, ...: a few hundred bytes, 2**levels values."""
    items = ", ".join(["x"] * width)
    parts = [f"l0: &l0 [{items}]"]
    for i in range(1, levels):
        refs = ", ".join([f"*l{i - 1}"] * width)
        parts.append(f"l{i}: &l{i} [{refs}]")
    return DIGITS.replace("init_values: 0}", "init_values: 0, bomb: {" + ", ".join(parts) + "}}")


# ---- configs are data ----------------------------------------------------------------------
def test_yte_template_is_refused_naming_the_file(tmp_path, monkeypatch):
    monkeypatch.delenv(ALLOW_YTE_ENV, raising=False)
    marker = tmp_path / "pwned"
    cfg = tmp_path / "evil.yaml"
    cfg.write_text(_yte_config(marker))
    with pytest.raises(ConfigTrustError, match=r"evil\.yaml: __use_yte__: true - this config is a"):
        check_config_file(cfg)
    assert not marker.exists()


def test_yte_opt_in_is_explicit(tmp_path, monkeypatch):
    cfg = tmp_path / "templated.yaml"
    cfg.write_text(_yte_config(tmp_path / "marker"))
    monkeypatch.setenv(ALLOW_YTE_ENV, "1")
    check_config_file(cfg)  # allowed: the user opted in
    monkeypatch.setenv(ALLOW_YTE_ENV, "yes")  # only "1" opts in
    with pytest.raises(ConfigTrustError, match="__use_yte__"):
        check_config_file(cfg)


@pytest.mark.workflow
@pytest.mark.parametrize("profile", [[], ["--workflow-profile", "workflow/profiles/local"]])
def test_snakemake_dry_run_never_renders_a_yte_config(tmp_path, profile):
    """The payload would create a marker file: under `snakemake -n`, with the default or the
    local workflow profile, it is refused before Snakemake loads the file."""
    work = copy_workflow(tmp_path / "wf")
    marker = tmp_path / "pwned"
    (work / "config/evil.yaml").write_text(_yte_config(marker))
    r = run_snakemake(work, "-n", *profile, "--configfile", "config/evil.yaml", check=False)
    assert r.returncode != 0
    out = r.stdout + r.stderr
    assert "config/evil.yaml: __use_yte__: true - this config is a YTE template" in out
    assert not marker.exists(), "the config's template ran"


def test_yte_is_off_after_the_guard(tmp_path):
    """After the profiles' guard, a templated file that reaches YTE by any route is refused
    (checked in a fresh process: the guard changes process-wide state)."""
    marker = tmp_path / "pwned"
    code = textwrap.dedent(
        f"""
        import yte, sure_ood.trust
        sure_ood.trust.guard_snakemake_command(["-n"])
        try:
            yte.process_yaml({_yte_config(marker)!r}, require_use_yte=True)
        except Exception as e:
            print("REFUSED", type(e).__name__, e)
        """
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "REFUSED" in r.stdout and "configs are data here" in r.stdout, r.stdout + r.stderr
    assert not marker.exists()


def test_alias_bomb_is_refused_before_anything_expands_it(tmp_path):
    cfg = tmp_path / "bomb.yaml"
    cfg.write_text(_alias_bomb(levels=30))
    with pytest.raises(ConfigTrustError, match=r"bomb\.yaml: models\.deit3_micro\.timm_kwargs"):
        check_config_file(cfg)
    # wide and shallow: bounded by the number of values, not by depth
    cfg.write_text(_alias_bomb(levels=6, width=10))
    with pytest.raises(ConfigTrustError, match=r"expands to more than 100000 values"):
        check_config_file(cfg)
    # the loaded (shared-object) form is bounded the same way
    bomb = yaml.safe_load(_alias_bomb(levels=6, width=10))
    with pytest.raises(ConfigTrustError, match=r"config: the config expands to more than"):
        check_config_tree(bomb)


def test_deep_nesting_and_huge_files_are_refused(tmp_path):
    deep = {"a": 1}
    for _ in range(MAX_CONFIG_DEPTH + 1):
        deep = {"k": deep}
    with pytest.raises(ConfigTrustError, match=r"nested more than 32 levels"):
        check_config_tree({"models": deep})
    big = tmp_path / "big.yaml"
    big.write_text("# " + "x" * (1 << 20) + "\n" + DIGITS)
    with pytest.raises(ConfigTrustError, match=r"big\.yaml: config file of \d+ bytes"):
        check_config_file(big)
    check_config_file(ROOT / "config/digits_osr.yaml")  # the shipped configs pass
    check_config_tree(BASE)


@pytest.mark.workflow
def test_snakemake_refuses_an_alias_bomb_fast(tmp_path):
    work = copy_workflow(tmp_path / "wf")
    (work / "config/bomb.yaml").write_text(_alias_bomb())
    r = run_snakemake(work, "-n", "--configfile", "config/bomb.yaml", check=False, timeout=120)
    assert r.returncode != 0
    assert "config/bomb.yaml: models.deit3_micro.timm_kwargs.bomb" in r.stdout + r.stderr
    # without the profile the Snakefile's own check stops it
    r = run_snakemake(
        work, "-n", "--workflow-profile", "none", "--configfile", "config/bomb.yaml",
        check=False, timeout=120,
    )  # fmt: skip
    assert r.returncode != 0 and "models.deit3_micro.timm_kwargs.bomb" in r.stdout + r.stderr


def _validated(cfg: dict) -> None:
    from snakemake.utils import validate

    validate_config(cfg, SCHEMA)
    validate(cfg, str(ROOT / "workflow/schemas/config.schema.yaml"))
    check_config(cfg)


def test_a_300_character_row_id_is_refused_at_validation():
    cfg = copy.deepcopy(BASE)
    rows = cfg["tables"]["posthoc"]["rows"]
    rows["r" * 300] = rows.pop("msp")
    with pytest.raises(ConfigError) as e:
        _validated(cfg)
    msg = str(e.value)
    assert msg.startswith(f"tables.posthoc.rows.{'r' * 40}...: 300 characters, more than 64;")
    assert "at most 64 characters" in msg and len(msg) < 300


def test_a_test_model_id_too_long_for_a_file_name_is_refused():
    cfg = copy.deepcopy(BASE)
    cfg["tables"]["posthoc"]["rows"]["msp"]["seeds"] = list(range(100))
    with pytest.raises(ConfigError, match=r"^tables\.posthoc\.rows\.msp\.seeds: the test-model "):
        _validated(cfg)


@pytest.mark.parametrize(
    "key, value, pattern",
    [
        ("id_test", 0.001, r"^benchmark\.split\.id_test: 0\.001 leaves a split without"),
        ("ood_fraction", 0.999, r"^benchmark\.ood_fraction: 0\.999 leaves a split without"),
    ],
)
def test_split_fractions_that_empty_a_split_are_refused_by_key(key, value, pattern):
    cfg = copy.deepcopy(BASE)
    if key == "ood_fraction":
        cfg["benchmark"]["ood_fraction"] = value
    else:
        cfg["benchmark"]["split"][key] = value
    with pytest.raises(ConfigError, match=pattern):
        _validated(cfg)


def test_small_but_sufficient_fractions_pass():
    cfg = copy.deepcopy(BASE)
    cfg["benchmark"]["split"]["val"] = 0.02  # ~3 images per class: small, not empty
    _validated(cfg)
