"""``sure-ood compare`` end to end on small parquet + row JSON files."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from sure_ood import cli, metrics
from sure_ood.io import InputError, write_json
from sure_ood.stages.compare import compare_rows

N_ID, N_EASY, N_HARD = 120, 50, 70


def score_table(shift: float, seed: int) -> pd.DataFrame:
    """ID (labels 0..4) + two OOD splits (label -1); ID scores ~ N(shift, 1), OOD ~ N(0, 1)."""
    rng = np.random.default_rng(seed)
    labels = np.arange(N_ID) % 5
    preds = np.where(rng.random(N_ID) < 0.8, labels, (labels + 1) % 5)
    return pd.DataFrame(
        {
            "split": ["id"] * N_ID + ["easy"] * N_EASY + ["hard"] * N_HARD,
            "index": np.r_[np.arange(N_ID), np.arange(N_EASY), np.arange(N_HARD)],
            "label": np.r_[labels, -np.ones(N_EASY + N_HARD, int)],
            "id_score": np.r_[rng.normal(shift, 1, N_ID), rng.normal(0, 1, N_EASY + N_HARD)],
            "pred": np.r_[preds, rng.integers(0, 5, N_EASY + N_HARD)],
        }
    )


def write_row(tmp_path, name: str, df: pd.DataFrame, relative: bool = False) -> str:
    pq = tmp_path / f"{name}.parquet"
    df.to_parquet(pq, index=False)
    row = tmp_path / f"{name}.json"
    write_json(row, {"metrics": {}, "scores_file": pq.name if relative else str(pq)})
    return str(row)


def split_arrays(df: pd.DataFrame):
    is_id = df["label"].to_numpy() != -1
    s = df["id_score"].to_numpy()
    return s[is_id], s[~is_id]


def test_cli_end_to_end(tmp_path, capsys):
    df_a, df_b = score_table(2.0, 0), score_table(0.5, 1)
    row_a, row_b = write_row(tmp_path, "a", df_a), write_row(tmp_path, "b", df_b)
    out = tmp_path / "diff" / "diff.json"
    rc = cli.main(["compare", row_a, row_b, "--n-boot", "200", "--seed", "3", "--out", str(out)])
    assert rc == 0
    text = capsys.readouterr().out
    assert "AUROC" in text and "FPR@95TPR" in text and "pp" in text

    result = json.loads(out.read_text())
    assert result["n_id"] == N_ID and result["n_ood"] == N_EASY + N_HARD
    expected = metrics.paired_bootstrap(
        *split_arrays(df_a), *split_arrays(df_b), n_boot=200, seed=3
    )
    for m in ("auroc", "fpr_at_95_tpr"):
        got = result["metrics"][m]
        assert got["delta"] == pytest.approx(expected[m]["delta"])
        assert got["ci"] == pytest.approx(list(expected[m]["ci"]))
        assert got["p_value"] == pytest.approx(expected[m]["p_value"])
        assert f"{100 * got['delta']:+.2f}" in text  # printed in percentage points
    assert result["metrics"]["auroc"]["a"] == pytest.approx(metrics.auroc(*split_arrays(df_a)))
    assert result["metrics"]["auroc"]["delta"] > 0
    assert result["metrics"]["auroc"]["significant"] is True


def test_alignment_ignores_row_order_and_relative_path(tmp_path, monkeypatch):
    df_a, df_b = score_table(1.5, 0), score_table(1.0, 1)
    row_a = write_row(tmp_path, "a", df_a)
    row_b = write_row(tmp_path, "b", df_b)
    shuffled = df_b.sample(frac=1.0, random_state=0)
    row_b2 = write_row(tmp_path, "b_shuffled", shuffled, relative=True)
    monkeypatch.chdir(tmp_path.parent)  # relative scores_file resolved beside the row JSON
    names = ("auroc", "fpr_at_95_tpr", "oscr", "id_accuracy")
    r1 = compare_rows(row_a, row_b, n_boot=100, seed=0, metrics=names)
    r2 = compare_rows(row_a, row_b2, n_boot=100, seed=0, metrics=names)
    assert r1["metrics"] == r2["metrics"]
    correct = df_a["pred"].to_numpy()[:N_ID] == df_a["label"].to_numpy()[:N_ID]
    i_a, o_a = split_arrays(df_a)
    assert r1["metrics"]["oscr"]["a"] == pytest.approx(metrics.oscr(i_a, correct, o_a))


def test_self_comparison(tmp_path):
    row = write_row(tmp_path, "a", score_table(1.0, 0))
    res = compare_rows(row, row, n_boot=50, seed=0)
    for r in res["metrics"].values():
        assert r["delta"] == 0.0 and r["p_value"] == 1.0 and r["significant"] is False


def test_mismatched_image_sets(tmp_path, capsys):
    df_a = score_table(1.0, 0)
    df_b = score_table(1.0, 1).iloc[:-3]  # three hard images missing
    row_a, row_b = write_row(tmp_path, "a", df_a), write_row(tmp_path, "b", df_b)
    with pytest.raises(InputError, match="different image sets") as e:
        compare_rows(row_a, row_b, n_boot=10)
    assert row_a in str(e.value) and row_b in str(e.value)
    assert "3 images only in the first" in str(e.value)

    assert cli.main(["compare", row_a, row_b, "--n-boot", "10"]) == 2
    err = capsys.readouterr().err
    assert "different image sets" in err and row_a in err and row_b in err


def test_bad_inputs(tmp_path):
    df = score_table(1.0, 0)
    row_a = write_row(tmp_path, "a", df)
    no_key = tmp_path / "nokey.json"
    write_json(no_key, {"metrics": {}})
    with pytest.raises(InputError, match="scores_file"):
        compare_rows(row_a, no_key, n_boot=10)
    missing = tmp_path / "missing.json"
    write_json(missing, {"scores_file": str(tmp_path / "nope.parquet")})
    with pytest.raises(InputError, match="not found"):
        compare_rows(row_a, missing, n_boot=10)
    relabelled = df.copy()
    relabelled.loc[0, "label"] = -1
    row_r = write_row(tmp_path, "r", relabelled)
    with pytest.raises(InputError, match="label"):
        compare_rows(row_a, row_r, n_boot=10)
    no_col = write_row(tmp_path, "c", df.drop(columns=["pred"]))
    with pytest.raises(InputError, match="columns"):
        compare_rows(row_a, no_col, n_boot=10)


# ---- replicates: the two-level paired comparison ---------------------------------------------
def write_replicated_row(root, name: str, shifts, seed: int) -> str:
    """A row JSON as the workflow writes it: replicate score files named relative to the
    workflow folder (``results/...``), the JSON at ``results/toy/rows/t/<name>.json``."""
    files = []
    for r, shift in enumerate(shifts):
        rel = f"results/toy/scores/{name}/rep~{r}.parquet"
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        score_table(shift, seed + r).to_parquet(root / rel, index=False)
        files.append(rel)
    row = root / f"results/toy/rows/t/{name}.json"
    write_json(row, {"replicate_scores_files": files, "scores_file": files[0]})
    return str(row)


def image_only_test(a_shift, b_shift, seed_a, seed_b):
    """Today's test: the paired image bootstrap of replicate 0 only."""
    i_a, o_a = split_arrays(score_table(a_shift, seed_a))
    i_b, o_b = split_arrays(score_table(b_shift, seed_b))
    return metrics.paired_bootstrap(i_a, o_a, i_b, o_b, n_boot=500, seed=0)["auroc"]


