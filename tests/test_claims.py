"""The claims table: every verdict from synthetic rows, published effects, bad claims."""

from __future__ import annotations

import copy
import json

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import ROOT

from sure_ood import cli
from sure_ood.config import ConfigError, check_config, claim_rows, load_schema, validate_config
from sure_ood.io import write_json
from sure_ood.stages.claims import claimed_sign, combine, evaluate_claim, verdict
from sure_ood.stages.evaluate import evaluate

N_ID, N_OOD = 300, 300


def frame(shift: float, seed: int) -> pd.DataFrame:
    """One replicate's fused scores: ID ~ N(shift, 1), OOD ~ N(0, 1); labels 0..2, -1 = OOD."""
    rng = np.random.default_rng(seed)
    labels = np.r_[np.arange(N_ID) % 3, -np.ones(N_OOD, int)]
    return pd.DataFrame(
        {
            "split": ["id_test"] * N_ID + ["ood_test"] * N_OOD,
            "index": np.r_[np.arange(N_ID), np.arange(N_OOD)],
            "label": labels,
            "id_score": np.r_[rng.normal(shift, 1, N_ID), rng.normal(0, 1, N_OOD)],
            "pred": np.maximum(labels, 0),
        }
    )


# per row: the ID shift of each of its three replicates (seed index 0, 1, 2)
ROWS = {
    "base": (1.0, 1.0, 1.0),
    "better": (1.8, 1.8, 1.8),  # a consistent improvement
    "worse": (0.4, 0.4, 0.4),  # a consistent degradation
    "noisy": (2.2, 0.5, 0.5),  # one seed far better, two worse: the seeds disagree
}


def write_rows(tmp_path) -> dict[str, str]:
    """Row JSONs as the workflow writes them (relative score paths under a results tree)."""
    root = tmp_path / "work"
    paths = {}
    for k, (row, shifts) in enumerate(ROWS.items()):
        files = []
        for r, shift in enumerate(shifts):
            rel = f"results/toy/scores/{row}/rep~{r}.parquet"
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            frame(shift, seed=100 * r + k).to_parquet(root / rel, index=False)
            files.append(rel)
        res = evaluate([root / f for f in files], {"method": "msp"}, "t", row, n_boot=0)
        res["replicate_scores_files"], res["scores_file"] = files, files[0]
        out = root / f"results/toy/rows/t/{row}.json"
        write_json(out, res)
        paths[row] = str(out)
    return paths


CLAIMS = {
    "better_than_base": {"text": "better helps", "table": "t", "a": "better", "b": "base"},
    "worse_than_base": {"text": "worse helps", "table": "t", "a": "worse", "b": "base"},
    "noisy_than_base": {"text": "noisy helps", "table": "t", "a": "noisy", "b": "base"},
    "worse_is_worse": {"table": "t", "a": "worse", "b": "base", "expect": "worse"},
    "fpr_better": {"table": "t", "a": "better", "b": "base", "metric": "fpr_at_95_tpr"},
    "better_is_best": {"table": "t", "kind": "best_of", "a": "better", "among": ["base", "worse"]},
    "better_best_of_all": {"table": "t", "kind": "best_of", "a": "better"},  # noisy too
    "base_is_best": {"table": "t", "kind": "best_of", "a": "base", "among": ["worse", "better"]},
    "noisy_is_best": {"table": "t", "kind": "best_of", "a": "noisy", "among": ["base", "worse"]},
}
EXPECTED = {
    "better_than_base": "reproduced",
    "worse_than_base": "contradicted",
    "noisy_than_base": "inconclusive",
    "worse_is_worse": "reproduced",
    "fpr_better": "reproduced",
    "better_is_best": "reproduced",
    "better_best_of_all": "inconclusive",  # one seed of noisy is as good
    "base_is_best": "contradicted",  # better beats it
    "noisy_is_best": "inconclusive",  # beats worse, but not base
}


def test_verdict_rules_by_hand():
    up, down = claimed_sign("auroc", "better"), claimed_sign("fpr_at_95_tpr", "better")
    assert (up, down) == (1, -1)
    assert claimed_sign("auroc", "worse") == -1 and claimed_sign("fpr_at_95_tpr", "worse") == 1
    assert verdict(0.01, 0.03, up) == "reproduced"
    assert verdict(-0.03, -0.01, up) == "contradicted"
    assert verdict(-0.01, 0.03, up) == "inconclusive"
    assert verdict(0.0, 0.03, up) == "inconclusive"  # the interval touches 0
    assert verdict(-0.05, -0.02, down) == "reproduced"  # FPR lower = better
    assert verdict(0.02, 0.05, down) == "contradicted"
    assert combine(["reproduced", "reproduced"]) == "reproduced"
    assert combine(["reproduced", "inconclusive"]) == "inconclusive"
    assert combine(["inconclusive", "contradicted"]) == "contradicted"


