"""Malformed configs are rejected before any job runs, with the key path in the message.

Most cases are unit tests of the two layers the Snakefile runs first: the JSON schema
(``sure_ood.config.validate_config``, which reports every violation by key path) and the
semantic checks (``sure_ood.config.check_config``). A handful are real ``snakemake -n`` runs
in a temporary copy of the workflow, proving the message reaches the user and no job ran.
"""

from __future__ import annotations

import copy
import re

import pytest
import yaml
from conftest import ROOT, copy_workflow, run_snakemake

from sure_ood.config import ConfigError, check_config, load_schema, validate_config

SCHEMA = load_schema(ROOT / "workflow/schemas/config.schema.yaml")
BASE = yaml.safe_load((ROOT / "config/digits_osr.yaml").read_text())


def _check(cfg: dict, base_dir=None) -> None:
    """What the Snakefile does: schema (with key paths), Snakemake's defaults, semantics."""
    from snakemake.utils import validate

    validate_config(cfg, SCHEMA)
    validate(cfg, str(ROOT / "workflow/schemas/config.schema.yaml"))  # fills the defaults
    check_config(cfg, base_dir=base_dir)


def _set(cfg: dict, dotted: str, value) -> None:
    *parents, last = dotted.split(".")
    for p in parents:
        cfg = cfg[p]
    cfg[last] = value


def _del(cfg: dict, dotted: str) -> None:
    *parents, last = dotted.split(".")
    for p in parents:
        cfg = cfg[p]
    del cfg[last]


def _rename(cfg: dict, dotted: str, new: str) -> None:
    *parents, last = dotted.split(".")
    for p in parents:
        cfg = cfg[p]
    cfg[new] = cfg.pop(last)


