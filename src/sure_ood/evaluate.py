"""Stage ``evaluate``: the metrics of one table row, with bootstrap intervals and provenance.

Reads the row's fused scores (one ``id_score`` per image, higher = in-distribution) and writes
``rows/<table>/<row>.json``: AUROC (ID positive), ``fpr_at_95_tpr`` (SSB/challenge: OOD
accepted at 95 % ID TPR), ``fpr95_ood_pos`` (OpenOOD: ID rejected at 95 % OOD TPR), AUPR-in,
AUPR-out, closed-set ID accuracy and OSCR, all as fractions; per OOD split when there are
several; percentile bootstrap 95 % intervals; and where every number came from.
"""

from __future__ import annotations

import argparse
import json
import subprocess
from pathlib import Path

import numpy as np

from sure_ood.io import InputError, file_digest, write_json

CI_METRICS = ("auroc", "fpr_at_95_tpr", "aupr_in", "aupr_out")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--scores", required=True, type=Path, help="fused score parquet of the row")
    p.add_argument("--row", required=True, help="the row's config (JSON)")
    p.add_argument("--table", required=True)
    p.add_argument("--row-id", required=True)
    p.add_argument("--checkpoints", nargs="*", default=[], type=Path, help="for provenance")
    p.add_argument("--features", nargs="*", default=[], type=Path, help="for provenance")
    p.add_argument("--n-boot", type=int, default=1000)
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


def row_metrics(df, n_boot: int = 1000, seed: int = 0, nan_policy: str = "worst") -> dict:
    """Metrics of a fused score table: ID rows have label >= 0, OOD rows label -1."""
    from sure_ood.metrics import bootstrap_ci, ood_metrics

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
    if n_boot > 0:
        finite_id = np.nan_to_num(id_scores, nan=-np.inf)
        finite_ood = np.nan_to_num(ood_scores, nan=np.inf)
        cis = bootstrap_ci(finite_id, finite_ood, metrics=CI_METRICS, n_boot=n_boot, seed=seed)
        for k, (lo, hi) in cis.items():
            res[f"{k}_ci"] = [float(lo), float(hi)]
    ood_splits = sorted(df.loc[~is_id, "split"].unique())
    if len(ood_splits) > 1:
        res["per_split"] = {}
        for s in ood_splits:
            sel = (df["split"] == s).to_numpy() & ~is_id
            m = ood_metrics(id_scores, scores[sel], nan_policy=nan_policy)
            res["per_split"][s] = {k: float(v) for k, v in m.items() if np.isscalar(v)}
            res["per_split"][s]["n_ood"] = int(sel.sum())
    return res


def evaluate(
    scores_path: Path,
    row: dict,
    table: str,
    row_id: str,
    checkpoints=(),
    features=(),
    n_boot: int = 1000,
    seed: int = 0,
    nan_policy: str = "worst",
) -> dict:
    import pandas as pd

    from sure_ood import __version__

    try:
        df = pd.read_parquet(scores_path)
    except (OSError, ValueError) as e:
        raise InputError(f"{scores_path}: cannot read scores ({e})") from e
    try:
        res = row_metrics(df, n_boot=n_boot, seed=seed, nan_policy=nan_policy)
    except (InputError, ValueError) as e:
        raise InputError(f"{scores_path}: {e}") from e
    if res["n_nonfinite"]:
        print(
            f"warning: {res['n_nonfinite']} images have a non-finite score; counted as the "
            f"worst case ({nan_policy}), never dropped"
        )
    return {
        "table": table,
        "row": row_id,
        **res,
        "scores_file": str(scores_path),
        "provenance": {
            "row_config": row,
            "sure_ood_version": __version__,
            "packages": package_versions(),
            "git_commit": git_commit(),
            "checkpoints": {str(p): file_digest(p) for p in checkpoints},
            "feature_caches": {str(p): file_digest(p) for p in features},
            "bootstrap": {"n_boot": n_boot, "seed": seed, "stratified": True, "level": 0.95},
        },
    }


def run(args: argparse.Namespace) -> int:
    res = evaluate(
        args.scores,
        json.loads(args.row),
        args.table,
        args.row_id,
        args.checkpoints,
        args.features,
        args.n_boot,
        args.seed,
        args.nan_policy,
    )
    write_json(args.out, res)
    print(
        f"{args.out}: AUROC {100 * res['auroc']:.2f}  FPR@95 {100 * res['fpr_at_95_tpr']:.2f}  "
        f"ACC {100 * res.get('id_accuracy', float('nan')):.2f}"
    )
    return 0