def test_every_verdict_from_synthetic_rows(tmp_path, monkeypatch):
    paths = write_rows(tmp_path)
    cfg = {"tables": {"t": {"rows": {r: {} for r in ROWS}}}}
    claims = []  # as the rule passes them: a list in config order
    for cid, c in CLAIMS.items():
        c = {"expect": "better", "kind": "pair", **c}  # kind: validated, the schema's default
        claims.append({"id": cid, **c, "rows": claim_rows(cfg, c)})
    published = {"t": {"better": {"auroc": 80.0}, "base": {"auroc": 75.5}}}
    out = tmp_path / "out"
    monkeypatch.chdir(tmp_path)  # neither the results root nor the row folder
    rc = cli.main(
        ["claims", "--rows", *paths.values(), "--claims", json.dumps(claims)]
        + ["--published", json.dumps(published), "--n-boot", "300"]
        + ["--out-csv", str(out / "c.csv"), "--out-md", str(out / "c.md")]
        + ["--out-html", str(out / "c.html")]
    )
    assert rc == 0
    df = pd.read_csv(out / "c.csv").set_index("claim")
    assert list(df.index) == list(CLAIMS)  # config order
    assert df["verdict"].to_dict() == EXPECTED
    # the effect is the difference of the replicate means, with its interval around it
    rows = {r: json.loads(open(p).read()) for r, p in paths.items()}
    line = df.loc["better_than_base"]
    assert line["auroc_delta"] == pytest.approx(
        rows["better"]["auroc"] - rows["base"]["auroc"], abs=1e-6
    )
    assert line["auroc_delta_lo"] <= line["auroc_delta"] <= line["auroc_delta_hi"]
    assert line["n_pairs"] == 3 and line["bootstrap"] == "two_level"
    assert line["published_auroc_delta"] == pytest.approx(0.045)
    assert np.isnan(df.loc["worse_than_base", "published_auroc_delta"])
    # a best-of line shows its closest competitor
    assert df.loc["base_is_best", "b"] == "better"
    assert df.loc["noisy_is_best", "b"] == "base"
    assert df.loc["better_best_of_all", "b"] == "noisy"  # the comparison that decides
    assert df.loc["better_best_of_all", "n_compared"] == 3
    md = (out / "c.md").read_text()
    assert md.count("\n|") == len(CLAIMS) + 2
    assert "| better helps | t: better vs base | +" in md
    assert "published Δ AUROC (pp)" in md and "| +4.50 |" in md
    assert "reproduced (AUROC)" in md and "contradicted (AUROC)" in md
    assert "inconclusive (AUROC)" in md and "reproduced (FPR@95)" in md
    assert "<table>" in (out / "c.html").read_text()


SCHEMA = load_schema(ROOT / "workflow/schemas/config.schema.yaml")
DIGITS = yaml.safe_load((ROOT / "config/digits_osr.yaml").read_text())


def _check(cfg):
    """What the Snakefile does: schema (with key paths), Snakemake's defaults, semantics."""
    from snakemake.utils import validate

    validate_config(cfg, SCHEMA)
    validate(cfg, str(ROOT / "workflow/schemas/config.schema.yaml"))  # fills the defaults
    check_config(cfg)


@pytest.mark.parametrize(
    ("edit", "pattern"),
    [
        (lambda c: c["claims"]["ensemble_helps"].update(expect="up"), r"claims\.ensemble_helps"),
        (lambda c: c["claims"]["rp_helps_msp"].update(a="rp_msp2"), r"claims\.rp_helps_msp\.a: "),
        (
            lambda c: c["claims"]["rp_helps_msp"].update(table="nope"),
            r"claims\.rp_helps_msp\.table",
        ),
        (
            lambda c: c["claims"]["rp_gradnorm_is_best"].update(among=["msp", "zz"]),
            r"claims\.rp_gradnorm_is_best\.among: 'zz' is not a row of table 'posthoc'",
        ),
        (lambda c: c["claims"]["rp_helps_msp"].pop("b"), r"claims\.rp_helps_msp\.b: missing"),
        (lambda c: c.update(bootstrap=0), r"bootstrap: 0 switches the intervals off"),
    ],
    ids=["direction", "row", "table", "among", "pair_without_b", "no_bootstrap"],
)
def test_bad_claims_are_rejected_with_their_key(edit, pattern):
    import re

    cfg = copy.deepcopy(DIGITS)
    edit(cfg)
    with pytest.raises(ConfigError) as info:
        _check(cfg)
    assert re.search(pattern, str(info.value)), str(info.value)


