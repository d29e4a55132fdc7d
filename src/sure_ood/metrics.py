"""OOD-detection / open-set metrics, bootstrap confidence intervals and paired tests.

Conventions (docs/method.md#metrics):

- ``id_score``: **higher = more in-distribution**; ID is the positive class; an image is
  *accepted* (called ID) at threshold ``t`` when ``score >= t`` (ties are accepted).
- ``fpr_at_95_tpr`` is the SSB / challenge convention (fraction of OOD accepted when 95 % of ID
  are accepted); ``fpr95_ood_pos`` is OpenOOD v1.5's (fraction of ID flagged as OOD when 95 % of
  OOD are flagged). The two numbers are not comparable.
- AUPR-In / AUPR-Out follow OpenOOD v1.5 (``precision_recall_curve`` + trapezoid ``auc``).
- OSCR is computed on *aligned* arrays (the reference code sorts in place and misaligns them;
  docs/method.md#metrics). No function here modifies its inputs.

Only numpy and scikit-learn are used, so the evaluate/table stages never import torch.

The bootstrap works on counts: a resample with replacement is a vector of multiplicities over
the original images. The merged scores are sorted **once** into distinct thresholds; per
resample the multiplicities are binned into those thresholds and every metric is read off the
cumulative counts (the exact ROC / PR / CCR curves of that resample, ties included), so 1000
resamples of 10k + 10k images take about a second. The same code with multiplicity 1 gives the
point estimates, and tests check it against scikit-learn on each resample.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike

NanPolicy = Literal["raise", "worst"]

#: metrics that need only ID and OOD scores
SCORE_METRICS: tuple[str, ...] = ("auroc", "fpr_at_95_tpr", "fpr95_ood_pos", "aupr_in", "aupr_out")
#: metrics that also need per-ID-image correctness (``pred == label``)
CORRECTNESS_METRICS: tuple[str, ...] = ("id_accuracy", "oscr")
ALL_METRICS: tuple[str, ...] = SCORE_METRICS + CORRECTNESS_METRICS

_DEFAULT_TPR = 0.95


# --------------------------------------------------------------------------------------------
# input checks
# --------------------------------------------------------------------------------------------


def _scores(x: ArrayLike, name: str, *, finite: bool = True) -> np.ndarray:
    """1-D float64 view/copy of ``x``; never modified afterwards."""
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != 1:
        raise ValueError(f"{name}: expected a 1-D array, got shape {a.shape}")
    if a.size == 0:
        raise ValueError(f"{name}: empty")
    if finite and not np.all(np.isfinite(a)):
        n_bad = int(np.count_nonzero(~np.isfinite(a)))
        raise ValueError(f"{name}: {n_bad} of {a.size} scores are NaN or infinite")
    return a


def _bool_vector(x: ArrayLike, name: str, n: int) -> np.ndarray:
    a = np.asarray(x)
    if a.shape != (n,):
        raise ValueError(f"{name}: expected shape ({n},), got {a.shape}")
    return a.astype(bool)


def _k_for(tpr: float, n: int) -> int:
    """Smallest k with ``k / n >= tpr`` (float division, as scikit-learn's ``roc_curve``)."""
    if not 0.0 < tpr <= 1.0:
        raise ValueError(f"tpr must be in (0, 1], got {tpr}")
    k = max(1, min(n, math.ceil(tpr * n)))
    while k < n and k / n < tpr:
        k += 1
    while k > 1 and (k - 1) / n >= tpr:
        k -= 1
    return k


def count_nonfinite(id_scores: ArrayLike, ood_scores: ArrayLike) -> tuple[int, int]:
    """Number of NaN / +-inf scores in the ID and OOD arrays."""
    i = np.asarray(id_scores, dtype=np.float64)
    o = np.asarray(ood_scores, dtype=np.float64)
    return int(np.count_nonzero(~np.isfinite(i))), int(np.count_nonzero(~np.isfinite(o)))


def apply_nan_policy(
    id_scores: ArrayLike, ood_scores: ArrayLike, nan_policy: NanPolicy = "raise"
) -> tuple[np.ndarray, np.ndarray, int]:
    """Check for non-finite scores; return ``(id, ood, n_nonfinite)`` (new arrays if replaced).

    ``"raise"``: a ValueError naming how many ID and OOD scores are non-finite.
    ``"worst"``: every non-finite score (NaN or +-inf: a scoring failure, not a confident
    answer) gets the worst value for its side: ID -> just below the lowest finite score of
    either set (rejected at every threshold), OOD -> just above the highest (accepted). Scores
    are never dropped, so N_id and N_ood stay the published ones.
    """
    i = _scores(id_scores, "id_scores", finite=False)
    o = _scores(ood_scores, "ood_scores", finite=False)
    bad_i, bad_o = ~np.isfinite(i), ~np.isfinite(o)
    n_i, n_o = int(bad_i.sum()), int(bad_o.sum())
    if n_i + n_o == 0:
        return i, o, 0
    if nan_policy == "raise":
        raise ValueError(
            f"{n_i} of {i.size} ID scores and {n_o} of {o.size} OOD scores are non-finite "
            "(NaN or inf); pass nan_policy='worst' to count them as errors"
        )
    if nan_policy != "worst":
        raise ValueError(f"nan_policy must be 'raise' or 'worst', got {nan_policy!r}")
    finite = np.concatenate([i[~bad_i], o[~bad_o]])
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 0.0)
    lo_w, hi_w = np.nextafter(lo, -np.inf), np.nextafter(hi, np.inf)
    # at +-max float nextafter overflows; fall back to a tie with the extreme (still worst-ish)
    lo_w = lo_w if np.isfinite(lo_w) else lo
    hi_w = hi_w if np.isfinite(hi_w) else hi
    return np.where(bad_i, lo_w, i), np.where(bad_o, hi_w, o), n_i + n_o