def test_seeds_that_disagree_are_not_significant_any_more(tmp_path):
    # replicate 0 shows a large effect of A; replicates 1 and 2 show the opposite
    a = write_replicated_row(tmp_path, "a", (2.0, 0.6, 0.6), seed=0)
    b = write_replicated_row(tmp_path, "b", (0.8, 1.2, 1.2), seed=10)
    old = image_only_test(2.0, 0.8, 0, 10)
    assert old["p_value"] < 0.05 and old["ci"][0] > 0  # image noise alone: "significant"
    new = compare_rows(a, b, n_boot=500, seed=0)
    r = new["metrics"]["auroc"]
    assert new["n_pairs"] == 3 and new["bootstrap"] == "two_level"
    assert r["p_value"] >= 0.05 and r["ci"][0] < 0 < r["ci"][1] and not r["significant"]
    # the effect is the difference of the replicate means
    mean_a = np.mean(
        [
            metrics.auroc(*split_arrays(score_table(s, r)))
            for s, r in zip((2.0, 0.6, 0.6), (0, 1, 2), strict=True)
        ]
    )
    assert r["a"] == pytest.approx(mean_a)


def test_a_consistent_effect_is_significant_in_both_tests(tmp_path):
    a = write_replicated_row(tmp_path, "a", (1.6, 1.6, 1.6), seed=0)
    b = write_replicated_row(tmp_path, "b", (0.8, 0.8, 0.8), seed=10)
    old = image_only_test(1.6, 0.8, 0, 10)
    assert old["p_value"] < 0.05
    r = compare_rows(a, b, n_boot=500, seed=0)["metrics"]["auroc"]
    assert r["p_value"] < 0.05 and r["ci"][0] > 0 and r["significant"]


def test_compare_works_from_any_working_directory(tmp_path, monkeypatch, capsys):
    work = tmp_path / "work"
    a = write_replicated_row(work, "a", (1.6, 1.0), seed=0)
    b = write_replicated_row(work, "b", (0.8, 1.1), seed=10)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # neither the workflow folder nor the row's
    assert cli.main(["compare", a, b, "--n-boot", "100"]) == 0
    assert "2 replicate pair(s), two-level paired bootstrap" in capsys.readouterr().out
    monkeypatch.chdir(work / "results/toy/rows")  # a relative row path from below the root
    res = compare_rows("t/a.json", "t/b.json", n_boot=100)
    assert res["n_pairs"] == 2
    # a row whose score file is nowhere above it: a clear error naming the row
    (tmp_path / "lost").mkdir()
    write_json(tmp_path / "lost/r.json", {"scores_file": "results/toy/scores/none.parquet"})
    with pytest.raises(InputError, match=r"r\.json: scores file .* not found beside the row"):
        compare_rows(tmp_path / "lost/r.json", a, n_boot=10)


def test_rows_with_different_replicate_counts_pair_the_common_ones(tmp_path, capsys):
    a = write_replicated_row(tmp_path, "a", (1.6, 1.0, 1.2), seed=0)
    b = write_replicated_row(tmp_path, "b", (0.8,), seed=10)
    res = compare_rows(a, b, n_boot=100)
    assert (res["n_replicates_a"], res["n_replicates_b"], res["n_pairs"]) == (3, 1, 1)
    assert res["bootstrap"] == "images"
    assert "comparing the first 1" in capsys.readouterr().out
