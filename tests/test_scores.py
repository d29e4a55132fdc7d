"""Post-hoc scores: every method against an independent numpy formula, registry-wide behaviour,
fitted-state round trips and the ``sure-ood score`` CLI.

References here are written from the papers' formulas with plain loops / scipy, separately from
the vectorised implementations in ``sure_ood.scores``. Torch-based references (autograd GradNorm,
pytorch-ood detectors, ODIN) are in ``test_scores_torch.py``.
"""

from __future__ import annotations

import logging
import math
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from scipy.spatial.distance import cdist
from scipy.stats import entropy as kl_div

from sure_ood import scores
from sure_ood.cache import FeatureCache, load_cache, save_cache
from sure_ood.cli import main as cli_main
from sure_ood.io import InputError, load_npz
from sure_ood.stages.score import score_files

C, D = 5, 8


# ----------------------------------------------------------------------------- fixtures
def make_cache(
    n: int,
    seed: int,
    head: str = "linear",
    bias: bool = True,
    clip: float | None = None,
    labelled: bool = True,
    source: str = "<test>",
) -> FeatureCache:
    """Random features clustered around the (fixed) head rows; logits through the head."""
    w = np.random.default_rng(100).normal(size=(C, D))
    b = np.random.default_rng(101).normal(size=C) if bias and head == "linear" else None
    rng = np.random.default_rng(seed)
    y = np.arange(n) % C  # every class present
    h = rng.normal(size=(n, D)) + 1.5 * w[y]
    if head == "linear":
        z = h @ w.T + (b if b is not None else 0.0)
    else:
        hc = np.minimum(h, clip) if clip is not None else h
        hn = hc / np.linalg.norm(hc, axis=1, keepdims=True)
        wn = w / np.linalg.norm(w, axis=1, keepdims=True)
        z = 8.0 * hn @ wn.T
    return FeatureCache(
        logits=z,
        features=h,
        labels=y if labelled else -np.ones(n, dtype=np.int64),
        head_weight=w,
        head_bias=b,
        head_type=head,
        head_temperature=8.0 if head == "cosine" else None,
        head_feature_clip=clip,
        source=source,
        extra={"odin_score": rng.uniform(0.2, 1.0, size=n)},
    )


@pytest.fixture(scope="module")
def train() -> FeatureCache:
    return make_cache(120, seed=1)


@pytest.fixture(scope="module")
def test() -> FeatureCache:
    return make_cache(30, seed=2)


def softmax_rows(z: np.ndarray, t: float = 1.0) -> np.ndarray:
    out = np.empty_like(z, dtype=np.float64)
    for i, row in enumerate(z):
        e = [math.exp((v - row.max()) / t) for v in row]
        out[i] = np.array(e) / sum(e)
    return out


def prior_of(labels: np.ndarray) -> np.ndarray:
    counts = np.array([(labels == c).sum() for c in range(C)], dtype=float)
    return counts / counts.sum()


def fitted(name: str, train: FeatureCache, **params) -> scores.Scorer:
    return scores.get(name, **params).fit(train)


# ----------------------------------------------------------------------------- logits methods
def test_msp_maxlogit_energy_entropy(test):
    z = test.logits
    p = softmax_rows(z)
    np.testing.assert_allclose(scores.get("msp").score(test), p.max(1), rtol=1e-12)
    np.testing.assert_allclose(scores.get("max_logit").score(test), z.max(1))
    for t in (1.0, 2.5):
        ref = [t * math.log(sum(math.exp(v / t) for v in row)) for row in z]
        got = scores.get("energy", temperature=t).score(test)
        np.testing.assert_allclose(got, ref, rtol=1e-12)
    ref = [sum(pc * math.log(pc) for pc in row) for row in p]
    np.testing.assert_allclose(scores.get("entropy").score(test), ref, rtol=1e-10)


def test_python_api_scores_numpy_arrays(train, test):
    """No cache file: a logits-only method takes logits alone; fitted methods take arrays."""
    z = test.logits
    np.testing.assert_allclose(scores.get("msp").score(logits=z), softmax_rows(z, 1.0).max(1))
    with pytest.raises(InputError, match=r"method 'rp_gradnorm' reads \['features'\]"):
        scores.get("rp_gradnorm").fit(prior=np.full(C, 1 / C)).score(logits=z)
    knn = scores.get("knn", k=3).fit(scores.arrays(features=train.features, labels=train.labels))
    np.testing.assert_allclose(
        knn.score(features=test.features), scores.get("knn", k=3).fit(train).score(test)
    )
    with pytest.raises(InputError, match="'features' not given"):
        scores.get("knn", k=3).fit(scores.arrays(logits=train.logits, labels=train.labels))


