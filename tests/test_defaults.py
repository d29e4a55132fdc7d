"""A hand-written config subtree gets the schema's defaults (sure_ood.defaults), the same ones
Snakemake's ``validate`` fills in for the workflow, at the library's entry points: the model
spec, a training job (and so a hand-run ``sure-ood train``), the optimizer, a claim."""

from __future__ import annotations

import json

import pytest
import yaml
from conftest import ROOT
from snakemake.utils import validate

from sure_ood import defaults
from sure_ood.cli import main as cli_main
from sure_ood.io import InputError
from sure_ood.models import model_spec
from sure_ood.stages.claims import evaluate_claim

SCHEMA = ROOT / "workflow/schemas/config.schema.yaml"
SECTIONS = {"recipe": "recipes", "model": "models", "claim": "claims"}


def _raw_and_validated(name: str) -> tuple[dict, dict]:
    raw = yaml.safe_load((ROOT / f"config/{name}.yaml").read_text())
    filled = yaml.safe_load((ROOT / f"config/{name}.yaml").read_text())
    validate(filled, str(SCHEMA))  # fills the schema's defaults, as the Snakefile does
    return raw, filled


@pytest.mark.parametrize("name", ["digits_osr", "imagenet_ssb"])
def test_with_defaults_fills_what_snakemakes_validate_fills(name):
    raw, filled = _raw_and_validated(name)
    lacking = 0
    for subtree, section in SECTIONS.items():
        for ident, values in raw[section].items():
            lacking += len(set(filled[section][ident]) - set(values))
            assert defaults.with_defaults(subtree, values) == filled[section][ident], ident
            # a validated subtree comes back equal, in the same key order (run fingerprints)
            again = defaults.with_defaults(subtree, filled[section][ident])
            assert list(again.items()) == list(filled[section][ident].items())
    bench = defaults.with_defaults("benchmark", raw["benchmark"])
    assert bench == filled["benchmark"] and set(bench) > set(raw["benchmark"])
    assert lacking > 0  # the shipped configs rely on the defaults, so the check has teeth


def test_with_defaults_copies_and_names_its_subtrees():
    recipe = {"epochs": 1}
    out = defaults.with_defaults("recipe", recipe)
    assert recipe == {"epochs": 1} and out["epochs"] == 1  # the caller's dict is untouched
    with pytest.raises(ValueError, match="'recipes'.*recipe, model, claim, benchmark"):
        defaults.schema_defaults("recipes")


def test_a_missing_schema_is_named(monkeypatch, tmp_path):
    monkeypatch.setattr(defaults, "SCHEMA_PATH", tmp_path / "config.schema.yaml")
    defaults.schema_defaults.cache_clear()
    try:
        with pytest.raises(InputError, match=r"config\.schema\.yaml: config schema not found"):
            defaults.with_defaults("recipe", {})
    finally:
        defaults.schema_defaults.cache_clear()


def test_model_spec_of_partial_subtrees_is_the_validated_ones():
    raw, filled = _raw_and_validated("imagenet_ssb")
    for m in raw["models"]:
        for r in raw["recipes"]:
            by_hand = model_spec(raw["models"][m], 6, raw["recipes"][r])
            assert by_hand == model_spec(filled["models"][m], 6, filled["recipes"][r]), (m, r)
    spec = model_spec({"arch": "deit3_small_patch16_224", "img_size": 8}, 6)
    schema = yaml.safe_load(SCHEMA.read_text())["properties"]
    recipe_props = schema["recipes"]["additionalProperties"]["properties"]
    assert (
        spec["in_chans"]
        == schema["models"]["additionalProperties"]["properties"]["in_chans"]["default"]
    )
    assert (spec["head"], spec["cos_temperature"]) == (
        recipe_props["head"]["default"],
        recipe_props["cos_temperature"]["default"],
    )


def test_a_hand_run_train_with_a_partial_recipe_gets_the_schemas_defaults(monkeypatch, tmp_path):
    """``sure-ood train --recipe '{...}'`` by hand, without the keys that have defaults: the
    job holds the recipe and model the workflow's validated config would pass."""
    from sure_ood.stages import train as train_stage

    raw, filled = _raw_and_validated("digits_osr")
    model_id, recipe_id = next(iter(raw["models"])), next(iter(raw["recipes"]))
    jobs = []
    monkeypatch.setattr(train_stage, "train", lambda job, *a, **k: jobs.append(job) or {})
    args = [
        "train", "--benchmark", json.dumps(filled["benchmark"]),
        "--model", json.dumps(raw["models"][model_id]),
        "--recipe", json.dumps(raw["recipes"][recipe_id]), "--seed", "0",
        "--data-dir", str(tmp_path), "--state-dir", str(tmp_path / "state"),
        "--log", str(tmp_path / "log.jsonl"), "--summary", str(tmp_path / "run.json"),
        "--device", "cpu", "--threads", "1", "--amp", "none", "--workers", "0",
        "--pin-memory", "auto",
    ]  # fmt: skip
    rc = cli_main(args)
    assert rc == 0
    (job,) = jobs
    assert set(filled["recipes"][recipe_id]) - set(raw["recipes"][recipe_id])  # some were missing
    assert job.recipe == filled["recipes"][recipe_id]
    assert job.model_cfg == filled["models"][model_id]
    # the fingerprint of the partial subtrees is the validated run's (it resumes the same state)
    from sure_ood.training.setup import run_fingerprint

    bench = filled["benchmark"]
    raw_fp = run_fingerprint(bench, raw["models"][model_id], raw["recipes"][recipe_id], 0, None)
    assert raw_fp == run_fingerprint(bench, job.model_cfg, job.recipe, 0, None)


def test_the_optimizer_of_a_partial_recipe_is_the_schemas():
    """make_optimizer / num_epochs of a recipe without optimizer, momentum, extra_final_epoch:
    the schema's SGD with its momentum, and no extra epoch."""
    import torch

    from sure_ood.training.setup import make_optimizer, num_epochs

    props = yaml.safe_load(SCHEMA.read_text())["properties"]["recipes"]["additionalProperties"]
    props = props["properties"]
    w = torch.nn.Parameter(torch.zeros(2))
    opt = make_optimizer([w], {"lr": 0.1})
    assert type(opt).__name__ == props["optimizer"]["default"].upper() == "SGD"
    assert opt.param_groups[0]["momentum"] == props["momentum"]["default"]
    assert num_epochs({"epochs": 3}) == 3 + int(props["extra_final_epoch"]["default"])


def test_a_claim_without_kind_or_metric_is_the_schemas_pair_on_auroc():
    def fake_compare(pa, pb):
        m = {"a": 0.8, "b": 0.7, "delta": 0.1, "ci": [0.05, 0.15], "p_value": 0.01}
        fpr = {**m, "ci": [-0.02, 0.02]}  # another verdict: the line shows which metric ruled
        return {"n_pairs": 1, "bootstrap": "images", "metrics": {"auroc": m, "fpr_at_95_tpr": fpr}}

    claim = {"table": "t", "a": "sure", "b": "baseline", "expect": "better"}
    paths = {("t", "sure"): "sure.json", ("t", "baseline"): "baseline.json"}
    line = evaluate_claim("c", claim, paths, None, fake_compare)
    schema = defaults.schema_defaults("claim")
    explicit = {**claim, "kind": schema["kind"], "metric": schema["metric"]}
    assert line == evaluate_claim("c", explicit, paths, None, fake_compare)
    assert line["verdict"] == "reproduced"  # AUROC's interval is above 0
