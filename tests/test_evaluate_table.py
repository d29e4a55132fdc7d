"""Row JSONs (replicates, provenance) and their tables (CIs, seeds, reference, published).

Independent references: scikit-learn's ``roc_auc_score`` and numpy's mean/std by hand.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from sure_ood import cli
from sure_ood.config import (
    ConfigError,
    all_test_models,
    check_config,
    parent_run,
    replicate_seeds,
    resolve_row,
    row_config_subtree,
    row_replicates,
    row_test_models,
)
from sure_ood.io import write_json
from sure_ood.stages.evaluate import evaluate
from sure_ood.stages.table import collect, compare_with_reference, to_html, to_markdown

N_ID, N_OOD = 150, 120


def score_frame(shift: float, seed: int, noise_of: pd.DataFrame | None = None, eps=0.0):
    """ID (labels 0..3, label -1 = OOD) scores ~ N(shift, 1), OOD ~ N(0, 1).

    With ``noise_of``, the scores are those of that frame plus ``eps`` * N(0, 1) (a row that
    barely differs from another).
    """
    rng = np.random.default_rng(seed)
    labels = np.r_[np.arange(N_ID) % 4, -np.ones(N_OOD, int)]
    if noise_of is None:
        s = np.r_[rng.normal(shift, 1, N_ID), rng.normal(0, 1, N_OOD)]
    else:
        s = noise_of["id_score"].to_numpy() + eps * rng.normal(size=N_ID + N_OOD)
    preds = np.where(rng.random(N_ID + N_OOD) < 0.75, np.maximum(labels, 0), 3)
    return pd.DataFrame(
        {
            "split": ["id_test"] * N_ID + ["ood_test"] * N_OOD,
            "index": np.r_[np.arange(N_ID), np.arange(N_OOD)],
            "label": labels,
            "id_score": s,
            "pred": preds,
        }
    )


def auroc_of(df):
    return roc_auc_score(df["label"] >= 0, df["id_score"])


# ---- config: replicates and the provenance subtree ------------------------------------------
CONFIG = {
    "benchmark": {"name": "toy"},
    "models": {"m": {"arch": "x"}},
    "recipes": {
        "base": {"init": "none", "epochs": 1},
        "sure": {"init": {"recipe": "base", "seed": 0}, "epochs": 2},
    },
    "methods": {"rpg": {"method": "rp_gradnorm", "params": {}}},
    "tables": {
        "t": {
            "defaults": {"model": "m", "recipe": "sure", "method": "msp"},
            "reference_row": "a",
            "rows": {
                "a": {"seeds": [0], "replicates": [0, 1, 2]},
                "b": {"seeds": [0, 1], "replicates": [0, 2], "method": "rpg"},
                "c": {"seeds": [3]},
            },
        }
    },
}


def test_replicate_seeds_never_share_a_run():
    assert replicate_seeds({"seeds": [0]}, 0) == (0,)
    assert replicate_seeds({"seeds": [0]}, 2) == (200,)
    assert replicate_seeds({"seeds": [0, 1]}, 1) == (100, 101)
    assert replicate_seeds({"seeds": [0, 1]}, 2) == (200, 201)
    assert replicate_seeds({"seeds": [3]}, 1) == (103,)
    runs = [set(replicate_seeds({"seeds": [0, 2]}, r)) for r in range(4)]
    assert all(a.isdisjoint(b) for i, a in enumerate(runs) for b in runs[i + 1 :])
    # seed groups written out
    row = {"seeds": [0], "replicates": [[0, 1], [2, 3], [4, 5]]}
    assert row_replicates(row) == [0, 1, 2]
    assert [replicate_seeds(row, r) for r in range(3)] == [(0, 1), (2, 3), (4, 5)]


def test_replicates_as_a_count_a_list_or_the_config_default():
    assert row_replicates({"seeds": [0], "replicates": 3}) == [0, 1, 2]
    assert row_replicates({"seeds": [0], "replicates": [0, 2]}) == [0, 2]
    cfg = {**CONFIG, "replicates": 3}
    assert resolve_row(cfg, "t", "c")["replicates"] == 3  # the config's number
    assert resolve_row(cfg, "t", "a")["replicates"] == [0, 1, 2]  # the row's own
    one = {**cfg, "tables": {"t": {**CONFIG["tables"]["t"], "defaults": {"replicates": 1}}}}
    assert row_replicates(resolve_row(one, "t", "c")) == [0]  # a table asks for one seed


def test_parent_run_follows_the_replicate_unless_the_init_names_a_seed():
    cfg = {"recipes": {"base": {"init": "none"}, "ft": {"init": {"recipe": "base"}}}}
    assert parent_run(cfg, "base", 5) is None
    assert parent_run(cfg, "ft", 0) == ("base", 0)
    assert parent_run(cfg, "ft", 200) == ("base", 200)  # single-seed row, replicate 2
    assert parent_run(cfg, "ft", 201) == ("base", 200)  # second run of replicate 2's soup
    cfg["recipes"]["ft"]["init"]["seed"] = 7
    assert parent_run(cfg, "ft", 201) == ("base", 7)  # a fixed parent


def test_row_test_models_and_all_test_models_cover_every_replicate():
    row = {**CONFIG["tables"]["t"]["defaults"], **CONFIG["tables"]["t"]["rows"]["a"]}
    row.update(drop_final_norm=False, img_size=None)
    assert row_replicates(row) == [0, 1, 2]
    assert row_replicates({"seeds": [0]}) == [0]
    assert [tm.id for tm in row_test_models(row, 1)] == ["m-sure-s100"]
    out = {**row, "seeds": [0, 1], "ensemble": "output"}
    assert [tm.seeds for tm in row_test_models(out, 1)] == [(100,), (101,)]
    ids = set(all_test_models(CONFIG))
    assert {"m-sure-s0", "m-sure-s100", "m-sure-s200"} <= ids  # row a
    assert {"m-sure-s0_1", "m-sure-s200_201"} <= ids  # row b, replicates 0 and 2
    assert "m-sure-s100_101" not in ids  # replicate 1 of row b is not asked for


def test_row_config_subtree_has_row_model_recipe_chain_and_method():
    sub = row_config_subtree(CONFIG, "t", "b")
    assert sub["row"]["method"] == "rpg" and sub["row"]["seeds"] == [0, 1]
    assert sub["model"] == {"arch": "x"}
    assert list(sub["recipes"]) == ["sure", "base"]  # the recipe and the one it starts from
    assert sub["method"] == {"method": "rp_gradnorm", "params": {}}
    assert sub["replicates"]["2"] == {"seeds": [200, 201], "test_models": ["m-sure-s200_201"]}
    json.dumps(sub)  # a JSON param of the rule


def _validated(config: dict) -> dict:
    """``config`` made schema-valid and its defaults filled in, as the Snakefile does before
    check_config."""
    import copy

    from conftest import ROOT
    from snakemake.utils import validate

    cfg = copy.deepcopy(config)
    cfg["benchmark"].update(source="imagefolder", seed=0)
    cfg["models"]["m"]["img_size"] = 32
    for recipe in cfg["recipes"].values():
        recipe.update(batch_size=8, lr=0.1)
    validate(cfg, str(ROOT / "workflow/schemas/config.schema.yaml"))
    return cfg


def test_check_config_rejects_a_missing_reference_row_and_duplicate_replicates():
    import copy

    config = _validated(CONFIG)
    check_config(config)
    bad = copy.deepcopy(config)
    bad["tables"]["t"]["reference_row"] = "zzz"
    with pytest.raises(ConfigError, match=r"tables\.t\.reference_row"):
        check_config(bad)
    bad = copy.deepcopy(config)
    bad["tables"]["t"]["rows"]["a"]["replicates"] = [0, 0]
    with pytest.raises(ConfigError, match=r"tables\.t\.rows\.a\.replicates"):
        check_config(bad)


# ---- evaluate: replicates mean / std by hand ------------------------------------------------
def test_evaluate_reports_replicate_means_seed_std_and_two_level_ci(tmp_path):
    frames = [score_frame(shift, seed) for shift, seed in ((1.0, 0), (1.5, 1), (0.7, 2))]
    paths = []
    for i, f in enumerate(frames):
        paths.append(tmp_path / f"rep~{i}.parquet")
        f.to_parquet(paths[-1], index=False)
    ckpt = tmp_path / "model.safetensors"
    ckpt.write_bytes(b"weights")
    res = evaluate(
        paths,
        {"method": "msp", "seeds": [0], "replicates": [0, 1, 2]},
        "t",
        "a",
        checkpoints=[ckpt],
        n_boot=100,
        replicates=[0, 1, 2],
        config_subtree={"recipes": {"sure": {}}},
    )
    aurocs = [auroc_of(f) for f in frames]
    # headline = mean over the replicates, with the two-level bootstrap interval
    mean = sum(aurocs) / 3
    assert res["auroc"] == pytest.approx(mean) and res["n_replicates"] == 3
    assert res["scores_file"] == str(paths[0])
    assert res["replicate_scores_files"] == [str(p) for p in paths]
    assert res["ci_method"] == "two_level"
    from sure_ood.metrics import two_level_bootstrap_ci

    arrays = [
        (f["id_score"].to_numpy()[f["label"] >= 0], f["id_score"].to_numpy()[f["label"] < 0])
        for f in frames
    ]
    ref = two_level_bootstrap_ci(arrays, ("auroc",), n_boot=100, seed=0)["auroc"]
    assert res["auroc_ci"] == pytest.approx(list(ref))
    for k in ("auroc_ci", "fpr_at_95_tpr_ci", "aupr_in_ci", "aupr_out_ci"):
        assert len(res[k]) == 2 and res[k][0] <= res[k][1]
    # per-replicate values, mean and sample std (ddof 1) by hand
    assert res["auroc_seed_values"] == pytest.approx(aurocs)
    std = (sum((a - mean) ** 2 for a in aurocs) / 2) ** 0.5
    assert res["auroc_seed_mean"] == pytest.approx(mean)
    assert res["auroc_seed_std"] == pytest.approx(std)
    for m in ("fpr_at_95_tpr", "aupr_in", "aupr_out", "id_accuracy", "oscr", "fpr95_ood_pos"):
        assert len(res[f"{m}_seed_values"]) == 3
        assert res[m] == pytest.approx(np.mean(res[f"{m}_seed_values"]))
        assert res[f"{m}_seed_std"] >= 0
    acc = [(f["pred"] == f["label"])[f["label"] >= 0].mean() for f in frames]
    assert res["id_accuracy"] == pytest.approx(np.mean(acc))
    prov = res["provenance"]
    assert prov["config"] == {"recipes": {"sure": {}}}
    assert set(prov["scores"]) == {str(p) for p in paths}
    assert all(len(h) == 64 for h in [*prov["scores"].values(), *prov["checkpoints"].values()])
    assert prov["bootstrap"]["method"] == "two_level"
    assert res["replicates"] == [0, 1, 2]


def test_evaluate_one_replicate_falls_back_to_the_image_bootstrap(tmp_path):
    from sure_ood.metrics import bootstrap_ci

    p = tmp_path / "s.parquet"
    f = score_frame(1.0, 0)
    f.to_parquet(p, index=False)
    res = evaluate(p, {"method": "msp"}, "t", "a", n_boot=0)
    assert "auroc_seed_std" not in res and "auroc_ci" not in res
    assert res["replicates"] == [0] and res["n_replicates"] == 1
    assert res["auroc_seed_values"] == [pytest.approx(res["auroc"])]
    res = evaluate(p, {"method": "msp"}, "t", "a", n_boot=80, seed=3)
    is_id = f["label"] >= 0
    ref = bootstrap_ci(f["id_score"][is_id], f["id_score"][~is_id], n_boot=80, seed=3)
    assert res["auroc_ci"] == pytest.approx(list(ref["auroc"]))
    assert res["ci_method"] == "images"


def test_markdown_footnote_names_the_rows_with_one_replicate():
    rows = [
        hand_row("many", 0.8, 0.5, ci=([0.7, 0.9], [0.4, 0.6]), n_replicates=3),
        hand_row("one", 0.8, 0.5, ci=([0.75, 0.85], [0.45, 0.55]), n_replicates=1),
    ]
    md = to_markdown(collect(rows, {}), "T")
    assert "two-level stratified bootstrap (replicates, then test images)" in md
    assert "One replicate (interval from the test images only, no training noise): one." in md
    single = to_markdown(collect(rows[1:], {}), "T")
    assert "over the test images" in single and "two-level" not in single


# ---- table: CI cells, seeds, reference marker, published ------------------------------------
def hand_row(row_id, auroc, fpr, ci=None, **extra):
    r = {
        "table": "t",
        "row": row_id,
        "auroc": auroc,
        "fpr_at_95_tpr": fpr,
        "n_id": 10,
        "n_ood": 20,
        "provenance": {"row_config": {"method": "msp"}},
        **extra,
    }
    if ci:
        r["auroc_ci"], r["fpr_at_95_tpr_ci"] = ci
    return r


def test_markdown_shows_ci_cells_seed_columns_and_published():
    rows = [
        hand_row("ours", 0.81234, 0.5, ci=([0.8, 0.825], [0.45, 0.55])),
        hand_row(
            "seeded",
            0.9,
            0.3,
            replicates=[0, 1],
            auroc_seed_mean=0.88,
            auroc_seed_std=0.0125,
            fpr_at_95_tpr_seed_mean=0.31,
            fpr_at_95_tpr_seed_std=0.02,
        ),
    ]
    cfg = {"published": {"ours": {"auroc": 81.54, "fpr_at_95_tpr": 62.43}}}
    df = collect(rows, cfg)
    assert df.loc[0, "auroc_lo"] == 0.8 and df.loc[0, "published_auroc"] == pytest.approx(0.8154)
    md = to_markdown(df, "T")
    lines = md.splitlines()
    head = lines[2]
    assert "published AUROC" in head and "published FPR@95" in head
    assert "AUROC mean ± std (seeds)" in head
    ours = next(line for line in lines if line.startswith("| ours"))
    cells = [c.strip() for c in ours.strip("|").split("|")]
    assert cells[2] == "81.23 [80.00, 82.50]"
    assert cells[3] == "50.00 [45.00, 55.00]"
    assert cells[-2:] == ["81.54", "62.43"]
    seeded = next(line for line in lines if line.startswith("| seeded"))
    assert "88.00 ± 1.25 (n=2)" in seeded and "31.00 ± 2.00 (n=2)" in seeded
    assert md.count("\n|") == len(rows) + 2  # header, rule, rows: no stray table lines
    assert "†" not in md  # no reference row, no marker
    page = to_html(df, "T")
    assert "<th>published AUROC</th>" in page and "81.23 [80.00, 82.50]" in page


def test_reference_row_paired_bootstrap_and_non_significance_marker(tmp_path):
    ref_df = score_frame(1.0, 0)
    frames = {
        "ref": ref_df,
        "same": score_frame(0, 5, noise_of=ref_df, eps=0.01),  # tiny change: not significant
        "better": score_frame(3.0, 7),  # clearly better: significant
    }
    paths, rows = [], []
    for name, f in frames.items():
        pq = tmp_path / f"{name}.parquet"
        f.to_parquet(pq, index=False)
        res = evaluate(pq, {"method": "msp"}, "t", name, n_boot=50)
        paths.append(tmp_path / f"{name}.json")
        write_json(paths[-1], res)
        rows.append(res)
    cfg = {"reference_row": "ref"}
    cmp = compare_with_reference(paths, rows, "ref", n_boot=300, seed=0)
    assert set(cmp) == {"same", "better"}
    df = collect(rows, cfg, cmp).set_index("row")
    for name in ("same", "better"):
        assert df.loc[name, "auroc_delta"] == pytest.approx(
            auroc_of(frames[name]) - auroc_of(ref_df)
        )
    assert df.loc["same", "auroc_p_vs_ref"] >= 0.05
    assert df.loc["better", "auroc_p_vs_ref"] < 0.05
    assert df.loc["ref", "auroc_delta"] == 0 and np.isnan(df.loc["ref", "auroc_p_vs_ref"])
    md = to_markdown(df.reset_index(), "T")
    line = {ln.split("|")[1].strip(): ln for ln in md.splitlines() if ln.startswith("| ")}
    assert "Δ AUROC vs ref (pp)" in line["row"]
    assert "†" in line["same"] and "†" not in line["better"]
    assert "reference" in line["ref"] and "†" not in line["ref"]
    d = 100 * df.loc["better", "auroc_delta"]
    assert f"{d:+.2f} (p=" in line["better"]


def test_table_cli_writes_csv_md_html_with_reference_columns(tmp_path):
    paths = []
    for name, shift in (("a", 1.0), ("b", 1.05)):
        pq = tmp_path / f"{name}.parquet"
        score_frame(shift, 1).to_parquet(pq, index=False)
        res = evaluate(pq, {"method": "msp"}, "t", name, n_boot=20)
        paths.append(tmp_path / f"{name}.json")
        write_json(paths[-1], res)
    out = tmp_path / "out"
    table = json.dumps({"title": "Tiny", "reference_row": "a", "rows": {"a": {}, "b": {}}})
    rc = cli.main(
        ["table", "--rows", *map(str, paths), "--table", table, "--n-boot", "50"]
        + ["--out-csv", str(out / "t.csv"), "--out-md", str(out / "t.md")]
        + ["--out-html", str(out / "t.html")]
    )
    assert rc == 0
    df = pd.read_csv(out / "t.csv")
    for col in ("auroc_lo", "auroc_hi", "auroc_delta", "auroc_p_vs_ref", "fpr_at_95_tpr_p_vs_ref"):
        assert col in df, col
    assert list(df["row"]) == ["a", "b"]
    assert (out / "t.md").read_text().startswith("### Tiny")
    assert "<table>" in (out / "t.html").read_text()
