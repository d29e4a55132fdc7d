"""Stage ``evaluate``: the metrics of one table row, with bootstrap intervals and provenance.

Reads the row's fused scores (one ``id_score`` per image, higher = in-distribution) and writes
``rows/<table>/<row>.json``: AUROC (ID positive), ``fpr_at_95_tpr`` (SSB/challenge: OOD
accepted at 95 % ID TPR), ``fpr95_ood_pos`` (OpenOOD: ID rejected at 95 % OOD TPR), AUPR-in,
AUPR-out, closed-set ID accuracy and OSCR, all as fractions; per OOD split when there are
several; percentile bootstrap 95 % intervals; and where every number came from.

Replicates. A row with ``replicates: [r0, r1, ...]`` is evaluated once per replicate (its test
models trained with shifted seeds, see :func:`sure_ood.config.replicate_seeds`); ``--scores``
then lists one fused file per replicate, in the order of ``--replicates``. The headline metrics,
their bootstrap intervals (``*_ci``), ``per_split`` and ``scores_file`` are those of the
**first** replicate (replicate ``r0``, which is the row without replicates), so a row's numbers
and its comparisons do not change when replicates are added. Beside them, for every metric of
``SEED_METRICS``: ``<m>_seed_values`` (one per replicate, in order), ``<m>_seed_mean`` and
``<m>_seed_std`` (sample std, ddof = 1) - written only when there are at least two replicates.
The bootstrap interval measures test-set sampling noise of one trained model; the seed std
measures training noise; they answer different questions and are reported side by side.
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
        help="fused score parquet of the row, one per replicate (first = headline)",
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
        # the same NaN policy as the point estimate (worst: NaN images count as errors)
        cis = bootstrap_ci(
            id_scores,
            ood_scores,
            metrics=CI_METRICS,
            n_boot=n_boot,
            seed=seed,
            nan_policy=nan_policy,
        )
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


def _read_scores(path: Path):
    import pandas as pd

    try:
        return pd.read_parquet(path)
    except (OSError, ValueError) as e:
        raise InputError(f"{path}: cannot read scores ({e})") from e


def seed_statistics(per_replicate: list[dict]) -> dict:
    """``<m>_seed_values``, ``<m>_seed_mean``, ``<m>_seed_std`` (ddof 1) over replicates."""
    from sure_ood.metrics import seed_summary

    out = {}
    for m in SEED_METRICS:
        values = [r.get(m) for r in per_replicate]
        if any(v is None for v in values):
            continue
        mean, std = seed_summary([float(v) for v in values])
        out[f"{m}_seed_values"] = [float(v) for v in values]
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
    """The row JSON: metrics of the first replicate (+ CIs), seed statistics over replicates
    when there are several, and provenance (config subtree, versions, commit, file hashes)."""
    from sure_ood import __version__

    paths = [Path(scores_path)] if isinstance(scores_path, (str, Path)) else list(scores_path)
    if not paths:
        raise InputError("no scores file")
    replicates = list(range(len(paths))) if replicates is None else [int(r) for r in replicates]
    if len(replicates) != len(paths):
        raise InputError(f"{len(paths)} scores files but {len(replicates)} replicate ids")
    per_rep = []
    for i, path in enumerate(paths):
        try:
            m = row_metrics(
                _read_scores(path), n_boot=n_boot if i == 0 else 0, seed=seed, nan_policy=nan_policy
            )
        except (InputError, ValueError) as e:
            raise InputError(f"{path}: {e}") from e
        if m["n_nonfinite"]:
            print(
                f"warning: {path}: {m['n_nonfinite']} images have a non-finite score; counted as "
                f"the worst case ({nan_policy}), never dropped"
            )
        per_rep.append(m)
    res = dict(per_rep[0])
    if len(paths) > 1:
        res.update(seed_statistics(per_rep))
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
            "replicate": replicates[0],
        },
    }
    return {
        "table": table,
        "row": row_id,
        **res,
        "replicates": replicates,
        "headline_replicate": replicates[0],
        "replicate_scores_files": [str(p) for p in paths],
        "scores_file": str(paths[0]),
        "provenance": provenance,
    }


def run(args: argparse.Namespace) -> int:
    from sure_ood.args import check_suffix, json_arg

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
    if "auroc_seed_mean" in res:
        stats = ", ".join(
            f"{name} {100 * res[f'{k}_seed_mean']:.2f} +- {100 * res[f'{k}_seed_std']:.2f}"
            for k, name in (("auroc", "AUROC"), ("fpr_at_95_tpr", "FPR@95"))
        )
        print(f"over {len(res['replicates'])} replicates: {stats}")
    return 0