# --------------------------------------------------------------------------------------------
# point metrics
# --------------------------------------------------------------------------------------------


def _point(name: str, id_scores: ArrayLike, ood_scores: ArrayLike) -> float:
    """One metric of the arrays as given: the bootstrap's exact count-based formulas applied
    to the identity "resample" (numpy only, so the evaluate job does not import sklearn; the
    tests check every value against scikit-learn)."""
    i, o = _scores(id_scores, "id_scores"), _scores(ood_scores, "ood_scores")
    curves = _Curves(i, o, None)
    ones_i = np.ones((1, i.size), dtype=np.int64)
    ones_o = np.ones((1, o.size), dtype=np.int64)
    cid, cood, _ = curves.counts(ones_i, ones_o, weights=True)
    return float(_metrics_from_counts((name,), cid, cood, None, i.size, o.size)[name][0])


def auroc(id_scores: ArrayLike, ood_scores: ArrayLike) -> float:
    """Area under the ROC curve, ID positive (= ``sklearn.metrics.roc_auc_score``).

    Ties between an ID and an OOD score count 1/2 (trapezoid = Mann-Whitney U / (N_id N_ood)).
    Identical with OOD as the positive class and negated scores (OpenOOD).
    """
    return _point("auroc", id_scores, ood_scores)


def fpr_at_95_tpr(id_scores: ArrayLike, ood_scores: ArrayLike, tpr: float = _DEFAULT_TPR) -> float:
    """Fraction of OOD images accepted when ``tpr`` of ID images are accepted (SSB convention).

    Threshold: the largest ``t`` such that the fraction of ID scores ``>= t`` is at least
    ``tpr``, i.e. the k-th largest ID score with k = ceil(tpr * N_id) (computed as the smallest
    k with k / N_id >= tpr). FPR = fraction of OOD scores ``>= t``: OOD tied with the threshold
    are accepted, like the tied ID images. This is the FPR of the first point of
    ``roc_curve(is_id, score, drop_intermediate=False)`` whose TPR is >= ``tpr``, with no
    interpolation.

    Note - the reference code (ReAct -> SSB -> SSB-OSR, docs/method.md#metrics) takes
    t = ascending ID score at position round(0.05 N_id) (numpy's round-half-even) and counts OOD
    scores **strictly** above it. Its position is >= ours (floor(0.05 N_id)) and ``>`` drops ties,
    so its FPR is
    <= ours: equal when 0.05 N_id rounds down and no OOD score equals the threshold; otherwise
    it can accept fewer than 95 % of ID images (e.g. 28/30 = 93 % at N_id = 30). With ~50k ID
    images and continuous scores the difference is at most a few OOD images.
    """
    i, o = _scores(id_scores, "id_scores"), _scores(ood_scores, "ood_scores")
    k = _k_for(tpr, i.size)
    t = np.partition(i, i.size - k)[i.size - k]  # k-th largest; np.partition returns a copy
    return float(np.count_nonzero(o >= t) / o.size)


def fpr_at_95_tpr_ood_positive(
    id_scores: ArrayLike, ood_scores: ArrayLike, tpr: float = _DEFAULT_TPR
) -> float:
    """Fraction of ID images flagged as OOD when ``tpr`` of OOD images are flagged (OpenOOD v1.5).

    OpenOOD: ``fpr[argmax(tpr >= 0.95)]`` of ``roc_curve(is_ood, -score)``. Same rule as
    :func:`fpr_at_95_tpr` with the roles swapped: an image is flagged when ``score <= u``, u is
    the smallest value flagging >= ``tpr`` of OOD, ties flagged. (OpenOOD calls ``roc_curve``
    with its default ``drop_intermediate=True``, which can skip collinear points, so with ID/OOD
    ties its number can be larger than this exact one; without ties they are equal.)
    """
    i, o = _scores(id_scores, "id_scores"), _scores(ood_scores, "ood_scores")
    return fpr_at_95_tpr(-o, -i, tpr=tpr)


