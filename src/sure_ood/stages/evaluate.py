"""Stage ``evaluate``: the metrics of one table row, with bootstrap intervals and provenance.

Reads the row's fused scores (one ``id_score`` per image, higher = in-distribution) and writes
``rows/<table>/<row>.json``: AUROC (ID positive), ``fpr_at_95_tpr`` (SSB/challenge: OOD
accepted at 95 % ID TPR), ``fpr95_ood_pos`` (OpenOOD: ID rejected at 95 % OOD TPR), AUPR-in,
AUPR-out, closed-set ID accuracy and OSCR, all as fractions; per OOD split when there are
several; percentile bootstrap 95 % intervals; and where every number came from.

Replicates are the unit. A row with replicates (training seeds, see
:func:`sure_ood.config.replicate_seeds`) is given one fused score file per replicate in
``--scores``, in the order of ``--replicates``. Every metric of ``SEED_METRICS`` is computed per
replicate (``<m>_seed_values``, in replicate order) and the headline ``<m>`` is their mean; with
two or more replicates also ``<m>_seed_mean`` (= ``<m>``) and ``<m>_seed_std`` (sample std,
ddof = 1, the training noise). The intervals ``<m>_ci`` of ``CI_METRICS`` come from a seeded
two-level stratified bootstrap (replicates, then the images of each drawn replicate:
:func:`sure_ood.metrics.two_level_bootstrap_ci`), so they hold training and test-set noise; with
one replicate it is the image bootstrap (``ci_method``: ``two_level`` or ``images``).
``per_split`` (several OOD splits) holds replicate means too. ``scores_file`` is replicate 0's
file, ``replicate_scores_files`` all of them (what ``sure-ood compare`` pairs).
"""

from __future__ import annotations

import argparse
import subprocess
from pathlib import Path

import numpy as np

from sure_ood.io import InputError, file_digest, write_json

CI_METRICS = ("auroc", "fpr_at_95_tpr", "aupr_in", "aupr_out")
SEED_METRICS = (
    "auroc",
    "fpr_at_95_tpr",
    "fpr95_ood_pos",
    "aupr_in",
    "aupr_out",
    "id_accuracy",
    "oscr",
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--scores",
        required=True,
        nargs="+",
        type=Path,
        help="fused score parquet of the row, one per replicate",
    )
    p.add_argument(
        "--replicates",
        nargs="*",
        type=int,
        default=None,
        help="replicate ids of the --scores files (default 0, 1, ...)",
    )
    p.add_argument("--row", required=True, help="the row's resolved config (JSON)")
    p.add_argument(
        "--config",
        default=None,
        help="the row's full config subtree (row, model, recipes, method; JSON), for provenance",
    )
    p.add_argument("--table", required=True)
    p.add_argument("--row-id", required=True)
    p.add_argument("--checkpoints", nargs="*", default=[], type=Path, help="for provenance")
    p.add_argument("--features", nargs="*", default=[], type=Path, help="for provenance")
    p.add_argument("--n-boot", type=int, required=True, help="bootstrap resamples")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--nan-policy", default="worst", choices=("raise", "worst"))
    p.add_argument("--out", required=True, type=Path)


def git_commit() -> str | None:
    try:
        r = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return r.stdout.strip() or None if r.returncode == 0 else None