def test_temperature_scaling_warns_at_a_bound(caplog):
    # perfectly separated validation logits: the NLL keeps falling as T -> 0
    z = np.eye(3)[np.arange(30) % 3] * 10.0
    val = scores.arrays(logits=z, labels=np.arange(30) % 3)
    with caplog.at_level(logging.WARNING):
        ts = scores.get("temperature_scaling").fit(val=val)
    assert ts.fitted_temperature < 1.0
    assert "at the bound" in caplog.text and "accuracy 100.0 %" in caplog.text
    with pytest.raises(InputError, match="fitted on the validation split; none given"):
        scores.get("temperature_scaling").fit(train=val)


def test_temperature_scaling_no_warning_inside(train, caplog):
    with caplog.at_level(logging.WARNING):
        scores.get("temperature_scaling").fit(val=train)
    assert "at the bound" not in caplog.text


def test_temperature_scaling(train, test):
    fixed = scores.get("temperature_scaling", temperature=3.0, fit_temperature=False)
    assert not fixed.requires_fit  # nothing to fit
    np.testing.assert_allclose(fixed.score(test), softmax_rows(test.logits, 3.0).max(1))

    ts = scores.get("temperature_scaling").fit(val=train)  # fitted on the validation split

    def nll(t):
        p = softmax_rows(train.logits, t)
        return -np.mean(np.log(p[np.arange(len(p)), train.labels]))

    t_fit = ts.fitted_temperature
    grid = np.exp(np.linspace(np.log(0.05), np.log(50), 400))
    t_grid = grid[np.argmin([nll(t) for t in grid])]
    assert abs(np.log(t_fit) - np.log(t_grid)) < 0.02
    assert nll(t_fit) <= min(nll(t_fit * 1.01), nll(t_fit / 1.01))
    np.testing.assert_allclose(ts.score(test), softmax_rows(test.logits, t_fit).max(1))


def test_gradnorm_closed_forms(train, test):
    p1 = softmax_rows(test.logits)
    h1 = np.abs(test.features).sum(1)
    for t in (1.0, 2.5):
        pt = softmax_rows(test.logits, t)
        ref = np.abs(pt - 1 / C).sum(1) * h1 / t
        np.testing.assert_allclose(
            scores.get("gradnorm_closed", temperature=t).score(test), ref, rtol=1e-12
        )
        # linear head: the true gradient equals the closed form (logits recomputed from W h + b)
        f64 = scores.get("gradnorm", temperature=t, precision="float64")
        np.testing.assert_allclose(f64.score(test), ref, rtol=1e-9)
        f32 = scores.get("gradnorm", temperature=t)  # the default
        np.testing.assert_allclose(f32.score(test), ref, rtol=2e-6)
    pi = prior_of(train.labels)
    ref = h1 * np.abs(pi - p1).sum(1) / (D * C)
    np.testing.assert_allclose(fitted("rp_gradnorm", train).score(test), ref, rtol=1e-12)
    closed_prior = fitted("gradnorm_closed", train, target="prior")
    np.testing.assert_allclose(closed_prior.score(test), ref * D * C, rtol=1e-12)


@pytest.mark.parametrize(
    ("method", "params", "want"),
    [
        ("msp", {}, {"logits"}),
        ("knn", {"k": 3}, {"features", "train"}),
        ("gradnorm_closed", {}, {"logits", "features"}),
        ("gradnorm_closed", {"target": "prior"}, {"logits", "features", "prior"}),
        ("temperature_scaling", {}, {"logits", "val"}),
        ("temperature_scaling", {"fit_temperature": False}, {"logits"}),
        ("odin", {}, {"network"}),
    ],
)
def test_needs_follow_the_parameters(method, params, want):
    """What a method reads is a function of its parameters: the workflow asks needs_of (the
    class's needs_for) with the configured ones and gets what the built method reads."""
    assert scores.needs_of(method, params) == want
    assert scores.method_class(method).needs_for(**params) == want
    scorer = scores.get(method, **params)
    assert scorer.needs == want
    # fitted exactly when it reads a split or the prior; ``is_fitted`` is "has been fitted"
    assert scorer.requires_fit is bool(want & {"train", "val", "prior"})
    assert not scorer.is_fitted