# (id, edit of the digits_osr config, regex the message must match from its start)
CASES = [
    ("unknown_top_level_key", lambda c: _set(c, "colour", "blue"), r"colour: unknown key"),
    (
        "unknown_nested_key",
        lambda c: _set(c, "recipes.baseline.learning_rate", 0.1),
        r"recipes\.baseline\.learning_rate: unknown key \(allowed: init, epochs",
    ),
    (
        "unknown_row_key",
        lambda c: _set(c, "tables.posthoc.rows.msp.modle", "deit3_micro"),
        r"tables\.posthoc\.rows\.msp\.modle: unknown key",
    ),
    (
        "unknown_resources_rule",
        lambda c: _set(c, "resources.trian", {"threads": 2}),
        r"resources\.trian: unknown key",
    ),
    (
        "wrong_type",
        lambda c: _set(c, "recipes.baseline.epochs", "ten"),
        r"recipes\.baseline\.epochs: 'ten' is not of type 'integer'",
    ),
    (
        "negative_epochs",
        lambda c: _set(c, "recipes.sure.epochs", -3),
        r"recipes\.sure\.epochs: -3 is less than the minimum of 0",
    ),
    (
        "bad_enum",
        lambda c: _set(c, "tables.tricks.rows.sure.views", "ten_crop"),
        r"tables\.tricks\.rows\.sure\.views: 'ten_crop' is not one of",
    ),
    (
        "missing_required_key",
        lambda c: _del(c, "recipes.baseline.lr"),
        r"recipes\.baseline\.lr: missing required key",
    ),
    (
        "malformed_init",
        lambda c: _set(c, "recipes.sure.init", {"recipe": "baseline", "sed": 0}),
        r"recipes\.sure\.init: .* is not valid; expected none \| \{timm_tag, file\?\}.*"
        r"\(closest: recipes\.sure\.init\.sed: unknown key \(allowed: recipe, seed\)\)",
    ),
    (
        "uppercase_id",
        lambda c: _rename(c, "recipes.baseline", "Baseline"),
        r"recipes\.Baseline: bad id 'Baseline'; ids are lowercase",
    ),
    (
        "dash_in_id",
        lambda c: _rename(c, "tables.posthoc.rows.msp", "my-msp"),
        r"tables\.posthoc\.rows\.my-msp: bad id 'my-msp'",
    ),
    (
        "bad_benchmark_name",
        lambda c: _set(c, "benchmark.name", "Digits OSR"),
        r"benchmark\.name: 'Digits OSR' does not match",
    ),
    (
        "unknown_method",
        lambda c: _set(c, "methods", {"mine": {"method": "msq"}}),
        r"methods\.mine\.method: unknown method 'msq' \(registered: ",
    ),
    (
        "unknown_method_param",
        lambda c: _set(c, "methods", {"hot": {"method": "energy", "params": {"temp": 2}}}),
        r"methods\.hot\.params: method 'energy' has no parameter 'temp'",
    ),
    (
        "bad_method_param_type",
        lambda c: _set(c, "methods", {"hot": {"method": "energy", "params": {"temperature": "x"}}}),
        r"methods\.hot\.params: method 'energy': parameter 'temperature'",
    ),
    (
        "row_unknown_method",
        lambda c: _set(c, "tables.posthoc.rows.msp.method", "msq"),
        r"tables\.posthoc\.rows\.msp\.method: unknown method 'msq'",
    ),
    (
        "row_unknown_model",
        lambda c: _set(c, "tables.posthoc.rows.msp.model", "vit_huge"),
        r"tables\.posthoc\.rows\.msp\.model: unknown model 'vit_huge' \(models: deit3_micro\)",
    ),
    (
        "row_missing_recipe",
        lambda c: _set(c, "tables.sure_vs_baseline.rows.sure.recipe", "suer"),
        r"tables\.sure_vs_baseline\.rows\.sure\.recipe: unknown recipe 'suer'",
    ),
    (
        "row_without_method",
        lambda c: _set(c, "tables.extra", {"rows": {"r": {"model": "deit3_micro"}}}),
        r"tables\.extra\.rows\.r\.recipe: missing",
    ),
    (
        "duplicate_seeds",
        lambda c: _set(c, "tables.tricks.rows.sure.seeds", [0, 1, 0]),
        r"tables\.tricks\.rows\.sure\.seeds: duplicate seeds \[0, 1, 0\]",
    ),
    ("no_tables", lambda c: _set(c, "tables", {}), r"tables: no table to build"),
    (
        "table_without_rows",
        lambda c: _set(c, "tables.posthoc.rows", {}),
        r"tables\.posthoc\.rows: a table needs at least one row",
    ),
    (
        "init_missing_recipe",
        lambda c: _set(c, "recipes.sure.init", {"recipe": "pretrain", "seed": 0}),
        r"recipes\.sure\.init\.recipe: unknown recipe 'pretrain'",
    ),
    (
        "init_cycle",
        lambda c: _set(c, "recipes.baseline.init", {"recipe": "sure"}),
        r"recipes\.\w+\.init: initialisation cycle (\w+ -> ){2}\w+",
    ),
    (
        "swa_start_after_last_epoch",
        lambda c: _set(c, "recipes.sure.swa_start_epoch", 6),
        r"recipes\.sure\.swa_start_epoch: 6 >= the 6 epoch\(s\) trained",
    ),
    (
        "swa_without_lr",
        lambda c: _del(c, "recipes.sure.swa_lr"),
        r"recipes\.sure\.swa_lr: required when swa_start_epoch is set",
    ),
    (
        "sam_adaptive_without_rho",
        lambda c: c["recipes"]["sure"].update(sam_rho=0, sam_adaptive=True),
        r"recipes\.sure\.sam_adaptive: true, but sam_rho is 0",
    ),
    (
        "feature_clip_on_linear_head",
        lambda c: _set(c, "recipes.baseline.feature_clip", 100.0),
        r"recipes\.baseline\.feature_clip: only the cosine head clips features",
    ),
    (
        "known_unknown_overlap",
        lambda c: _set(c, "benchmark.unknown_classes", [5, 6, 7]),
        r"benchmark\.unknown_classes: \[5\] are also known classes",
    ),
    (
        "split_sums_over_one",
        lambda c: _set(c, "benchmark.split", {"train": 0.7, "val": 0.2, "id_test": 0.3}),
        r"benchmark\.split: the fractions sum to 1\.2 > 1",
    ),
    (
        "output_ensemble_of_one_seed",
        lambda c: c["tables"]["tricks"]["rows"]["sure"].update(ensemble="output"),
        r"tables\.tricks\.rows\.sure\.ensemble: 'output' averages the scores of several seeds",
    ),
    (
        "mean_std_lengths",
        lambda c: _set(c, "benchmark.normalization", {"mean": [0.3], "std": [0.3, 0.3]}),
        r"benchmark\.normalization\.std: 2 value\(s\), but benchmark\.normalization\.mean has 1",
    ),
    (
        "normalization_vs_in_chans",
        lambda c: _set(c, "models.deit3_micro.in_chans", 3),
        r"models\.deit3_micro\.in_chans: 3 channel\(s\), but benchmark\.normalization",
    ),
    (
        "img_size_not_multiple_of_patch",
        lambda c: _set(c, "models.deit3_micro.img_size", 9),
        r"models\.deit3_micro\.img_size: 9 is not a multiple of the patch size 2 "
        r"\(from models\.deit3_micro\.timm_kwargs\.patch_size\)",
    ),
    (
        "test_img_size_not_multiple_of_patch",
        lambda c: _set(c, "tables.tricks.rows.sure_no_ln_hires.img_size", 11),
        r"tables\.tricks\.rows\.sure_no_ln_hires\.img_size: test resolution 11 is not a "
        r"multiple of the patch size 2",
    ),
    (
        "missing_init_file",
        lambda c: _set(c, "recipes.baseline.init", {"file": "weights/deit3.safetensors"}),
        r"recipes\.baseline\.init\.file: file not found: .*weights/deit3\.safetensors",
    ),
    (
        "reference_row_unknown",
        lambda c: _set(c, "tables.posthoc.reference_row", "msq"),
        r"tables\.posthoc\.reference_row: 'msq' is not a row of the table",
    ),
    (
        "duplicate_replicate_seeds",
        lambda c: _set(c, "tables.tricks.rows.sure.replicates", [0, 1, 1]),
        r"tables\.tricks\.rows\.sure\.replicates: duplicate replicates \(seeds\) \[0, 1, 1\]",
    ),
    (
        "duplicate_seeds_in_seed_groups",
        lambda c: _set(c, "tables.tricks.rows.sure.replicates", [[0, 1], [1, 2]]),
        r"tables\.tricks\.rows\.sure\.replicates: duplicate seeds \[1\]",
    ),
    (
        "ensemble_seed_groups_of_unequal_size",
        lambda c: _set(
            c, "tables.tricks.rows.sure_no_ln_hires_ensemble.replicates", [[0, 1], [2, 3], [4]]
        ),
        r"tables\.tricks\.rows\.sure_no_ln_hires_ensemble\.replicates: 5 seeds do not split "
        r"into equal groups \(sizes \[2, 2, 1\]",
    ),
    (
        "replicated_seed_beyond_the_stride",
        lambda c: _set(c, "tables.tricks.rows.sure.seeds", [150]),
        r"tables\.tricks\.rows\.sure\.seeds: \[150\] >= 100",
    ),
    (
        "claim_missing_row",
        lambda c: _set(c, "claims.rp_helps_msp.b", "msq"),
        r"claims\.rp_helps_msp\.b: 'msq' is not a row of table 'posthoc'",
    ),
    (
        "claim_missing_table",
        lambda c: _set(c, "claims.rp_helps_msp.table", "post_hoc"),
        r"claims\.rp_helps_msp\.table: 'post_hoc' is not a table of the config",
    ),
    (
        "claim_unknown_direction",
        lambda c: _set(c, "claims.rp_helps_msp.expect", "higher"),
        r"claims\.rp_helps_msp\.expect: 'higher' is not one of \['better', 'worse'\]",
    ),
    (
        "table_named_claims",
        lambda c: _rename(c, "tables.posthoc", "claims"),
        r"tables\.claims: a reserved name",
    ),
    (
        "published_unknown_row",
        lambda c: _set(c, "tables.posthoc.published", {"msq": {"auroc": 90.0}}),
        r"tables\.posthoc\.published\.msq: not a row of the table",
    ),
]