def aupr_in(id_scores: ArrayLike, ood_scores: ArrayLike) -> float:
    """Area under the precision-recall curve with ID positive (OpenOOD v1.5 ``aupr_in``).

    ``auc(recall, precision)`` of ``precision_recall_curve(is_id, score)``: trapezoid over every
    distinct threshold plus the (recall 0, precision 1) end point. Chosen over
    ``average_precision_score`` (step-wise) to match the OpenOOD / SSB (trapezoid) tables; the
    trapezoid is slightly optimistic, e.g. all-equal scores give (1 + pi) / 2 instead of the
    prevalence pi = N_id / (N_id + N_ood).
    """
    return _point("aupr_in", id_scores, ood_scores)


def aupr_out(id_scores: ArrayLike, ood_scores: ArrayLike) -> float:
    """Area under the precision-recall curve with OOD positive and score negated (OpenOOD)."""
    return _point("aupr_out", id_scores, ood_scores)


def accuracy(preds: ArrayLike, labels: ArrayLike) -> float:
    """Top-1 accuracy: fraction of ``preds == labels`` (closed-set ACC on the ID images)."""
    p, y = np.asarray(preds), np.asarray(labels)
    if p.shape != y.shape or p.ndim != 1:
        raise ValueError(f"preds {p.shape} and labels {y.shape} must be 1-D of the same length")
    if p.size == 0:
        raise ValueError("accuracy of an empty set")
    return float(np.count_nonzero(p == y) / p.size)


def oscr(id_scores: ArrayLike, id_correct: ArrayLike, ood_scores: ArrayLike) -> float:
    """Open-Set Classification Rate: area under CCR(t) vs FPR(t) (Dhamija et al. 2018; SSB).

    CCR(t) = fraction of ID images both correctly classified and with score >= t; FPR(t) =
    fraction of OOD images with score >= t. The curve runs over every distinct score (ID and
    OOD merged) from (0, 0) at t = +inf to (1, accuracy); trapezoid rule, so an ID/OOD tie is a
    diagonal step (half credit, as in AUROC). Equals AUROC when every ID image is correct.
    ``id_correct[i]`` belongs to ``id_scores[i]`` (aligned; nothing is sorted in place, unlike
    the reference code, docs/method.md#metrics).
    """
    i, o = _scores(id_scores, "id_scores"), _scores(ood_scores, "ood_scores")
    c = _bool_vector(id_correct, "id_correct", i.size)
    curves = _Curves(i, o, c)
    ones_i = np.ones((1, i.size), dtype=np.int64)
    ones_o = np.ones((1, o.size), dtype=np.int64)
    _, cood, ccor = curves.counts(ones_i, ones_o, weights=True)
    return float(_oscr_from_counts(cood, ccor, i.size, o.size)[0])


def ood_metrics(
    id_scores: ArrayLike,
    ood_scores: ArrayLike,
    id_preds: ArrayLike | None = None,
    id_labels: ArrayLike | None = None,
    *,
    nan_policy: NanPolicy = "raise",
    tpr: float = _DEFAULT_TPR,
) -> dict[str, float | int]:
    """All metrics of one ID-vs-OOD evaluation, fractions in [0, 1].

    Keys: ``auroc, fpr_at_95_tpr, fpr95_ood_pos, aupr_in, aupr_out``; with ``id_preds`` and
    ``id_labels`` also ``id_accuracy, oscr``; with ``nan_policy="worst"`` also ``n_nonfinite``
    (total number of replaced scores, see :func:`apply_nan_policy`).
    """
    i, o, n_bad = apply_nan_policy(id_scores, ood_scores, nan_policy)
    out: dict[str, float | int] = {
        "auroc": auroc(i, o),
        "fpr_at_95_tpr": fpr_at_95_tpr(i, o, tpr=tpr),
        "fpr95_ood_pos": fpr_at_95_tpr_ood_positive(i, o, tpr=tpr),
        "aupr_in": aupr_in(i, o),
        "aupr_out": aupr_out(i, o),
    }
    if (id_preds is None) != (id_labels is None):
        raise ValueError("give both id_preds and id_labels, or neither")
    if id_preds is not None:
        p, y = np.asarray(id_preds), np.asarray(id_labels)
        if p.shape != (i.size,) or y.shape != (i.size,):
            raise ValueError(
                f"id_preds {p.shape} and id_labels {y.shape} must match id_scores ({i.size},)"
            )
        out["id_accuracy"] = accuracy(p, y)
        out["oscr"] = oscr(i, p == y, o)
    if nan_policy == "worst":
        out["n_nonfinite"] = n_bad
    return out


# --------------------------------------------------------------------------------------------
# count-based engine (exact curves of weighted samples, many resamples at once)
# --------------------------------------------------------------------------------------------