def test_every_method_needs_at_its_defaults():
    for name in scores.available():
        cls = scores.method_class(name)
        assert scores.get(name).needs == cls.needs_for() == cls.needs == scores.needs_of(name)


def test_requires_fit_follows_target_prior(train, test):
    """gradnorm_closed with the prior as target must be fitted (it takes the prior) first."""
    with pytest.raises(RuntimeError, match="'gradnorm_closed' must be fitted"):
        scores.get("gradnorm_closed", target="prior").score(test)
    scores.get("gradnorm_closed").score(test)  # uniform target: nothing to fit


def test_fitted_is_a_deprecated_name_of_requires_fit():
    with pytest.warns(DeprecationWarning, match="use requires_fit"):
        assert scores.get("knn").fitted is True
    with pytest.warns(DeprecationWarning, match="use requires_fit"):
        assert scores.get("msp").fitted is False


def test_prior_methods(train, test):
    pi = np.array([0.1, 0.2, 0.3, 0.25, 0.15])
    p = softmax_rows(test.logits)
    cos = np.array([row @ pi / (np.linalg.norm(row) * np.linalg.norm(pi)) for row in p])
    rp_msp = scores.get("rp_msp").fit(None, pi)
    np.testing.assert_allclose(rp_msp.score(test), (p - pi).max(1), rtol=1e-12)
    e = np.array([math.log(sum(math.exp(v) for v in row)) for row in test.logits])
    np.testing.assert_allclose(
        scores.get("rw_energy").fit(None, pi).score(test), (1 - cos) * e, rtol=1e-10
    )
    odin = test.extra["odin_score"]
    np.testing.assert_allclose(
        scores.get("rw_odin").fit(None, pi).score(test), (1 - cos) * odin, rtol=1e-12
    )
    np.testing.assert_array_equal(scores.get("odin").score(test), odin)
    # prior from training labels when none is given
    np.testing.assert_allclose(fitted("rp_msp", train).prior, prior_of(train.labels))


def test_prior_validation(train):
    with pytest.raises(InputError, match="length 4"):
        scores.get("rp_msp").fit(train, np.full(4, 0.25))
    with pytest.raises(InputError, match="sums to"):
        scores.get("rp_msp").fit(None, np.full(C, 0.3))
    with pytest.raises(InputError, match="negative"):
        scores.get("rp_msp").fit(None, np.array([-0.1, 0.3, 0.3, 0.3, 0.2]))
    with pytest.raises(InputError, match="needs a class prior"):
        scores.get("rp_msp").fit(None, None)


def test_rw_warns_on_negative_base(caplog):
    c = make_cache(10, seed=3)
    c.logits = c.logits - 100.0  # energy < 0
    with caplog.at_level(logging.WARNING):
        scores.get("rw_energy").fit(None, np.full(C, 1 / C)).score(c)
    assert "negative" in caplog.text


def test_odin_scorer_needs_rule_output(test):
    bare = FeatureCache(
        logits=test.logits,
        features=test.features,
        labels=test.labels,
        head_weight=test.head_weight,
        source="x.npz",
    )
    with pytest.raises(InputError, match="x.npz.*odin_score.*'odin' rule"):
        scores.get("odin").score(bare)


def test_kl_matching(train, test):
    p_tr = softmax_rows(train.logits)
    pred = p_tr.argmax(1)
    templates = [p_tr[pred == k].mean(0) for k in sorted(set(pred))]
    p = softmax_rows(test.logits)
    ref = [-min(kl_div(row, d) for d in templates) for row in p]
    np.testing.assert_allclose(fitted("kl_matching", train).score(test), ref, rtol=1e-9)


def test_gen(test):
    p = softmax_rows(test.logits)
    for m in (3, 100):
        ref = []
        for row in p:
            top = sorted(row, reverse=True)[: min(m, C)]
            ref.append(-sum(v**0.1 * (1 - v) ** 0.1 for v in top))
        np.testing.assert_allclose(scores.get("gen", top_m=m).score(test), ref, rtol=1e-12)


# ----------------------------------------------------------------------------- feature methods
def _energy_linear(h, cache):
    z = h @ cache.head_weight.T + (cache.head_bias if cache.head_bias is not None else 0)
    return np.array([math.log(sum(math.exp(v) for v in row)) for row in z])