# the GPU-cluster settings: published numbers, ODIN presets, local rules
CASES += [
    (
        "published_above_100",
        lambda c: _set(c, "tables.posthoc.published", {"msp": {"auroc": 120.0}}),
        r"tables\.posthoc\.published\.msp\.auroc: 120\.0 is greater than the maximum of 100",
    ),
    (
        "published_accuracy_negative",
        lambda c: _set(c, "tables.posthoc.published", {"msp": {"id_accuracy": -1}}),
        r"tables\.posthoc\.published\.msp\.id_accuracy: -1 is less than the minimum of 0",
    ),
    (
        "unknown_odin_preset",
        lambda c: _set(c, "methods", {"odin_cp": {"method": "odin", "params": {"preset": "cp"}}}),
        r"methods\.odin_cp\.params\.preset: unknown ODIN preset 'cp' \(known: openood, reference",
    ),
    (
        "fp16_training",
        lambda c: _set(c, "compute", {"amp": "fp16"}),
        r"compute\.amp: fp16 cannot train recipe 'baseline' \(it needs loss scaling",
    ),
    (
        "local_rule_missing",
        lambda c: _set(c, "local_rules", ["all", "scroe"]),
        r"local_rules\[1\]: 'scroe' is not one of \['all', 'prepare_data'",
    ),
]