def test_published_effects_of_the_imagenet_claims():
    """config/imagenet_ssb.yaml: the claims print the paper's effect beside ours (by hand from
    the report's numbers)."""
    from snakemake.utils import validate

    cfg = yaml.safe_load((ROOT / "config/imagenet_ssb.yaml").read_text())
    validate_config(cfg, SCHEMA)
    validate(cfg, str(ROOT / "workflow/schemas/config.schema.yaml"))  # as the rule passes it
    published = {t: v.get("published", {}) for t, v in cfg["tables"].items()}

    def fake_compare(pa, pb):  # our side does not matter here: a fixed small effect
        m = {"a": 0.8, "b": 0.79, "delta": 0.01, "ci": [0.005, 0.015], "p_value": 0.01}
        return {"n_pairs": 1, "bootstrap": "images", "metrics": {"auroc": m, "fpr_at_95_tpr": m}}

    def line(cid):
        c = cfg["claims"][cid]
        c = {**c, "rows": claim_rows(cfg, c)}
        paths = {(c["table"], r): f"{r}.json" for r in c["rows"]}
        return evaluate_claim(cid, c, paths, published, fake_compare)

    sure = line("sure_beats_baseline")
    assert sure["published_auroc_delta"] == pytest.approx((79.97 - 34.28) / 100)
    assert sure["published_fpr_at_95_tpr_delta"] == pytest.approx((68.03 - 96.86) / 100)
    assert line("five_crop_helps")["published_auroc_delta"] == pytest.approx(0.0093)
    assert line("no_ln_helps_rp_gradnorm")["published_fpr_at_95_tpr_delta"] == pytest.approx(
        -0.0344
    )
    # rp_msp vs msp: 76.12 - 76.09 AUROC, 73.19 - 73.02 FPR@95 (report Table 2)
    rp = line("rp_helps_msp")
    assert rp["published_auroc_delta"] == pytest.approx(0.0003)
    assert rp["published_fpr_at_95_tpr_delta"] == pytest.approx(0.0017)
    assert line("rw_helps_energy")["published_auroc_delta"] == pytest.approx(0.0055)
    # RW+ODIN is below ODIN in the report: the published effect says so (76.49 - 77.79)
    assert line("rw_helps_odin")["published_auroc_delta"] == pytest.approx(-0.0130)
    # best of the eight: against the strongest published other score (odin, 77.79)
    assert line("rp_gradnorm_is_best")["published_auroc_delta"] == pytest.approx(0.0218)


# ---- benchmarks/bench_workflow.py: a run's verdicts against the reference's ----------------
def _claims_csv(path, rows):
    cols = "claim,auroc_delta,auroc_delta_lo,auroc_delta_hi,verdict"
    path.write_text(cols + "\n" + "".join(",".join(map(str, r)) + "\n" for r in rows))
    return path


def test_bench_workflow_compares_claim_verdicts_with_the_reference(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    from bench_workflow import compare_claims

    ref = _claims_csv(
        tmp_path / "ref.csv",
        [
            ("a", 0.0288, 0.0034, 0.0491, "reproduced"),
            ("b", 0.018, -0.0064, 0.0446, "inconclusive"),
            ("c", -0.11, -0.13, -0.07, "contradicted"),
        ],
    )
    run = _claims_csv(
        tmp_path / "run.csv",
        [
            ("a", 0.017, -0.0257, 0.0477, "inconclusive"),
            ("b", 0.02, -0.01, 0.05, "inconclusive"),
            ("d", 0.01, 0.0, 0.02, "reproduced"),
        ],
    )
    cmp = compare_claims(run, ref)
    assert cmp["changed"] == ["a", "c", "d"]  # a flipped; c missing in the run; d new
    by = {r["claim"]: r for r in cmp["claims"]}
    assert by["a"]["reference"] == {
        "auroc_delta_pp": 2.88,
        "ci": [0.34, 4.91],
        "verdict": "reproduced",
    }
    assert by["a"]["run"]["verdict"] == "inconclusive" and not by["b"]["changed"]
    assert by["c"]["run"] is None and by["d"]["reference"] is None
    assert compare_claims(ref, ref)["changed"] == []


def test_bench_workflow_sets_dotted_keys_of_the_copied_config(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    from bench_workflow import override_config

    path = tmp_path / "config.yaml"
    path.write_text((ROOT / "config" / "config.yaml").read_text())
    override_config(path, ["recipes.sure.epochs=2", "replicates=5"])
    cfg = yaml.safe_load(path.read_text())
    assert cfg["recipes"]["sure"]["epochs"] == 2 and cfg["replicates"] == 5
    assert (
        cfg["recipes"]["baseline"]
        == yaml.safe_load((ROOT / "config" / "config.yaml").read_text())["recipes"]["baseline"]
    )
    for bad, named in [
        ("recipes.sure.epoch=2", "recipes.sure.epoch"),
        ("recipe.x=1", "recipe"),
        ("replicates", "KEY=VALUE"),
    ]:
        with pytest.raises(SystemExit, match=named):
            override_config(path, [bad])