def _energy_cosine(h, cache):
    if cache.head_feature_clip is not None:
        h = np.minimum(h, cache.head_feature_clip)
    hn = h / np.linalg.norm(h, axis=1, keepdims=True)
    wn = cache.head_weight / np.linalg.norm(cache.head_weight, axis=1, keepdims=True)
    z = cache.head_temperature * hn @ wn.T
    return np.array([math.log(sum(math.exp(v) for v in row)) for row in z])


@pytest.mark.parametrize("head", ["linear", "cosine"])
def test_react(head):
    tr, te = make_cache(120, 1, head=head, clip=2.0), make_cache(30, 2, head=head, clip=2.0)
    thr = np.sort(tr.features.ravel())
    q = 0.9 * (thr.size - 1)  # linear-interpolated 90th percentile, by hand
    thr = thr[int(q)] + (q - int(q)) * (thr[int(q) + 1] - thr[int(q)])
    ref_fn = _energy_linear if head == "linear" else _energy_cosine
    ref = ref_fn(np.minimum(te.features, thr), te)
    got = fitted("react", tr)
    assert got.threshold == pytest.approx(thr)
    np.testing.assert_allclose(got.score(te), ref, rtol=1e-10)


def _ash_s_ref(h, pct):
    out = np.zeros_like(h)
    k = h.shape[1] - int(round(h.shape[1] * pct / 100))
    for i, row in enumerate(h):
        keep = np.argsort(row)[::-1][:k]
        pruned = np.zeros_like(row)
        pruned[keep] = row[keep]
        out[i] = pruned * math.exp(row.sum() / pruned.sum())
    return out


def _ash_bp_ref(h, pct, variant):
    """ASH-B (kept entries set to sum(h) / k) and ASH-P (kept entries as they are)."""
    out = np.zeros_like(h)
    k = h.shape[1] - int(round(h.shape[1] * pct / 100))
    for i, row in enumerate(h):
        keep = np.argsort(row)[::-1][:k]
        out[i, keep] = row.sum() / k if variant == "b" else row[keep]
    return out


def _scale_ref(h, pct):
    out = np.zeros_like(h)
    k = h.shape[1] - int(round(h.shape[1] * pct / 100))
    for i, row in enumerate(h):
        top = np.sort(row)[::-1][:k]
        out[i] = row * math.exp(row.sum() / top.sum())
    return out


def test_ash_and_scale():
    te = make_cache(30, 2)
    te.features = np.abs(te.features)  # ASH/SCALE assume post-ReLU (non-negative) features
    np.testing.assert_allclose(
        scores.get("ash", percentile=75.0).score(te),
        _energy_linear(_ash_s_ref(te.features, 75.0), te),
        rtol=1e-9,
    )
    for variant in ("b", "p"):
        np.testing.assert_allclose(
            scores.get("ash", percentile=75.0, variant=variant).score(te),
            _energy_linear(_ash_bp_ref(te.features, 75.0, variant), te),
            rtol=1e-9,
        )
    with pytest.raises(InputError, match="'variant' must be one of"):
        scores.get("ash", variant="x")
    # a cosine head ignores ASH-S's positive rescale: variants s and p agree there
    cos = make_cache(30, 2, head="cosine")
    cos.features = np.abs(cos.features)
    np.testing.assert_allclose(
        scores.get("ash", variant="s").score(cos), scores.get("ash", variant="p").score(cos)
    )
    np.testing.assert_allclose(
        scores.get("scale", percentile=60.0).score(te),
        _energy_linear(_scale_ref(te.features, 60.0), te),
        rtol=1e-9,
    )


def test_dice(train, test):
    contrib = train.head_weight * train.features.mean(0)
    mask = contrib > np.percentile(contrib, 70)
    z = test.features @ (train.head_weight * mask).T + test.head_bias
    ref = [math.log(sum(math.exp(v) for v in row)) for row in z]
    np.testing.assert_allclose(fitted("dice", train, percentile=70.0).score(test), ref, rtol=1e-10)


def test_fdbd(train, test):
    w, mu = test.head_weight, train.features.mean(0)
    ref = []
    for h, z in zip(test.features, test.logits, strict=True):
        k = z.argmax()
        d = [abs(z[k] - z[c]) / np.linalg.norm(w[k] - w[c]) for c in range(C) if c != k]
        ref.append(np.mean(d) / np.linalg.norm(h - mu))
    np.testing.assert_allclose(fitted("fdbd", train).score(test), ref, rtol=1e-10)