@pytest.mark.parametrize(("edit", "pattern"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_malformed_config_is_rejected_with_its_key_path(tmp_path, edit, pattern):
    cfg = copy.deepcopy(BASE)
    edit(cfg)
    with pytest.raises(ConfigError) as info:
        _check(cfg, base_dir=tmp_path)
    assert re.match(pattern, str(info.value)), str(info.value)


def test_the_shipped_configs_pass(tmp_path):
    for name in ("digits_osr.yaml", "config.yaml"):
        _check(yaml.safe_load((ROOT / "config" / name).read_text()), base_dir=ROOT)


def test_every_schema_violation_is_listed_by_path():
    cfg = copy.deepcopy(BASE)
    cfg["recipes"]["baseline"]["epochs"] = -1  # 0 is allowed: keep the initial weights
    cfg["recipes"]["sure"]["lr"] = "fast"
    cfg["bootstrap"] = -1
    with pytest.raises(ConfigError) as info:
        validate_config(cfg, SCHEMA)
    lines = str(info.value).splitlines()
    assert lines[:3] == [
        "bootstrap: -1 is less than the minimum of 0",
        "recipes.baseline.epochs: -1 is less than the minimum of 0",
        "recipes.sure.lr: 'fast' is not of type 'number'",
    ]
    assert lines[3] == "(3 problems in the config)"


def test_init_file_is_read_relative_to_the_working_directory(tmp_path):
    (tmp_path / "w.safetensors").write_bytes(b"")
    cfg = copy.deepcopy(BASE)
    cfg["recipes"]["baseline"]["init"] = {"file": "w.safetensors"}
    _check(cfg, base_dir=tmp_path)


def test_shell_metacharacters_as_an_id_are_rejected(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = copy.deepcopy(BASE)
    cfg["tables"]["posthoc"]["rows"]["$(touch pwned)"] = {"method": "msp"}
    with pytest.raises(ConfigError, match=r"^tables\.posthoc\.rows\.\$\(touch pwned\): bad id"):
        _check(cfg, base_dir=tmp_path)
    assert not (tmp_path / "pwned").exists()


# ---- real Snakemake: the message reaches the user, and no job runs -------------------------
def _dry_run(tmp_path, edit):
    work = copy_workflow(tmp_path / "work")
    cfg = yaml.safe_load((work / "config/digits_osr.yaml").read_text())
    edit(cfg)
    (work / "config/bad.yaml").write_text(yaml.safe_dump(cfg))
    r = run_snakemake(work, "-n", "--configfile", "config/bad.yaml", check=False)
    assert r.returncode != 0
    assert not (work / "results").exists(), "a job ran before the config was rejected"
    out = r.stdout + r.stderr
    assert "Failed validating" not in out, "Snakemake's raw schema dump instead of a key path"
    return work, out


@pytest.mark.workflow
def test_snakemake_names_the_path_of_a_bad_nested_id(tmp_path):
    _, out = _dry_run(tmp_path, lambda c: _rename(c, "recipes.sure", "Sure-2"))
    assert "ConfigError" in out
    assert "recipes.Sure-2: bad id 'Sure-2'; ids are lowercase" in out


@pytest.mark.workflow
def test_snakemake_rejects_an_init_cycle(tmp_path):
    _, out = _dry_run(tmp_path, lambda c: _set(c, "recipes.baseline.init", {"recipe": "sure"}))
    assert re.search(r"recipes\.\w+\.init: initialisation cycle", out), out[-2000:]


@pytest.mark.workflow
def test_snakemake_rejects_a_command_substitution_as_an_id(tmp_path):
    work, out = _dry_run(
        tmp_path, lambda c: _set(c, "tables.posthoc.rows.$(touch pwned)", {"method": "msp"})
    )
    assert "tables.posthoc.rows.$(touch pwned): bad id" in out
    assert not list(work.rglob("pwned")) and not list(tmp_path.rglob("pwned"))


@pytest.mark.workflow
def test_snakemake_rejects_a_missing_init_file(tmp_path):
    _, out = _dry_run(tmp_path, lambda c: _set(c, "recipes.baseline.init", {"file": "no/w.pt"}))
    assert "recipes.baseline.init.file: file not found:" in out


@pytest.mark.workflow
def test_configfile_replaces_the_embedded_default(tmp_path):
    """``--configfile X`` runs X alone: the default config's models and tables stay out."""
    work = copy_workflow(tmp_path)
    r = run_snakemake(work, "-n", "--configfile", "config/digits_osr.yaml")
    assert "digits_osr" in r.stdout
    assert "deit3_tiny" not in r.stdout and "mnist_osr" not in r.stdout


# The bad replicate lists and claims of issue 14, end to end: each stops `snakemake -n` before
# any job, with the key in the message.
@pytest.mark.workflow
@pytest.mark.parametrize(
    ("edit", "needle"),
    [
        (
            lambda c: _set(c, "tables.tricks.rows.sure.replicates", [0, 2, 2]),
            "tables.tricks.rows.sure.replicates: duplicate replicates (seeds) [0, 2, 2]",
        ),
        (
            lambda c: _set(
                c, "tables.tricks.rows.sure_no_ln_hires_ensemble.replicates", [[0, 1], [2]]
            ),
            "tables.tricks.rows.sure_no_ln_hires_ensemble.replicates: 3 seeds do not split into "
            "equal groups",
        ),
        (
            lambda c: _set(c, "claims.ensemble_helps.a", "sure_ensemble"),
            "claims.ensemble_helps.a: 'sure_ensemble' is not a row of table 'tricks'",
        ),
        (
            lambda c: _set(c, "claims.ensemble_helps.table", "trick"),
            "claims.ensemble_helps.table: 'trick' is not a table of the config",
        ),
        (
            lambda c: _set(c, "claims.ensemble_helps.expect", "up"),
            "claims.ensemble_helps.expect: 'up' is not one of ['better', 'worse']",
        ),
    ],
    ids=["duplicate_seeds", "unequal_groups", "claim_row", "claim_table", "claim_direction"],
)
def test_snakemake_rejects_bad_replicates_and_claims(tmp_path, edit, needle):
    _, out = _dry_run(tmp_path, edit)
    assert needle in out, out[-2000:]
