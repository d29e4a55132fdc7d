"""After the shared digits run: replicates, the reference-row comparison, provenance, and the
Snakemake HTML report (every table and histogram, captions, workflow text, config)."""

from __future__ import annotations

import json
import re

import pandas as pd
import pytest
import yaml
from conftest import run_snakemake

pytestmark = pytest.mark.workflow


def test_replicated_row_has_seed_statistics_and_full_provenance(digits_run):
    out = digits_run / "results/digits_osr"
    row = json.loads((out / "rows/tricks/sure.json").read_text())
    assert row["replicates"] == [0, 1, 2] and row["n_replicates"] == 3  # the config's number
    # a one-view, one-model row reads its score file directly (no fuse job)
    assert row["scores_file"].endswith("method~rp_gradnorm/view~center/scores.parquet")
    assert len(row["replicate_scores_files"]) == 3
    assert "deit3_micro-sure-s200" in json.dumps(row["provenance"])  # replicate 2's model
    values = row["auroc_seed_values"]
    assert len(values) == 3
    mean = sum(values) / 3
    assert row["auroc"] == pytest.approx(mean)  # headline = mean over replicates
    assert row["auroc_seed_mean"] == pytest.approx(mean)
    assert row["auroc_seed_std"] == pytest.approx((sum((v - mean) ** 2 for v in values) / 2) ** 0.5)
    assert row["ci_method"] == "two_level"
    lo, hi = row["auroc_ci"]
    assert lo <= row["auroc"] <= hi
    prov = row["provenance"]
    cfg = yaml.safe_load((digits_run / "config/digits_osr.yaml").read_text())
    # the recipe and the one it is fine-tuned from, resolved (schema defaults filled in)
    assert set(prov["config"]["recipes"]) == {"sure", "baseline"}
    for r in ("sure", "baseline"):
        assert cfg["recipes"][r].items() <= prov["config"]["recipes"][r].items()
    assert cfg["models"]["deit3_micro"].items() <= prov["config"]["model"].items()
    assert prov["config"]["method"]["method"] == "rp_gradnorm"
    assert prov["config"]["replicates"]["1"]["test_models"] == ["deit3_micro-sure-s100"]
    # every input is hashed: every replicate's checkpoints, caches and scores
    assert {p.split("/")[-2] for p in prov["checkpoints"]} == {
        "deit3_micro-sure-s0",
        "deit3_micro-sure-s100",
        "deit3_micro-sure-s200",
    }
    assert len(prov["feature_caches"]) == 6  # 3 test models x (id_test, ood_test)
    assert len(prov["scores"]) == 3
    assert all(len(h) == 64 for h in prov["feature_caches"].values())
    assert prov["packages"]["numpy"] and "git_commit" in prov


def test_claims_table_has_a_verdict_for_every_claim(digits_run):
    out = digits_run / "results/digits_osr"
    cfg = yaml.safe_load((digits_run / "config/digits_osr.yaml").read_text())
    df = pd.read_csv(out / "tables/claims.csv").set_index("claim")
    assert list(df.index) == list(cfg["claims"])
    assert set(df["verdict"]) <= {"reproduced", "contradicted", "inconclusive"}
    assert (df["n_pairs"] == 3).all() and (df["bootstrap"] == "two_level").all()
    for cid, line in df.iterrows():
        assert line["auroc_delta_lo"] <= line["auroc_delta"] <= line["auroc_delta_hi"], cid
        lo, hi = line["auroc_delta_lo"], line["auroc_delta_hi"]
        if lo <= 0 <= hi:
            assert line["verdict"] == "inconclusive", cid
    # the pair's effect is the difference of the two rows' replicate means
    a = json.loads((out / "rows/tricks/sure_no_ln.json").read_text())
    b = json.loads((out / "rows/tricks/sure.json").read_text())
    assert df.loc["no_ln_helps_rp_gradnorm", "auroc_delta"] == pytest.approx(
        a["auroc"] - b["auroc"], abs=1e-6
    )
    md = (out / "tables/claims.md").read_text()
    assert md.count("\n|") == len(cfg["claims"]) + 2


def test_tricks_table_is_compared_with_its_reference_row(digits_run):
    out = digits_run / "results/digits_osr"
    df = pd.read_csv(out / "tables/tricks.csv").set_index("row")
    assert (df["reference_row"] == "sure").all()
    assert df.loc["sure", "auroc_delta"] == 0
    others = df.drop(index="sure")
    assert others["auroc_p_vs_ref"].between(0, 1).all()
    assert (others["auroc_delta"] - (others["auroc"] - df.loc["sure", "auroc"])).abs().max() < 1e-5
    md = (out / "tables/tricks.md").read_text()
    assert "Δ AUROC vs sure (pp)" in md and "AUROC mean ± std (seeds)" in md
    for row, p in others["auroc_p_vs_ref"].items():
        line = next(ln for ln in md.splitlines() if ln.startswith(f"| {row} |"))
        assert ("†" in line.split("|")[3]) == (p >= 0.05), (row, p, line)


def test_report_has_every_table_and_histogram(digits_run):
    run_snakemake(digits_run, "--report", "report.html", "--configfile", "config/digits_osr.yaml")
    html = (digits_run / "report.html").read_text()
    cfg = yaml.safe_load((digits_run / "config/digits_osr.yaml").read_text())
    for table, t in cfg["tables"].items():
        assert f"tables/{table}.html" in html, table
        assert f"tables/{table}.csv" in html, table
        for row in t["rows"]:
            assert f"figures/{table}/{row}.png" in html, (table, row)
        assert f"figures/{table}.png" in html, table  # the grid of every row
    flat = re.sub(r"(\\n|\s)+", " ", html)  # captions sit in JSON strings, newlines as \n
    assert "reproduces the SURE-OOD recipe" in flat  # workflow/report/workflow.rst
    assert "two-level stratified percentile bootstrap" in flat  # table.rst caption
    assert "tables/claims.html" in html and "one line per published claim" in flat
    assert "Score distributions of every row of table <tt" in flat  # histogram.rst caption
    assert "mailto:" not in html  # FPR@95 escaped in the captions, not an e-mail link
    # the config used, printed by workflow.rst
    assert "known_classes: [0, 1, 2, 3, 4, 5]" in flat
    assert "reference_row: &quot;sure&quot;" in flat
