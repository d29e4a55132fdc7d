"""Metrics against hand-computed values and scikit-learn; bootstrap and paired tests."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import norm
from sklearn.metrics import auc, precision_recall_curve, roc_auc_score, roc_curve

from sure_ood import metrics as M

# --------------------------------------------------------------------------------------------
# references
# --------------------------------------------------------------------------------------------


def sk_fpr_id_pos(i, o, tpr=0.95):
    """FPR at the first ROC point (no points dropped) with TPR >= tpr, ID positive."""
    y = np.r_[np.ones(len(i)), np.zeros(len(o))]
    fpr, tprs, _ = roc_curve(y, np.r_[i, o], drop_intermediate=False)
    return fpr[np.argmax(tprs >= tpr)]


def sk_fpr_ood_pos(i, o, tpr=0.95, drop_intermediate=False):
    """OpenOOD v1.5: roc_curve(is_ood, -conf); fpr[argmax(tpr >= 0.95)]."""
    y = np.r_[np.zeros(len(i)), np.ones(len(o))]
    fpr, tprs, _ = roc_curve(y, -np.r_[i, o], drop_intermediate=drop_intermediate)
    return fpr[np.argmax(tprs >= tpr)]


def sk_aupr(i, o, out=False):
    y = np.r_[np.ones(len(i)), np.zeros(len(o))]
    s = np.r_[i, o]
    p, r, _ = precision_recall_curve(1 - y, -s) if out else precision_recall_curve(y, s)
    return auc(r, p)


def reference_fpr_ssb(i, o):
    """ReAct/SSB/SSB-OSR code: tau = ascending ID at round(0.05 N), FPR = mean(OOD > tau)."""
    tau = np.sort(i)[round(0.05 * len(i))]
    return np.mean(np.asarray(o) > tau)


def gaussians(n_id, n_ood, d=1.0, seed=0, decimals=None):
    rng = np.random.default_rng(seed)
    i, o = rng.normal(d, 1.0, n_id), rng.normal(0.0, 1.0, n_ood)
    if decimals is not None:  # many ties
        i, o = np.round(i, decimals), np.round(o, decimals)
    return i, o


# --------------------------------------------------------------------------------------------
# hand-computed small cases
# --------------------------------------------------------------------------------------------


def test_perfect_separation():
    m = M.ood_metrics([3.0, 4.0, 5.0], [0.0, 1.0, 2.0])
    assert m == {
        "auroc": 1.0,
        "fpr_at_95_tpr": 0.0,
        "fpr95_ood_pos": 0.0,
        "aupr_in": 1.0,
        "aupr_out": 1.0,
    }


def test_reversed_order():
    i, o = [0.0, 1.0, 2.0], [3.0, 4.0, 5.0]
    m = M.ood_metrics(i, o)
    assert m["auroc"] == 0.0
    assert m["fpr_at_95_tpr"] == 1.0 and m["fpr95_ood_pos"] == 1.0
    # PR(ID): (r,p) = (0,1) start, three OOD-only points (0,0), then (1/3,1/4) (2/3,2/5) (1,1/2)
    # trapezoid = 1/3 * [(0+1/4) + (1/4+2/5) + (2/5+1/2)] / 2 = 0.3
    assert m["aupr_in"] == pytest.approx(0.3, abs=1e-12)
    assert m["aupr_out"] == pytest.approx(0.3, abs=1e-12)  # symmetric case


def test_ties():
    i, o = [1.0, 1.0, 2.0, 3.0], [0.0, 1.0, 1.0]
    # pairs won: ID 1 (x2): 1 + 0.5 + 0.5 each; ID 2, 3: 3 each -> 10 / 12
    assert M.auroc(i, o) == pytest.approx(10 / 12)
    # k = ceil(0.95 * 4) = 4 -> t = 1 (lowest ID); OOD >= 1: 2 of 3 (ties accepted)
    assert M.fpr_at_95_tpr(i, o) == pytest.approx(2 / 3)
    # the reference code counts OOD strictly above the threshold -> 0
    assert reference_fpr_ssb(i, o) == 0.0
    # OOD positive: all 3 OOD flagged at u = 1; ID <= 1: 2 of 4
    assert M.fpr_at_95_tpr_ood_positive(i, o) == 0.5


def test_all_equal_scores():
    i, o = [0.5] * 4, [0.5] * 6
    m = M.ood_metrics(i, o)
    assert m["auroc"] == 0.5
    assert m["fpr_at_95_tpr"] == 1.0 and m["fpr95_ood_pos"] == 1.0
    # one PR point (recall 1, precision = prevalence) + start (0, 1): trapezoid (1 + pi) / 2
    assert m["aupr_in"] == pytest.approx((1 + 0.4) / 2)
    assert m["aupr_out"] == pytest.approx((1 + 0.6) / 2)


@pytest.mark.parametrize(("n", "k"), [(1, 1), (10, 10), (20, 19), (30, 29), (100, 95), (101, 96)])
def test_k_for(n, k):
    assert M._k_for(0.95, n) == k
    assert k / n >= 0.95 and (k == 1 or (k - 1) / n < 0.95)


def test_fpr_non_integer_005n():
    # N_id = 30: 0.05 * 30 = 1.5. k = ceil(28.5) = 29 -> t = 29th largest = 2.0 (29/30 >= 95 %)
    i = np.arange(1.0, 31.0)
    o = [0.5, 1.5, 2.0, 2.5]
    assert M.fpr_at_95_tpr(i, o) == 0.5  # 2.0 (tie, accepted) and 2.5
    assert np.mean(i >= 2.0) >= 0.95 and np.mean(i >= 3.0) < 0.95
    # reference: round(1.5) = 2 -> tau = 3.0 (only 28/30 = 93 % of ID >= tau), OOD > 3: none
    assert reference_fpr_ssb(i, o) == 0.0
    assert M.fpr_at_95_tpr(i, o) == sk_fpr_id_pos(i, o)


def test_fpr_other_tpr():
    i, o = np.arange(10.0), np.arange(10.0) - 0.5
    # tpr 0.5: k = 5 -> t = 5 (5th largest of 0..9); OOD -0.5..8.5 >= 5: 5.5 6.5 7.5 8.5
    assert M.fpr_at_95_tpr(i, o, tpr=0.5) == 0.4
    assert M.fpr_at_95_tpr(i, o, tpr=1.0) == 0.9  # t = 0
    with pytest.raises(ValueError):
        M.fpr_at_95_tpr(i, o, tpr=0.0)


def test_accuracy_and_seed_summary():
    assert M.accuracy([0, 1, 2, 2], [0, 1, 1, 2]) == 0.75
    with pytest.raises(ValueError):
        M.accuracy([0, 1], [0])
    assert M.seed_summary([1.0, 2.0, 3.0]) == (2.0, 1.0)
    assert M.seed_summary([0.7]) == (0.7, 0.0)
    mean, std = M.seed_summary([0.81, 0.84])
    assert mean == pytest.approx(0.825) and std == pytest.approx(np.std([0.81, 0.84], ddof=1))
    with pytest.raises(ValueError):
        M.seed_summary([])


# --------------------------------------------------------------------------------------------
# OSCR
# --------------------------------------------------------------------------------------------

OSCR_ID = np.array([0.9, 0.8, 0.4, 0.2])
OSCR_OK = np.array([True, False, True, True])


def test_oscr_by_hand():
    # descending: .9 ID ok, .8 ID wrong, .7 OOD, .4 ID ok, .3 OOD, .2 ID ok, .1 OOD
    # (FPR, CCR): (0,0) (0,1/4) (0,1/4) (1/3,1/4) (1/3,1/2) (2/3,1/2) (2/3,3/4) (1,3/4)
    # area = 1/3 * (1/4 + 1/2 + 3/4) = 1/2
    assert M.oscr(OSCR_ID, OSCR_OK, [0.7, 0.3, 0.1]) == pytest.approx(0.5)
    # OOD 0.3 -> 0.4 ties with a correct ID: diagonal (1/3,1/4)->(2/3,1/2), area 1/8
    # total = 1/12 + 1/8 + 1/4 = 11/24
    assert M.oscr(OSCR_ID, OSCR_OK, [0.7, 0.4, 0.1]) == pytest.approx(11 / 24)


def test_oscr_aligned_and_special_cases():
    o = np.array([0.7, 0.3, 0.1])
    perm = np.array([2, 0, 3, 1])
    assert M.oscr(OSCR_ID[perm], OSCR_OK[perm], o) == pytest.approx(0.5)
    # the reference bug (scores sorted in place, correctness not) gives another number
    assert M.oscr(np.sort(OSCR_ID), OSCR_OK, o) != pytest.approx(0.5)
    i, o2 = gaussians(200, 150, decimals=1, seed=3)
    assert M.oscr(i, np.ones(200, bool), o2) == pytest.approx(M.auroc(i, o2), abs=1e-12)
    assert M.oscr(i, np.zeros(200, bool), o2) == 0.0


def test_ood_metrics_with_preds():
    o = [0.7, 0.3, 0.1]
    m = M.ood_metrics(OSCR_ID, o, id_preds=[1, 0, 2, 3], id_labels=[1, 5, 2, 3])
    assert m["id_accuracy"] == 0.75 and m["oscr"] == pytest.approx(0.5)
    assert set(m) == {
        "auroc",
        "fpr_at_95_tpr",
        "fpr95_ood_pos",
        "aupr_in",
        "aupr_out",
        "id_accuracy",
        "oscr",
    }
    assert all(0.0 <= v <= 1.0 for v in m.values())
    with pytest.raises(ValueError, match="both"):
        M.ood_metrics(OSCR_ID, o, id_preds=[1, 0, 2, 3])
    with pytest.raises(ValueError, match="match"):
        M.ood_metrics(OSCR_ID, o, id_preds=[1, 0, 2], id_labels=[1, 0, 2])


# --------------------------------------------------------------------------------------------
# against scikit-learn on random data (with and without ties)
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("decimals", [None, 1, 0])
@pytest.mark.parametrize(("n_id", "n_ood"), [(37, 23), (400, 1000), (1001, 99)])
def test_against_sklearn(n_id, n_ood, decimals):
    i, o = gaussians(n_id, n_ood, d=1.2, seed=n_id + n_ood, decimals=decimals)
    y = np.r_[np.ones(n_id), np.zeros(n_ood)]
    assert M.auroc(i, o) == pytest.approx(roc_auc_score(y, np.r_[i, o]), abs=1e-12)
    assert M.fpr_at_95_tpr(i, o) == pytest.approx(sk_fpr_id_pos(i, o), abs=1e-12)
    assert M.fpr_at_95_tpr_ood_positive(i, o) == pytest.approx(sk_fpr_ood_pos(i, o), abs=1e-12)
    if decimals is None:  # no ties: OpenOOD's default drop_intermediate gives the same number
        assert M.fpr_at_95_tpr_ood_positive(i, o) == sk_fpr_ood_pos(i, o, drop_intermediate=True)
    assert M.aupr_in(i, o) == pytest.approx(sk_aupr(i, o), abs=1e-12)
    assert M.aupr_out(i, o) == pytest.approx(sk_aupr(i, o, out=True), abs=1e-12)
    # our FPR is never below the reference code's (lower-or-equal threshold, ties accepted)
    assert M.fpr_at_95_tpr(i, o) >= reference_fpr_ssb(i, o)


def test_inputs_not_modified():
    i, o = gaussians(101, 57, seed=5, decimals=1)
    preds = np.arange(101) % 3
    labels = np.r_[preds[:60], (preds[60:] + 1) % 3]
    backup = [a.copy() for a in (i, o, preds, labels)]
    M.ood_metrics(i, o, preds, labels)
    M.oscr(i, preds == labels, o)
    M.bootstrap_ci(i, o, n_boot=5)
    M.bootstrap_ci(i, o, metrics=M.ALL_METRICS, n_boot=5, id_correct=preds == labels)
    M.paired_bootstrap(i, o, i + 1.0, o, n_boot=5)
    for a, b in zip((i, o, preds, labels), backup, strict=True):
        np.testing.assert_array_equal(a, b)


# --------------------------------------------------------------------------------------------
# non-finite scores
# --------------------------------------------------------------------------------------------


def test_nan_raise_names_counts():
    with pytest.raises(ValueError, match=r"1 of 3 ID scores and 2 of 4 OOD scores"):
        M.ood_metrics([np.nan, 1.0, 2.0], [0.0, np.inf, np.nan, 1.0])
    with pytest.raises(ValueError, match="non-finite"):
        M.bootstrap_ci([np.nan, 1.0], [0.0, 1.0], n_boot=3)


def test_nan_worst():
    i, o = [np.nan, 3.0, 4.0], [0.0, 1.0, np.nan]
    m = M.ood_metrics(i, o, nan_policy="worst")
    assert m.pop("n_nonfinite") == 2
    # ID NaN below everything (rejected), OOD NaN above everything (accepted)
    assert m == M.ood_metrics([-1.0, 3.0, 4.0], [0.0, 1.0, 5.0])
    assert m["auroc"] == pytest.approx(4 / 9)  # ID 3 and 4 beat OOD 0 and 1
    assert M.ood_metrics([1.0, 2.0], [0.0], nan_policy="worst")["n_nonfinite"] == 0
    with pytest.raises(ValueError, match="nan_policy"):
        M.ood_metrics(i, o, nan_policy="drop")


# --------------------------------------------------------------------------------------------
# bootstrap
# --------------------------------------------------------------------------------------------


def test_bootstrap_perfect_separation():
    ci = M.bootstrap_ci(
        np.linspace(2, 3, 50),
        np.linspace(0, 1, 80),
        n_boot=200,
        metrics=("auroc", "fpr_at_95_tpr", "fpr95_ood_pos", "aupr_in", "aupr_out"),
    )
    assert ci["auroc"] == (1.0, 1.0)
    assert ci["fpr_at_95_tpr"] == (0.0, 0.0) and ci["fpr95_ood_pos"] == (0.0, 0.0)
    assert ci["aupr_in"] == (1.0, 1.0) and ci["aupr_out"] == (1.0, 1.0)


@pytest.mark.parametrize("decimals", [None, 1])
def test_bootstrap_resamples_equal_point_metrics(decimals):
    i, o = gaussians(300, 200, seed=11, decimals=decimals)
    correct = np.random.default_rng(2).random(300) < 0.7
    n_boot, seed = 12, 4
    dist = M.bootstrap_distribution(
        i, o, M.ALL_METRICS, n_boot, seed, id_correct=correct, batch_size=5
    )
    idx = list(M._resample_indices(300, 200, n_boot, seed, None, 1))
    assert len(idx) == 1
    for b in range(n_boot):
        ii, oo = idx[0][0][b], idx[0][1][b]
        ib, ob, cb = i[ii], o[oo], correct[ii]
        y = np.r_[np.ones(300), np.zeros(200)]
        assert dist["auroc"][b] == pytest.approx(roc_auc_score(y, np.r_[ib, ob]), abs=1e-12)
        assert dist["fpr_at_95_tpr"][b] == pytest.approx(sk_fpr_id_pos(ib, ob), abs=1e-12)
        assert dist["fpr95_ood_pos"][b] == pytest.approx(sk_fpr_ood_pos(ib, ob), abs=1e-12)
        assert dist["aupr_in"][b] == pytest.approx(sk_aupr(ib, ob), abs=1e-12)
        assert dist["aupr_out"][b] == pytest.approx(sk_aupr(ib, ob, out=True), abs=1e-12)
        assert dist["oscr"][b] == pytest.approx(M.oscr(ib, cb, ob), abs=1e-12)
        assert dist["id_accuracy"][b] == pytest.approx(cb.mean(), abs=1e-12)


def test_bootstrap_seeded_and_batch_independent():
    i, o = gaussians(500, 400, seed=1)
    a = M.bootstrap_ci(i, o, n_boot=100, seed=3)
    assert a == M.bootstrap_ci(i, o, n_boot=100, seed=3)
    assert a == M.bootstrap_ci(i, o, n_boot=100, seed=3, batch_size=7)
    assert a != M.bootstrap_ci(i, o, n_boot=100, seed=4)


def test_bootstrap_narrows_with_n():
    small = M.bootstrap_ci(*gaussians(100, 100, seed=0), n_boot=300)
    large = M.bootstrap_ci(*gaussians(10_000, 10_000, seed=0), n_boot=300)
    point = M.ood_metrics(*gaussians(10_000, 10_000, seed=0))
    for m in ("auroc", "fpr_at_95_tpr", "aupr_in", "aupr_out"):
        w_small, w_large = small[m][1] - small[m][0], large[m][1] - large[m][0]
        assert 0 < w_large < w_small / 3  # ~ sqrt(100) = 10x narrower expected
        assert large[m][0] <= point[m] <= large[m][1]


def test_bootstrap_alpha_and_errors():
    i, o = gaussians(200, 200, seed=2)
    wide, narrow = M.bootstrap_ci(i, o, alpha=0.01), M.bootstrap_ci(i, o, alpha=0.5)
    assert wide["auroc"][0] < narrow["auroc"][0] < narrow["auroc"][1] < wide["auroc"][1]
    with pytest.raises(ValueError, match="unknown"):
        M.bootstrap_ci(i, o, metrics=("auc",))
    with pytest.raises(ValueError, match="id_correct"):
        M.bootstrap_ci(i, o, metrics=("oscr",))


# --------------------------------------------------------------------------------------------
# paired bootstrap
# --------------------------------------------------------------------------------------------


def test_paired_self_is_zero():
    i, o = gaussians(300, 300, seed=7)
    res = M.paired_bootstrap(i, o, i, o, n_boot=200)
    for r in res.values():
        assert r["delta"] == 0.0 and r["ci"] == (0.0, 0.0) and r["p_value"] == 1.0


def test_paired_uses_same_indices():
    # a monotone transform of the scores leaves every rank metric unchanged on any resample;
    # only if A and B get the same resampled images are all bootstrap deltas exactly 0
    i, o = gaussians(300, 300, seed=8, decimals=1)
    names = ("auroc", "fpr_at_95_tpr", "fpr95_ood_pos", "aupr_in", "aupr_out")
    res = M.paired_bootstrap(i, o, np.exp(i), np.exp(o), metrics=names, n_boot=200)
    for r in res.values():
        assert r["delta"] == 0.0 and r["ci"] == (0.0, 0.0) and r["p_value"] == 1.0


def test_paired_clearly_different():
    rng = np.random.default_rng(0)
    n = 1000  # 1000 ID + 1000 OOD images
    ia, oa = rng.normal(np.sqrt(2) * norm.ppf(0.95), 1, n), rng.normal(0, 1, n)
    ib, ob = rng.normal(np.sqrt(2) * norm.ppf(0.60), 1, n), rng.normal(0, 1, n)
    res = M.paired_bootstrap(ia, oa, ib, ob, n_boot=500)
    r = res["auroc"]
    assert r["a"] == pytest.approx(M.auroc(ia, oa)) and r["b"] == pytest.approx(M.auroc(ib, ob))
    assert r["delta"] == pytest.approx(0.35, abs=0.05)
    assert r["ci"][0] > 0 and r["p_value"] < 0.01
    assert r["p_value"] == pytest.approx(2 / 501)  # every resampled delta > 0
    assert res["fpr_at_95_tpr"]["delta"] < 0 and res["fpr_at_95_tpr"]["p_value"] < 0.01


def test_paired_p_value_formula():
    # a small, noisy difference: p equals the documented formula on the resampled deltas
    i, o = gaussians(200, 200, seed=9)
    rng = np.random.default_rng(1)
    ib, ob = i + rng.normal(0, 0.3, 200), o + rng.normal(0, 0.3, 200)
    res = M.paired_bootstrap(i, o, ib, ob, metrics=("auroc",), n_boot=300, seed=5)["auroc"]
    da = M.bootstrap_distribution(i, o, ("auroc",), 300, 5)["auroc"]
    db = M.bootstrap_distribution(ib, ob, ("auroc",), 300, 5)["auroc"]
    d = da - db  # same seed -> same resampled images
    p = min(1.0, 2 * (1 + min((d <= 0).sum(), (d >= 0).sum())) / 301)
    assert res["p_value"] == pytest.approx(p)
    assert res["ci"] == pytest.approx(tuple(np.quantile(d, [0.025, 0.975])))
    assert 0 < res["p_value"] <= 1


def test_paired_with_correctness_and_errors():
    i, o = gaussians(100, 80, seed=10)
    ok = np.arange(100) % 4 != 0
    res = M.paired_bootstrap(
        i,
        o,
        i,
        o,
        metrics=("oscr", "id_accuracy"),
        n_boot=50,
        id_correct_a=ok,
        id_correct_b=np.ones(100, bool),
    )
    assert res["id_accuracy"]["delta"] == pytest.approx(-0.25)
    assert res["oscr"]["a"] == pytest.approx(M.oscr(i, ok, o))
    assert res["oscr"]["b"] == pytest.approx(M.auroc(i, o))
    with pytest.raises(ValueError, match="same images"):
        M.paired_bootstrap(i, o, i[:-1], o)


# --------------------------------------------------------------------------------------------
# two-level bootstrap (training replicates, then images)
# --------------------------------------------------------------------------------------------


def loop_two_level(reps, n_boot, seed, paired=False):
    """Reference: explicit loops with scikit-learn, on the documented random streams.

    SeedSequence(seed).spawn(R + 1): child 0 draws R replicate indices per resample (one
    ``integers(0, R, (n_boot, R))`` call); child j + 1 draws replicate j's image resamples in
    increasing resample order, as ``bootstrap_distribution`` does with that seed sequence.
    """
    n_rep = len(reps)
    children = np.random.SeedSequence(seed).spawn(n_rep + 1)
    picks = np.random.default_rng(children[0]).integers(0, n_rep, size=(n_boot, n_rep))
    streams = []
    for j, rep in enumerate(reps):
        n_id, n_ood = len(rep[0]), len(rep[1])
        ss_id, ss_ood = children[j + 1].spawn(2)
        streams.append((np.random.default_rng(ss_id), np.random.default_rng(ss_ood), n_id, n_ood))
    # every replicate's stream hands out resamples in increasing b: collect its draws per b
    # first (a draw of replicate j at resample b uses the next resample of stream j)
    per_b = [[] for _ in range(n_boot)]
    for j in range(n_rep):
        rng_i, rng_o, n_id, n_ood = streams[j]
        need = int((picks == j).sum())
        idx_i = rng_i.integers(0, n_id, size=(need, n_id))
        idx_o = rng_o.integers(0, n_ood, size=(need, n_ood))
        k = 0
        for b in range(n_boot):
            for _ in range(int((picks[b] == j).sum())):
                per_b[b].append((j, idx_i[k], idx_o[k]))
                k += 1
    out = []
    for b in range(n_boot):
        vals = []
        for j, ii, oo in per_b[b]:
            if paired:
                ia, oa, ib, ob = reps[j]
                y = np.r_[np.ones(len(ii)), np.zeros(len(oo))]
                auc_a = roc_auc_score(y, np.r_[ia[ii], oa[oo]])
                vals.append(auc_a - roc_auc_score(y, np.r_[ib[ii], ob[oo]]))
            else:
                i, o = reps[j]
                y = np.r_[np.ones(len(ii)), np.zeros(len(oo))]
                vals.append(roc_auc_score(y, np.r_[i[ii], o[oo]]))
        out.append(np.mean(vals))
    return np.array(out)


def test_two_level_equals_the_loop_reference():
    reps = [gaussians(40, 30, d=d, seed=s) for d, s in ((1.0, 0), (0.3, 1), (2.0, 2))]
    dist = M.two_level_bootstrap_distribution(reps, ("auroc",), n_boot=25, seed=4)["auroc"]
    assert dist == pytest.approx(loop_two_level(reps, 25, 4), abs=1e-12)


def test_two_level_paired_equals_the_loop_reference():
    pairs = []
    for s in range(3):
        i, o = gaussians(40, 30, d=0.5 + s, seed=s)
        rng = np.random.default_rng(10 + s)
        pairs.append((i, o, i + rng.normal(0, 0.5, 40), o + rng.normal(0, 0.5, 30)))
    res = M.two_level_paired_bootstrap(pairs, ("auroc",), n_boot=25, seed=6)["auroc"]
    d = loop_two_level(pairs, 25, 6, paired=True)
    assert res["ci"] == pytest.approx(tuple(np.quantile(d, [0.025, 0.975])), abs=1e-12)
    p = min(1.0, 2 * (1 + min((d <= 0).sum(), (d >= 0).sum())) / 26)
    assert res["p_value"] == pytest.approx(p)
    # point values: means over the replicates of the per-replicate metrics
    assert res["a"] == pytest.approx(np.mean([M.auroc(p[0], p[1]) for p in pairs]))
    assert res["b"] == pytest.approx(np.mean([M.auroc(p[2], p[3]) for p in pairs]))


def test_two_level_with_one_replicate_is_the_image_bootstrap():
    i, o = gaussians(200, 150, seed=3)
    ok = np.arange(200) % 3 != 0
    names = ("auroc", "fpr_at_95_tpr", "oscr")
    two = M.two_level_bootstrap_distribution([(i, o)], names, 80, 2, id_correct=[ok])
    one = M.bootstrap_distribution(i, o, names, 80, 2, id_correct=ok)
    for m in names:
        np.testing.assert_array_equal(two[m], one[m])
    rng = np.random.default_rng(0)
    ib, ob = i + rng.normal(0, 0.3, 200), o + rng.normal(0, 0.3, 150)
    assert M.two_level_paired_bootstrap([(i, o, ib, ob)], n_boot=80, seed=2) == (
        M.paired_bootstrap(i, o, ib, ob, n_boot=80, seed=2)
    )


def test_two_level_is_seeded_and_batch_independent():
    reps = [gaussians(300, 200, d=d, seed=s) for d, s in ((1.0, 0), (1.4, 1), (0.8, 2))]
    a = M.two_level_bootstrap_ci(reps, n_boot=60, seed=1)
    assert a == M.two_level_bootstrap_ci(reps, n_boot=60, seed=1, batch_size=7)
    assert a != M.two_level_bootstrap_ci(reps, n_boot=60, seed=2)


def test_two_level_interval_includes_the_spread_of_the_seeds():
    # three replicates far apart (training noise) with many images (little test-set noise):
    # the image bootstrap of one replicate is narrow, the two-level interval spans the seeds
    reps = [gaussians(2000, 2000, d=d, seed=s) for d, s in ((0.5, 0), (1.0, 1), (1.5, 2))]
    seeds = [M.auroc(*r) for r in reps]
    two = M.two_level_bootstrap_ci(reps, ("auroc",), n_boot=400, seed=0)["auroc"]
    one = M.bootstrap_ci(*reps[1], metrics=("auroc",), n_boot=400, seed=0)["auroc"]
    assert one[1] - one[0] < 0.04
    assert two[0] < np.mean(seeds) < two[1]
    assert two[1] - two[0] > 0.2  # means of 3 draws from seeds spread over ~0.3
    assert two[0] >= min(seeds) - 0.02 and two[1] <= max(seeds) + 0.02


def test_two_level_pairs_replicates_by_index():
    # seed noise shared by A and B within a pair (one parent run): it cancels when paired by
    # index; pairing A's replicate 0 with B's replicate 2 instead would not
    pairs = []
    for s, d in enumerate((0.2, 1.0, 2.0)):
        i, o = gaussians(500, 500, d=d, seed=s)
        pairs.append((i + 0.15, o, i, o))  # A = B shifted up on ID only: always better
    res = M.two_level_paired_bootstrap(pairs, ("auroc",), n_boot=300, seed=0)["auroc"]
    assert res["ci"][0] > 0 and res["p_value"] < 0.01
    crossed = [(pairs[j][0], pairs[j][1], pairs[2 - j][2], pairs[2 - j][3]) for j in range(3)]
    # the same arrays paired across seeds: the seed effect no longer cancels
    res_x = M.two_level_paired_bootstrap(crossed, ("auroc",), n_boot=300, seed=0)["auroc"]
    assert res_x["ci"][0] < 0 < res_x["ci"][1]


def test_two_level_self_comparison_and_errors():
    reps = [gaussians(100, 80, seed=s) for s in range(3)]
    res = M.two_level_paired_bootstrap([(i, o, i, o) for i, o in reps], n_boot=50)
    for r in res.values():
        assert r["delta"] == 0.0 and r["ci"] == (0.0, 0.0) and r["p_value"] == 1.0
    with pytest.raises(ValueError, match="no replicate"):
        M.two_level_paired_bootstrap([], n_boot=10)
    with pytest.raises(ValueError, match="no replicates"):
        M.two_level_bootstrap_distribution([], n_boot=10)
    with pytest.raises(ValueError, match="same images"):
        i, o = reps[0]
        M.two_level_paired_bootstrap([(i, o, i, o), (i, o, i[:-1], o)], n_boot=10)