def package_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("sure-ood", "torch", "timm", "numpy", "scikit-learn", "pandas", "snakemake"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            pass
    return out


def replicate_metrics(df, nan_policy: str = "worst") -> tuple[dict, np.ndarray, np.ndarray]:
    """Point metrics of one replicate's fused score table (ID rows have label >= 0, OOD rows
    label -1), and its ID and OOD scores after the NaN policy (the bootstrap's input)."""
    from sure_ood.metrics import apply_nan_policy, ood_metrics

    is_id = df["label"].to_numpy() >= 0
    scores = df["id_score"].to_numpy(float)
    id_scores, ood_scores = scores[is_id], scores[~is_id]
    if len(id_scores) == 0 or len(ood_scores) == 0:
        raise InputError(
            f"need both ID and OOD images; got {len(id_scores)} ID, {len(ood_scores)} OOD"
        )
    id_df = df[is_id]
    res = ood_metrics(
        id_scores,
        ood_scores,
        id_preds=id_df["pred"].to_numpy(),
        id_labels=id_df["label"].to_numpy(),
        nan_policy=nan_policy,
    )
    res = {k: (float(v) if isinstance(v, (float, np.floating)) else v) for k, v in res.items()}
    res["n_id"], res["n_ood"] = int(len(id_scores)), int(len(ood_scores))
    res["n_nonfinite"] = int((~np.isfinite(scores)).sum())
    ood_splits = sorted(df.loc[~is_id, "split"].unique())
    if len(ood_splits) > 1:
        res["per_split"] = {}
        for s in ood_splits:
            sel = (df["split"] == s).to_numpy() & ~is_id
            m = ood_metrics(id_scores, scores[sel], nan_policy=nan_policy)
            res["per_split"][s] = {k: float(v) for k, v in m.items() if np.isscalar(v)}
            res["per_split"][s]["n_ood"] = int(sel.sum())
    i, o, _ = apply_nan_policy(id_scores, ood_scores, nan_policy)
    return res, i, o


def _mean_per_split(per_rep: list[dict]) -> dict:
    """``per_split`` averaged over replicates (image counts from the first)."""
    out = {}
    for split, first in per_rep[0]["per_split"].items():
        out[split] = {
            k: (float(np.mean([r["per_split"][split][k] for r in per_rep])) if k != "n_ood" else v)
            for k, v in first.items()
        }
    return out


def _read_scores(path: Path):
    from sure_ood.inputs import read_score_table

    return read_score_table(path)


def seed_statistics(per_replicate: list[dict]) -> dict:
    """Headline ``<m>`` = mean over replicates and ``<m>_seed_values``; with two or more
    replicates also ``<m>_seed_mean`` and ``<m>_seed_std`` (ddof 1)."""
    from sure_ood.metrics import seed_summary

    out = {}
    for m in SEED_METRICS:
        values = [r.get(m) for r in per_replicate]
        if any(v is None for v in values):
            continue
        mean, std = seed_summary([float(v) for v in values])
        out[m] = float(mean)
        out[f"{m}_seed_values"] = [float(v) for v in values]
        if len(values) > 1:
            out[f"{m}_seed_mean"], out[f"{m}_seed_std"] = float(mean), float(std)
    return out


def evaluate(
    scores_path: Path | list[Path],
    row: dict,
    table: str,
    row_id: str,
    checkpoints=(),
    features=(),
    n_boot: int = 1000,
    seed: int = 0,
    nan_policy: str = "worst",
    replicates: list[int] | None = None,
    config_subtree: dict | None = None,
) -> dict:
    """The row JSON: replicate means of the metrics, per-replicate values, seed std, two-level
    bootstrap intervals, and provenance (config subtree, versions, commit, file hashes)."""
    from sure_ood import __version__
    from sure_ood.metrics import two_level_bootstrap_ci

    paths = [Path(scores_path)] if isinstance(scores_path, (str, Path)) else list(scores_path)
    if not paths:
        raise InputError("no scores file")
    replicates = list(range(len(paths))) if replicates is None else [int(r) for r in replicates]
    if len(replicates) != len(paths):
        raise InputError(f"{len(paths)} scores files but {len(replicates)} replicate ids")
    per_rep, arrays = [], []
    for path in paths:
        try:
            m, i, o = replicate_metrics(_read_scores(path), nan_policy=nan_policy)
        except (InputError, ValueError) as e:
            raise InputError(f"{path}: {e}") from e
        if m["n_nonfinite"]:
            print(
                f"warning: {path}: {m['n_nonfinite']} images have a non-finite score; counted as "
                f"the worst case ({nan_policy}), never dropped"
            )
        per_rep.append(m)
        arrays.append((i, o))
    res = {
        "n_id": per_rep[0]["n_id"],
        "n_ood": per_rep[0]["n_ood"],
        "n_nonfinite": int(sum(m["n_nonfinite"] for m in per_rep)),
        "n_replicates": len(paths),
        **seed_statistics(per_rep),
    }
    if "per_split" in per_rep[0]:
        res["per_split"] = _mean_per_split(per_rep)
    ci_method = "two_level" if len(paths) > 1 else "images"
    if n_boot > 0:
        cis = two_level_bootstrap_ci(arrays, metrics=CI_METRICS, n_boot=n_boot, seed=seed)
        for k, (lo, hi) in cis.items():
            res[f"{k}_ci"] = [float(lo), float(hi)]
        res["ci_method"] = ci_method
    provenance = {
        "row_config": row,
        "config": config_subtree,
        "sure_ood_version": __version__,
        "packages": package_versions(),
        "git_commit": git_commit(),
        "scores": {str(p): file_digest(p) for p in paths},
        "checkpoints": {str(p): file_digest(p) for p in checkpoints},
        "feature_caches": {str(p): file_digest(p) for p in features},
        "bootstrap": {
            "n_boot": n_boot,
            "seed": seed,
            "stratified": True,
            "level": 0.95,
            "method": ci_method,
            "replicates": replicates,
        },
    }
    return {
        "table": table,
        "row": row_id,
        **res,
        "replicates": replicates,
        "replicate_scores_files": [str(p) for p in paths],
        "scores_file": str(paths[0]),
        "provenance": provenance,
    }


def run(args: argparse.Namespace) -> int:
    from sure_ood.args import check_suffix, json_arg
    from sure_ood.inputs import check_out_not_input

    check_out_not_input(
        args.out,
        [("--scores", p) for p in args.scores]
        + [("--checkpoints", p) for p in args.checkpoints]
        + [("--features", p) for p in args.features],
    )
    check_suffix(args.out, "--out", ".json", what="the row as JSON")
    res = evaluate(
        args.scores,
        json_arg(args.row, "--row"),
        args.table,
        args.row_id,
        args.checkpoints,
        args.features,
        args.n_boot,
        args.seed,
        args.nan_policy,
        replicates=args.replicates or None,
        config_subtree=json_arg(args.config, "--config") if args.config else None,
    )
    write_json(args.out, res)
    print(
        f"{args.out}: AUROC {100 * res['auroc']:.2f}  FPR@95 {100 * res['fpr_at_95_tpr']:.2f}  "
        f"ACC {100 * res.get('id_accuracy', float('nan')):.2f}"
    )
    if "auroc_seed_std" in res:
        stats = ", ".join(
            f"{name} seed std {100 * res[f'{k}_seed_std']:.2f}"
            for k, name in (("auroc", "AUROC"), ("fpr_at_95_tpr", "FPR@95"))
        )
        print(f"means over {res['n_replicates']} replicates; {stats}")
    return 0