class _Curves:
    """Merged scores sorted once into distinct thresholds (descending); bins resamples."""

    def __init__(self, id_scores: np.ndarray, ood_scores: np.ndarray, correct=None) -> None:
        self.n_id, self.n_ood = id_scores.size, ood_scores.size
        uniq, inv = np.unique(np.concatenate([id_scores, ood_scores]), return_inverse=True)
        self.n_thr = uniq.size
        g = (self.n_thr - 1 - inv).astype(np.int64)  # 0 = highest score
        self.g_id, self.g_ood = g[: self.n_id], g[self.n_id :]
        self.correct = None if correct is None else np.asarray(correct, dtype=bool)

    def counts(
        self, idx_id: np.ndarray, idx_ood: np.ndarray, weights: bool = False
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """Per-threshold counts of resampled ID, OOD and correct-ID images, shape (B, n_thr).

        ``idx_*`` are resampled image indices of shape (B, N); with ``weights=True`` they are
        instead per-image multiplicities of shape (B, N).
        """
        n_thr = self.n_thr

        def binned(groups: np.ndarray, idx: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
            b = idx.shape[0]
            rows = np.arange(b, dtype=np.int64)[:, None] * n_thr
            if weights:
                flat = (rows + groups[None, :]).ravel()
                w = idx if mask is None else idx * mask[None, :]
                out = np.bincount(flat, weights=w.ravel(), minlength=b * n_thr)
            else:
                flat = (rows + groups[idx]).ravel()
                w = None if mask is None else mask[idx].ravel().astype(np.float64)
                out = np.bincount(flat, weights=w, minlength=b * n_thr)
            return out.reshape(b, n_thr)

        cid = binned(self.g_id, idx_id, None)
        cood = binned(self.g_ood, idx_ood, None)
        ccor = None if self.correct is None else binned(self.g_id, idx_id, self.correct)
        return cid, cood, ccor


def _first_at_least(cum: np.ndarray, k: float) -> np.ndarray:
    """Column index of the first cumulative count >= k, per row."""
    return np.argmax(cum >= k, axis=1)


def _fpr_from_counts(c_pos: np.ndarray, c_neg: np.ndarray, n_pos: int, n_neg: int, tpr: float):
    tps, fps = np.cumsum(c_pos, axis=1), np.cumsum(c_neg, axis=1)
    j = _first_at_least(tps, _k_for(tpr, n_pos) - 0.5)
    return np.take_along_axis(fps, j[:, None], axis=1)[:, 0] / n_neg


def _aupr_from_counts(c_pos: np.ndarray, c_neg: np.ndarray, n_pos: int) -> np.ndarray:
    tps, fps = np.cumsum(c_pos, axis=1), np.cumsum(c_neg, axis=1)
    ps = tps + fps
    prec = np.divide(tps, ps, out=np.ones_like(tps), where=ps > 0)
    # trapezoids over recall from the start point (recall 0, precision 1) that sklearn's
    # precision_recall_curve appends; recall steps are c_pos / n_pos (exact integer counts)
    prev = np.concatenate([np.ones((prec.shape[0], 1)), prec[:, :-1]], axis=1)
    return np.sum(c_pos * (prec + prev), axis=1) / (2.0 * n_pos)


def _auroc_from_counts(cid: np.ndarray, cood: np.ndarray, n_id: int, n_ood: int) -> np.ndarray:
    # Mann-Whitney: each ID image beats the OOD images strictly below it, ties count 1/2
    ood_below = n_ood - np.cumsum(cood, axis=1)
    return np.sum(cid * (ood_below + 0.5 * cood), axis=1) / (n_id * n_ood)


def _oscr_from_counts(cood: np.ndarray, ccor: np.ndarray, n_id: int, n_ood: int) -> np.ndarray:
    # trapezoids over FPR steps cood / n_ood; CCR = cumulative correct-ID count / n_id. Sums of
    # integer counts stay exact, so e.g. perfect separation gives exactly the accuracy.
    cc = np.cumsum(ccor, axis=1)
    prev = np.concatenate([np.zeros((cc.shape[0], 1)), cc[:, :-1]], axis=1)
    return np.sum(cood * (cc + prev), axis=1) / (2.0 * n_id * n_ood)


def _metrics_from_counts(
    names: Sequence[str],
    cid: np.ndarray,
    cood: np.ndarray,
    ccor: np.ndarray | None,
    n_id: int,
    n_ood: int,
    tpr: float = _DEFAULT_TPR,
) -> dict[str, np.ndarray]:
    cid, cood = cid.astype(np.float64), cood.astype(np.float64)
    out: dict[str, np.ndarray] = {}
    for name in names:
        if name == "auroc":
            out[name] = _auroc_from_counts(cid, cood, n_id, n_ood)
        elif name == "fpr_at_95_tpr":
            out[name] = _fpr_from_counts(cid, cood, n_id, n_ood, tpr)
        elif name == "fpr95_ood_pos":
            out[name] = _fpr_from_counts(cood[:, ::-1], cid[:, ::-1], n_ood, n_id, tpr)
        elif name == "aupr_in":
            out[name] = _aupr_from_counts(cid, cood, n_id)
        elif name == "aupr_out":
            out[name] = _aupr_from_counts(cood[:, ::-1], cid[:, ::-1], n_ood)
        elif name == "oscr":
            out[name] = _oscr_from_counts(cood, ccor, n_id, n_ood)
        elif name == "id_accuracy":
            out[name] = ccor.sum(axis=1) / n_id
        else:  # pragma: no cover - names are checked by the callers
            raise ValueError(name)
    return out


def _check_metric_names(metrics: Sequence[str], have_correct: bool) -> tuple[str, ...]:
    names = (metrics,) if isinstance(metrics, str) else tuple(metrics)
    unknown = [m for m in names if m not in ALL_METRICS]
    if unknown:
        raise ValueError(f"unknown metric(s) {unknown}; known: {list(ALL_METRICS)}")
    if not have_correct and any(m in CORRECTNESS_METRICS for m in names):
        raise ValueError(f"{list(CORRECTNESS_METRICS)} need id_correct (pred == label per image)")
    return names


def _batches(n_boot: int, n_id: int, n_ood: int, n_thr: int, batch_size: int | None):
    if batch_size is None:  # keep each (B, n) array around 2M elements
        batch_size = max(1, 2_000_000 // max(n_id, n_ood, n_thr))
    for start in range(0, n_boot, batch_size):
        yield min(batch_size, n_boot - start)


def _seed_sequence(seed: int | np.random.SeedSequence) -> np.random.SeedSequence:
    return seed if isinstance(seed, np.random.SeedSequence) else np.random.SeedSequence(seed)


def _resample_indices(
    n_id: int,
    n_ood: int,
    n_boot: int,
    seed: int | np.random.SeedSequence,
    batch_size: int | None,
    n_thr: int,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Stratified resamples: ID and OOD drawn with replacement from independent child streams.

    Separate streams make the resamples independent of the batch size.
    """
    ss_id, ss_ood = _seed_sequence(seed).spawn(2)
    rng_id, rng_ood = np.random.default_rng(ss_id), np.random.default_rng(ss_ood)
    for b in _batches(n_boot, n_id, n_ood, n_thr, batch_size):
        yield rng_id.integers(0, n_id, size=(b, n_id)), rng_ood.integers(0, n_ood, size=(b, n_ood))


def bootstrap_distribution(
    id_scores: ArrayLike,
    ood_scores: ArrayLike,
    metrics: Sequence[str] = ("auroc", "fpr_at_95_tpr", "aupr_in", "aupr_out"),
    n_boot: int = 1000,
    seed: int = 0,
    *,
    id_correct: ArrayLike | None = None,
    tpr: float = _DEFAULT_TPR,
    batch_size: int | None = None,
) -> dict[str, np.ndarray]:
    """Metric values on ``n_boot`` stratified resamples, each shape ``(n_boot,)``.

    Resample b draws N_id ID and N_ood OOD images with replacement (the ``seed`` fixes them);
    the value equals the point metric of those resampled arrays.
    """
    i, o = _scores(id_scores, "id_scores"), _scores(ood_scores, "ood_scores")
    correct = None if id_correct is None else _bool_vector(id_correct, "id_correct", i.size)
    names = _check_metric_names(metrics, correct is not None)
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    curves = _Curves(i, o, correct)
    parts: dict[str, list[np.ndarray]] = {m: [] for m in names}
    for idx_i, idx_o in _resample_indices(i.size, o.size, n_boot, seed, batch_size, curves.n_thr):
        vals = _metrics_from_counts(names, *curves.counts(idx_i, idx_o), i.size, o.size, tpr)
        for m in names:
            parts[m].append(vals[m])
    return {m: np.concatenate(parts[m]) for m in names}


def _percentile_ci(values: np.ndarray, alpha: float) -> tuple[float, float]:
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    lo, hi = np.quantile(values, [alpha / 2.0, 1.0 - alpha / 2.0])
    return float(lo), float(hi)


def bootstrap_ci(
    id_scores: ArrayLike,
    ood_scores: ArrayLike,
    metrics: Sequence[str] = ("auroc", "fpr_at_95_tpr", "aupr_in", "aupr_out"),
    n_boot: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
    *,
    id_correct: ArrayLike | None = None,
    nan_policy: NanPolicy = "raise",
    tpr: float = _DEFAULT_TPR,
    batch_size: int | None = None,
) -> dict[str, tuple[float, float]]:
    """Percentile bootstrap ``1 - alpha`` intervals, ``{metric: (lo, hi)}`` (Efron & Tibshirani).

    Stratified: ID and OOD images are resampled separately, with replacement, so every resample
    keeps N_id and N_ood. Seeded (numpy Generator). ``"oscr"`` and ``"id_accuracy"`` need
    ``id_correct``. Quantiles use numpy's default linear interpolation.
    """
    i, o, _ = apply_nan_policy(id_scores, ood_scores, nan_policy)
    dist = bootstrap_distribution(
        i, o, metrics, n_boot, seed, id_correct=id_correct, tpr=tpr, batch_size=batch_size
    )
    return {m: _percentile_ci(v, alpha) for m, v in dist.items()}


def _paired_arrays(id_a, ood_a, id_b, ood_b, id_correct_a, id_correct_b, metrics, n_boot):
    """Checked float64 arrays of two systems scoring the same images (see paired_bootstrap)."""
    ia, oa = _scores(id_a, "id_a"), _scores(ood_a, "ood_a")
    ib, ob = _scores(id_b, "id_b"), _scores(ood_b, "ood_b")
    if ia.size != ib.size or oa.size != ob.size:
        raise ValueError(
            f"paired systems must score the same images: A has {ia.size} ID / {oa.size} OOD, "
            f"B has {ib.size} ID / {ob.size} OOD"
        )
    if (id_correct_a is None) != (id_correct_b is None):
        raise ValueError("give both id_correct_a and id_correct_b, or neither")
    ca = None if id_correct_a is None else _bool_vector(id_correct_a, "id_correct_a", ia.size)
    cb = None if id_correct_b is None else _bool_vector(id_correct_b, "id_correct_b", ib.size)
    names = _check_metric_names(metrics, ca is not None)
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    return (ia, oa, ca), (ib, ob, cb), names


def _paired_distribution(
    sys_a, sys_b, names, n_boot: int, seed, tpr: float, batch_size: int | None
) -> tuple[dict[str, float], dict[str, float], dict[str, np.ndarray]]:
    """Point values of A and B and ``n_boot`` resampled deltas A - B (same image indices)."""
    (ia, oa, ca), (ib, ob, cb) = sys_a, sys_b
    cur_a, cur_b = _Curves(ia, oa, ca), _Curves(ib, ob, cb)
    ones = np.ones((1, ia.size)), np.ones((1, oa.size))
    point_a = _metrics_from_counts(names, *cur_a.counts(*ones, weights=True), ia.size, oa.size, tpr)
    point_b = _metrics_from_counts(names, *cur_b.counts(*ones, weights=True), ib.size, ob.size, tpr)
    deltas: dict[str, list[np.ndarray]] = {m: [] for m in names}
    n_thr = max(cur_a.n_thr, cur_b.n_thr)
    for idx_i, idx_o in _resample_indices(ia.size, oa.size, n_boot, seed, batch_size, n_thr):
        va = _metrics_from_counts(names, *cur_a.counts(idx_i, idx_o), ia.size, oa.size, tpr)
        vb = _metrics_from_counts(names, *cur_b.counts(idx_i, idx_o), ib.size, ob.size, tpr)
        for m in names:
            deltas[m].append(va[m] - vb[m])
    return (
        {m: float(point_a[m][0]) for m in names},
        {m: float(point_b[m][0]) for m in names},
        {m: np.concatenate(deltas[m]) if deltas[m] else np.empty(0) for m in names},
    )


def _delta_summary(a: float, b: float, d: np.ndarray, alpha: float) -> dict[str, Any]:
    """Point delta, percentile interval and the two-sided bootstrap p-value of resampled deltas."""
    n_le, n_ge = int(np.count_nonzero(d <= 0)), int(np.count_nonzero(d >= 0))
    p = min(1.0, 2.0 * (1 + min(n_le, n_ge)) / (d.size + 1))
    return {"a": a, "b": b, "delta": a - b, "ci": _percentile_ci(d, alpha), "p_value": p}


def paired_bootstrap(
    id_a: ArrayLike,
    ood_a: ArrayLike,
    id_b: ArrayLike,
    ood_b: ArrayLike,
    metrics: Sequence[str] = ("auroc", "fpr_at_95_tpr"),
    n_boot: int = 1000,
    seed: int = 0,
    *,
    alpha: float = 0.05,
    id_correct_a: ArrayLike | None = None,
    id_correct_b: ArrayLike | None = None,
    tpr: float = _DEFAULT_TPR,
    batch_size: int | None = None,
) -> dict[str, dict[str, Any]]:
    """Paired bootstrap of metric(A) - metric(B) on the same images.

    ``id_a[i]`` and ``id_b[i]`` are two systems' scores of the same image (likewise OOD). Each
    resample draws one set of image indices (stratified by ID/OOD) and applies it to both
    systems, so the image-to-image variation common to A and B cancels.

    Returns ``{metric: {"a", "b", "delta", "ci", "p_value"}}``: point values on all images,
    ``delta = a - b``, the percentile ``1 - alpha`` interval of the resampled deltas, and a
    two-sided bootstrap p-value for H0: delta = 0,
    ``p = min(1, 2 * min(1 + #{d* <= 0}, 1 + #{d* >= 0}) / (n_boot + 1))``
    (the +1 counts the observed sample, as in Davison & Hinkley 1997 sec. 4.4, so p > 0 and the
    smallest attainable p is 2 / (n_boot + 1)). A system compared with itself gives delta 0 and
    p = 1.
    """
    sys_a, sys_b, names = _paired_arrays(
        id_a, ood_a, id_b, ood_b, id_correct_a, id_correct_b, metrics, n_boot
    )
    pa, pb, deltas = _paired_distribution(sys_a, sys_b, names, n_boot, seed, tpr, batch_size)
    return {m: _delta_summary(pa[m], pb[m], deltas[m], alpha) for m in names}


# --------------------------------------------------------------------------------------------
# two-level bootstrap: training replicates, then test images
# --------------------------------------------------------------------------------------------
#
# A row is R training replicates (seeds), each scoring the test images; its headline value is
# the mean of the R per-replicate metrics. The two-level (hierarchical) bootstrap resamples
# both sources of noise (Davison & Hinkley 1997, sec. 3.8, two-stage sampling): resample b
# draws R replicates with replacement, then, independently for every drawn replicate, a
# stratified resample of its images; the resampled statistic is the mean of the R drawn
# metrics. Vectorised with the count-based engine: replicate j drawn m_bj times in resample b
# needs sum_b m_bj image resamples of replicate j, computed in one batch and scattered back to
# their b (in increasing b). Streams: SeedSequence(seed).spawn(R + 1); child 0 draws the
# replicates, child j + 1 the image resamples of replicate j. With R = 1 it is the image
# bootstrap itself, with the same seed (the fallback).


def _replicate_draws(n_rep: int, n_boot: int, ss: np.random.SeedSequence) -> np.ndarray:
    """How often each replicate is drawn in each resample, shape (n_boot, n_rep)."""
    idx = np.random.default_rng(ss).integers(0, n_rep, size=(n_boot, n_rep))
    rows = np.arange(n_boot)[:, None] * n_rep
    return np.bincount((rows + idx).ravel(), minlength=n_boot * n_rep).reshape(n_boot, n_rep)


def _scatter_mean(draws: np.ndarray, per_rep: list[np.ndarray]) -> np.ndarray:
    """Mean over the drawn replicates of each resample: ``per_rep[j]`` holds replicate j's
    values for its sum_b m_bj image resamples, in increasing b."""
    n_boot, n_rep = draws.shape
    out = np.zeros(n_boot)
    for j, values in enumerate(per_rep):
        owners = np.repeat(np.arange(n_boot), draws[:, j])
        out += np.bincount(owners, weights=values, minlength=n_boot)
    return out / n_rep


def two_level_bootstrap_distribution(
    replicates: Sequence[tuple[ArrayLike, ArrayLike]],
    metrics: Sequence[str] = ("auroc", "fpr_at_95_tpr", "aupr_in", "aupr_out"),
    n_boot: int = 1000,
    seed: int = 0,
    *,
    id_correct: Sequence[ArrayLike] | None = None,
    tpr: float = _DEFAULT_TPR,
    batch_size: int | None = None,
) -> dict[str, np.ndarray]:
    """Resampled replicate-mean metric, ``{metric: (n_boot,)}``: replicates, then images.

    ``replicates[j] = (id_scores, ood_scores)`` of training replicate j (image counts may differ
    between replicates); ``id_correct[j]`` its per-ID-image correctness, for OSCR / accuracy.
    One replicate gives :func:`bootstrap_distribution` with the same seed.
    """
    reps = list(replicates)
    if not reps:
        raise ValueError("two-level bootstrap of no replicates")
    if id_correct is not None and len(id_correct) != len(reps):
        raise ValueError(f"{len(id_correct)} id_correct arrays for {len(reps)} replicates")
    corr = [None] * len(reps) if id_correct is None else list(id_correct)
    if len(reps) == 1:
        return bootstrap_distribution(
            *reps[0], metrics, n_boot, seed, id_correct=corr[0], tpr=tpr, batch_size=batch_size
        )
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    names = _check_metric_names(metrics, id_correct is not None)
    children = _seed_sequence(seed).spawn(len(reps) + 1)
    draws = _replicate_draws(len(reps), n_boot, children[0])
    per_rep: dict[str, list[np.ndarray]] = {m: [] for m in names}
    for j, ((i, o), c) in enumerate(zip(reps, corr, strict=True)):
        m_j = int(draws[:, j].sum())
        if m_j == 0:
            for m in names:
                per_rep[m].append(np.empty(0))
            continue
        dist = bootstrap_distribution(
            i, o, names, m_j, children[j + 1], id_correct=c, tpr=tpr, batch_size=batch_size
        )
        for m in names:
            per_rep[m].append(dist[m])
    return {m: _scatter_mean(draws, per_rep[m]) for m in names}


def two_level_bootstrap_ci(
    replicates: Sequence[tuple[ArrayLike, ArrayLike]],
    metrics: Sequence[str] = ("auroc", "fpr_at_95_tpr", "aupr_in", "aupr_out"),
    n_boot: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
    *,
    id_correct: Sequence[ArrayLike] | None = None,
    nan_policy: NanPolicy = "raise",
    tpr: float = _DEFAULT_TPR,
    batch_size: int | None = None,
) -> dict[str, tuple[float, float]]:
    """Percentile ``1 - alpha`` intervals of the replicate-mean metric, ``{metric: (lo, hi)}``,
    from :func:`two_level_bootstrap_distribution` (training noise + test-set noise). With one
    replicate: :func:`bootstrap_ci` (test-set noise only)."""
    reps = [apply_nan_policy(i, o, nan_policy)[:2] for i, o in replicates]
    dist = two_level_bootstrap_distribution(
        reps, metrics, n_boot, seed, id_correct=id_correct, tpr=tpr, batch_size=batch_size
    )
    return {m: _percentile_ci(v, alpha) for m, v in dist.items()}


def two_level_paired_bootstrap(
    pairs: Sequence[tuple[ArrayLike, ArrayLike, ArrayLike, ArrayLike]],
    metrics: Sequence[str] = ("auroc", "fpr_at_95_tpr"),
    n_boot: int = 1000,
    seed: int = 0,
    *,
    alpha: float = 0.05,
    id_correct: Sequence[tuple[ArrayLike, ArrayLike]] | None = None,
    tpr: float = _DEFAULT_TPR,
    batch_size: int | None = None,
) -> dict[str, dict[str, Any]]:
    """Two-level paired bootstrap of mean-over-replicates metric(A) - metric(B).

    ``pairs[j] = (id_a, ood_a, id_b, ood_b)``: replicate j of A and replicate j of B (paired by
    seed index), scoring the same images in the same order (paired by image). Resample b draws
    R pairs with replacement, then for each drawn pair one stratified image resample applied to
    both systems; the resampled delta is the mean over the drawn pairs of metric(A) -
    metric(B). Seed noise shared by a pair (e.g. the same parent run) and image noise shared by
    A and B cancel; seed noise of the difference does not. ``a``, ``b``: means over the
    replicates of the point metrics; ``delta = a - b``; interval and p-value as
    :func:`paired_bootstrap`, which this is for one pair (same seed, same numbers).
    ``id_correct[j] = (correct_a, correct_b)`` for OSCR / accuracy.
    """
    pairs = list(pairs)
    if not pairs:
        raise ValueError("two-level paired bootstrap of no replicate pairs")
    if id_correct is not None and len(id_correct) != len(pairs):
        raise ValueError(f"{len(id_correct)} id_correct pairs for {len(pairs)} replicate pairs")
    corr = [(None, None)] * len(pairs) if id_correct is None else list(id_correct)
    checked = [
        _paired_arrays(*p, ca, cb, metrics, n_boot) for p, (ca, cb) in zip(pairs, corr, strict=True)
    ]
    names = checked[0][2]
    if len(pairs) == 1:
        sys_a, sys_b, _ = checked[0]
        pa, pb, deltas = _paired_distribution(sys_a, sys_b, names, n_boot, seed, tpr, batch_size)
        return {m: _delta_summary(pa[m], pb[m], deltas[m], alpha) for m in names}
    children = _seed_sequence(seed).spawn(len(pairs) + 1)
    draws = _replicate_draws(len(pairs), n_boot, children[0])
    points_a: dict[str, list[float]] = {m: [] for m in names}
    points_b: dict[str, list[float]] = {m: [] for m in names}
    per_pair: dict[str, list[np.ndarray]] = {m: [] for m in names}
    for j, (sys_a, sys_b, _) in enumerate(checked):
        m_j = int(draws[:, j].sum())
        pa, pb, deltas = _paired_distribution(
            sys_a, sys_b, names, max(m_j, 0), children[j + 1], tpr, batch_size
        )
        for m in names:
            points_a[m].append(pa[m])
            points_b[m].append(pb[m])
            per_pair[m].append(deltas[m])
    return {
        m: _delta_summary(
            float(np.mean(points_a[m])),
            float(np.mean(points_b[m])),
            _scatter_mean(draws, per_pair[m]),
            alpha,
        )
        for m in names
    }


def seed_summary(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof = 1) over seeds; std is 0 for a single value."""
    v = np.asarray(values, dtype=np.float64).ravel()
    if v.size == 0:
        raise ValueError("seed_summary of no values")
    std = float(np.std(v, ddof=1)) if v.size > 1 else 0.0
    return float(np.mean(v)), std