def _gauss_fit(h, y):
    means = np.stack([h[y == c].mean(0) for c in range(C)])
    cen = h - means[y]
    cov = cen.T @ cen / len(h)
    h0 = h - h.mean(0)
    return means, np.linalg.inv(cov), h.mean(0), np.linalg.inv(h0.T @ h0 / len(h))


def test_mahalanobis_and_relative(train, test):
    means, prec, mu0, prec0 = _gauss_fit(train.features, train.labels)
    md = np.array([[(x - m) @ prec @ (x - m) for m in means] for x in test.features])
    md0 = np.array([(x - mu0) @ prec0 @ (x - mu0) for x in test.features])
    np.testing.assert_allclose(fitted("mahalanobis", train).score(test), -md.min(1), rtol=1e-8)
    np.testing.assert_allclose(
        fitted("relative_mahalanobis", train).score(test), -(md - md0[:, None]).min(1), rtol=1e-8
    )


def test_knn(train, test):
    def norm(x):
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    for k in (1, 7):
        dist = np.sort(cdist(norm(test.features), norm(train.features)), axis=1)
        got = fitted("knn", train, k=k, precision="float64").score(test)
        np.testing.assert_allclose(got, -dist[:, k - 1], rtol=1e-7, atol=1e-10)
        got = fitted("knn", train, k=k).score(test)  # float32 by default
        np.testing.assert_allclose(got, -dist[:, k - 1], rtol=1e-4)
    with pytest.raises(InputError, match="k=500"):
        fitted("knn", train, k=500)


@pytest.mark.parametrize("precision, rtol", [("float64", 1e-12), ("float32", 1e-6)])
def test_knn_blocks_and_threads_match(train, test, monkeypatch, precision, rtol):
    import sure_ood.scores.knn as knn

    full = fitted("knn", train, k=5, precision=precision).score(test)
    monkeypatch.setattr(knn, "BLOCK_ELEMENTS", train.features.shape[0] * 3)  # 3 rows a block
    for n_threads in (1, 3):
        monkeypatch.setattr(knn, "workers", lambda n=n_threads: n)
        got = fitted("knn", train, k=5, precision=precision).score(test)
        np.testing.assert_allclose(got, full, rtol=rtol)


def test_vim(train, test):
    dim = 3
    w, b = train.head_weight, train.head_bias
    o = -np.linalg.pinv(w) @ b
    x = train.features - o
    vals, vecs = np.linalg.eigh(x.T @ x / len(x))
    order = np.argsort(vals)[::-1]
    ns = vecs[:, order[dim:]]  # complement of the top-dim principal space
    alpha = (train.logits.max(1)).mean() / np.linalg.norm(x @ ns, axis=1).mean()
    vlogit = alpha * np.linalg.norm((test.features - o) @ ns, axis=1)
    e = np.array([math.log(sum(math.exp(v) for v in row)) for row in test.logits])
    got = fitted("vim", train, dim=dim)
    assert got.alpha == pytest.approx(alpha, rel=1e-9)
    np.testing.assert_allclose(got.score(test), e - vlogit, rtol=1e-8)
    # dim >= D is capped to D // 2
    capped = fitted("vim", train, dim=999)
    assert capped.residual_basis.shape == (D, D - D // 2)


def test_she(train, test):
    pred_tr = train.logits.argmax(1)
    pats = []
    for c in range(C):
        sel = (pred_tr == train.labels) & (train.labels == c)
        pats.append(train.features[sel].mean(0))
    ref = [h @ pats[z.argmax()] for h, z in zip(test.features, test.logits, strict=True)]
    np.testing.assert_allclose(fitted("she", train).score(test), ref, rtol=1e-10)


# ----------------------------------------------------------------------------- registry-wide
ALL = scores.available()
LINEAR_OR_COSINE = ["linear", "cosine"]


def test_registry_contents():
    required = {
        "msp", "max_logit", "energy", "entropy", "temperature_scaling", "gradnorm",
        "gradnorm_closed", "rp_msp", "rw_energy", "rp_gradnorm", "rw_odin", "odin",
        "kl_matching", "gen", "react", "ash", "mahalanobis", "relative_mahalanobis", "knn",
        "vim", "she",
    }  # fmt: skip
    assert required <= set(ALL)
    assert ALL == sorted(ALL) and len(ALL) >= 15
    for name in ALL:
        cls = type(scores.get(name))
        assert cls.__doc__ or sys.modules[cls.__module__].__doc__
        assert set(cls.needs) <= scores.NEEDS
    assert scores.params_of("energy") == {"temperature": 1.0}
    assert scores.params_of("gen") == {"gamma": 0.1, "top_m": 100}


def test_registry_errors():
    with pytest.raises(InputError, match="unknown method 'nope'"):
        scores.get("nope")
    with pytest.raises(InputError, match="no parameter 'tau'"):
        scores.get("energy", tau=1.0)
    with pytest.raises(InputError, match="'temperature' must be > 0"):
        scores.get("energy", temperature=-1.0)
    with pytest.raises(InputError, match="'k' must be int"):
        scores.get("knn", k=2.5)
    assert scores.get("energy", temperature=2).temperature == 2.0  # int accepted for float


def test_import_does_not_load_torch():
    code = "import sys, sure_ood.scores, sure_ood.stages.score; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def obvious_caches(head: str) -> tuple[FeatureCache, FeatureCache, FeatureCache]:
    """Train / ID test / OOD test where ID is obvious.

    Non-negative features (post-ReLU-like); class c owns a block of 4 dimensions. ID features
    are large on their class block (near the class mean, confident logits); OOD features are
    small and flat.
    """
    c, blk = 4, 4
    d = c * blk
    w = np.zeros((c, d))
    for k in range(c):
        w[k, k * blk : (k + 1) * blk] = 1.0
    w += 0.05
    b = np.zeros(c) if head == "linear" else None

    def build(n, seed, ood):
        rng = np.random.default_rng(seed)
        y = np.arange(n) % c
        if ood:
            h = rng.uniform(0.0, 0.3, size=(n, d))
        else:
            h = rng.uniform(0.0, 0.05, size=(n, d)) + 0.1
            for i, k in enumerate(y):
                h[i, k * blk : (k + 1) * blk] += 3.0 + rng.uniform(0, 0.2, size=blk)
        if head == "linear":
            z = h @ w.T
        else:
            hn = h / np.linalg.norm(h, axis=1, keepdims=True)
            z = 8.0 * hn @ (w / np.linalg.norm(w, axis=1, keepdims=True)).T
        msp_like = np.exp(z - z.max(1, keepdims=True))
        msp_like = (msp_like / msp_like.sum(1, keepdims=True)).max(1)
        return FeatureCache(
            logits=z,
            features=h,
            labels=-np.ones(n, dtype=np.int64) if ood else y,
            head_weight=w,
            head_bias=b,
            head_type=head,
            head_temperature=8.0 if head == "cosine" else None,
            extra={"odin_score": msp_like},
        )

    return build(80, 0, False), build(40, 1, False), build(40, 2, True)


def _auroc(id_s, ood_s):
    return np.mean([(a > o) + 0.5 * (a == o) for a in id_s for o in ood_s])


@pytest.mark.parametrize("head", LINEAR_OR_COSINE)
@pytest.mark.parametrize("name", ALL)
def test_every_method_generic(name, head):
    tr, te_id, te_ood = obvious_caches(head)
    # tiny D: keep more than 10 % of DICE's 64 weights (else whole classes lose all weights)
    # (ASH-S/SCALE's exp(s1/s2) grows with flatness when only 2 of 16 entries are kept).
    params = {
        "vim": {"dim": 4},
        "dice": {"percentile": 50.0},
        "scale": {"percentile": 50.0},
        "ash": {"percentile": 50.0},
        "knn": {"k": 5},  # 20 training images per class
    }.get(name, {})
    scorer = scores.get(name, **params)
    if scorer.requires_fit:
        with pytest.raises(RuntimeError, match="fitted"):
            scorer.score(te_id)
    scorer.fit(tr, val=tr)  # "val" methods fit on the validation cache
    s_id, s_ood = scorer.score(te_id), scorer.score(te_ood)
    assert s_id.shape == (len(te_id),) and s_id.dtype == np.float64
    np.testing.assert_array_equal(scorer.score(te_id), s_id)  # deterministic
    # never reads the labels of the scored cache
    for labels in (-np.ones(len(te_id), dtype=np.int64), np.roll(te_id.labels, 3)):
        relabelled = FeatureCache(**{**te_id.__dict__, "labels": labels})
        np.testing.assert_array_equal(scorer.score(relabelled), s_id)
    # higher = more in-distribution on an obvious case
    if not (name == "gradnorm" and head == "cosine"):
        assert _auroc(s_id, s_ood) > 0.95, (name, head, _auroc(s_id, s_ood))
    # fitted statistics round-trip through arrays
    state = scorer.state()
    assert all(isinstance(v, np.ndarray) for v in state.values())
    again = scores.get(name, **params).load_state(state)
    np.testing.assert_array_equal(again.score(te_ood), s_ood)


def test_cosine_gradnorm_is_direction_only():
    """The true cosine-head GradNorm ignores the feature norm (no clip).

    docs/method.md#gradnorm-and-the-cosine-head
    """
    tr, te_id, te_ood = obvious_caches("cosine")
    s_id, s_ood = scores.get("gradnorm").score(te_id), scores.get("gradnorm").score(te_ood)
    assert np.all(np.isfinite(s_id)) and np.all(np.isfinite(s_ood))
    scaled = FeatureCache(**{**te_id.__dict__, "features": 10.0 * te_id.features})
    np.testing.assert_allclose(scores.get("gradnorm").score(scaled), s_id, rtol=1e-6)
    f64 = scores.get("gradnorm", precision="float64")
    np.testing.assert_allclose(f64.score(scaled), f64.score(te_id), rtol=1e-12)


def test_class_count_mismatch_when_scoring(train):
    other = FeatureCache(
        logits=np.zeros((3, 3)),
        features=np.zeros((3, D)),
        labels=np.zeros(3, dtype=np.int64),
        head_weight=np.zeros((3, D)),
        source="other.npz",
    )
    with pytest.raises(InputError, match="other.npz: has 3 classes"):
        fitted("mahalanobis", train).score(other)


def test_nan_scores_are_kept():
    te = make_cache(6, 2)
    te.features = te.features.copy()
    te.features[0] = np.nan
    s = scores.get("gradnorm_closed").score(te)
    assert np.isnan(s[0]) and np.all(np.isfinite(s[1:]))


# ----------------------------------------------------------------------------- CLI
def run_cli(*argv: str) -> int:
    return cli_main(["score", *map(str, argv)])


@pytest.fixture()
def files(tmp_path):
    for name, cache in [
        ("train", make_cache(100, 1)),
        ("id_test", make_cache(20, 2)),
        ("ood_test", make_cache(15, 3, labelled=False)),
    ]:
        cache.extra = {}  # no precomputed ODIN scores in these files
        save_cache(tmp_path / f"split~{name}.npz", cache)
    return tmp_path


def test_cli_list(capsys):
    assert run_cli("--list") == 0
    out = capsys.readouterr().out
    heads = [line.split(":")[0] for line in out.splitlines() if not line.startswith(" ")]
    assert heads == scores.available()
    # each method: description, what it fits on, paper (venue, year), reference code
    block = out.split("\nrp_gradnorm: ")[1].split("\n", 6)
    assert "RP+GradNorm" in block[0]
    assert "fits on:   the class prior" in out.split("\nrp_gradnorm: ")[1]
    assert "paper:     Jiang et al., ICML 2023" in out
    assert "reference: https://github.com/tmlr-group/class_prior" in out


def test_cli_scores_parquet(files, capsys):
    out = files / "scores" / "s.parquet"
    stats = files / "stats.npz"
    rc = run_cli(
        "--method", "knn", "--param", "k=3",
        "--features", files / "split~id_test.npz", "--features", files / "split~ood_test.npz",
        "--train-features", files / "split~train.npz", "--stats-out", stats, "--out", out,
    )  # fmt: skip
    assert rc == 0
    df = pd.read_parquet(out)
    assert list(df.columns) == ["split", "index", "label", "id_score", "pred"]
    assert df["split"].tolist() == ["id_test"] * 20 + ["ood_test"] * 15
    assert df["id_score"].dtype == np.float64
    assert (df.loc[df.split == "ood_test", "label"] == -1).all()
    ood = load_cache(files / "split~ood_test.npz")
    ref = scores.get("knn", k=3).fit(load_cache(files / "split~train.npz")).score(ood)
    np.testing.assert_allclose(df.loc[df.split == "ood_test", "id_score"], ref)
    np.testing.assert_array_equal(df.loc[df.split == "ood_test", "pred"], ood.logits.argmax(1))
    np.testing.assert_array_equal(df.loc[df.split == "ood_test", "index"], np.arange(15))
    assert str(load_npz(stats)["method"]) == "knn"
    assert not list(files.glob("scores/.*"))  # atomic: no temporary left behind


def test_score_files_prior_file(files):
    pi = np.array([0.1, 0.2, 0.3, 0.25, 0.15])
    np.save(files / "prior.npy", pi)
    df = score_files("rp_msp", {}, [files / "split~id_test.npz"], None, files / "prior.npy")
    p = softmax_rows(load_cache(files / "split~id_test.npz").logits)
    np.testing.assert_allclose(df["id_score"], (p - pi).max(1))


def test_cli_nan_warning(files, capsys):
    c = make_cache(5, 4)
    c.features[1] = np.nan
    save_cache(files / "split~nan.npz", c)
    rc = run_cli(
        "--method", "gradnorm_closed", "--features", files / "split~nan.npz",
        "--out", files / "n.parquet",
    )  # fmt: skip
    assert rc == 0
    assert "1 of 5 scores" in capsys.readouterr().err
    df = pd.read_parquet(files / "n.parquet")
    assert len(df) == 5 and df["id_score"].isna().sum() == 1


@pytest.mark.parametrize(
    "args, message",
    [
        (["--method", "nope"], "unknown method 'nope'"),
        (["--method", "energy", "--param", "tau=2"], "no parameter 'tau'"),
        (["--method", "energy", "--param", "oops"], "expected KEY=VALUE"),
        (["--method", "knn"], "method 'knn' is fitted on training features: give --train-features"),
        (["--method", "rp_msp"], "method 'rp_msp' needs a class prior: give --prior or --train-"),
        (
            ["--method", "temperature_scaling"],
            "method 'temperature_scaling' is fitted on the validation split: give --val-features",
        ),
        (
            ["--method", "gradnorm_closed", "--param", "features=prenorm_features"],
            "split~id_test.npz: missing key 'prenorm_features'",
        ),
        (["--method", "odin"], "odin_score"),
    ],
)
def test_cli_errors(files, capsys, args, message):
    rc = run_cli(*args, "--features", files / "split~id_test.npz", "--out", files / "o.parquet")
    assert rc == 2
    err = capsys.readouterr().err
    assert message in err
    assert not (files / "o.parquet").exists()


def test_cli_missing_key_names_file(files, capsys):
    src = load_npz(files / "split~id_test.npz")
    del src["features"]
    np.savez(files / "split~broken.npz", **src)
    rc = run_cli(
        "--method", "msp", "--features", files / "split~broken.npz", "--out", files / "o.pq"
    )
    assert rc == 2
    err = capsys.readouterr().err
    assert "split~broken.npz" in err and "'features'" in err


def test_cli_bad_priors(files, capsys):
    for vec, msg in [
        (np.full(4, 0.25), "length 4"),
        (np.full(C, 0.3), "sums to"),
        (np.array([-0.1, 0.3, 0.3, 0.3, 0.2]), "negative"),
    ]:
        np.save(files / "prior.npy", vec)
        rc = run_cli(
            "--method", "rp_msp", "--features", files / "split~id_test.npz",
            "--train-features", files / "split~train.npz", "--prior", files / "prior.npy",
            "--out", files / "o.parquet",
        )  # fmt: skip
        assert rc == 2
        err = capsys.readouterr().err
        assert "prior.npy" in err and msg in err


def test_cli_class_count_mismatch(files, capsys):
    c3 = FeatureCache(
        logits=np.zeros((4, 3)),
        features=np.ones((4, D)),
        labels=np.zeros(4, dtype=np.int64),
        head_weight=np.ones((3, D)),
    )
    save_cache(files / "split~three.npz", c3)
    rc = run_cli(
        "--method", "msp", "--features", files / "split~id_test.npz",
        "--features", files / "split~three.npz", "--out", files / "o.parquet",
    )  # fmt: skip
    assert rc == 2
    err = capsys.readouterr().err
    assert "split~three.npz: 3 classes" in err and "split~id_test.npz has 5" in err
    rc = run_cli(
        "--method", "mahalanobis", "--features", files / "split~three.npz",
        "--train-features", files / "split~train.npz", "--out", files / "o.parquet",
    )  # fmt: skip
    assert rc == 2
    assert "split~train.npz has 5" in capsys.readouterr().err
