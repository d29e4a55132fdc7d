"""Peak memory of the `score` and `fuse` jobs at the published experiment's size.

The published five-crop row fuses 5 views x ~150k test images (ImageNet val 50k + SSB Easy 50k
+ SSB Hard ~49k) x 1000 classes. This script writes synthetic feature caches of that shape
(float32 logits [N, C], features and pre-norm features [N, D], one cache per view and split),
then runs the real CLI jobs one at a time, as the cluster would:

- `sure-ood score` once per view (every split of that view, the row's method);
- `sure-ood fuse` over the 5 score files and the 15 caches (mean score, mean-softmax class).

Each job's peak resident memory is its own `wait4` rusage (ru_maxrss). The script exits 1 when
a job peaks above --limit-gb (2 GB by default, the memory the published config declares is
twice that) and writes the figures to --json.

    .venv/bin/python benchmarks/bench_cluster_scoring.py                  # full size (~7.6 GB disk)
    .venv/bin/python benchmarks/bench_cluster_scoring.py --n-per-split 10000   # reduced
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

BIN = Path(sys.executable).parent


def write_caches(root: Path, splits: dict[str, int], views: int, c: int, d: int) -> list:
    """One cache per (view, split): ID images labelled 0..C-1, OOD images -1."""
    from sure_ood.cache import FeatureCache, save_cache

    rng = np.random.default_rng(0)
    w = (rng.normal(size=(c, d)) / np.sqrt(d)).astype(np.float32)
    b = np.zeros(c, dtype=np.float32)
    paths = []
    labels = {  # the same images in every view
        split: rng.integers(0, c, n) if split == "id_test" else -np.ones(n, dtype=np.int64)
        for split, n in splits.items()
    }
    for v in range(views):
        for split, n in splits.items():
            h = np.abs(rng.normal(size=(n, d))).astype(np.float32)
            cache = FeatureCache(
                logits=(h @ w.T + b).astype(np.float32),
                features=h,
                labels=labels[split].astype(np.int64),
                head_weight=w,
                head_bias=b,
                prenorm_features=h,
            )
            path = root / f"view{v}" / f"split~{split}.npz"
            path.parent.mkdir(parents=True, exist_ok=True)
            save_cache(path, cache)
            paths.append(path)
            del cache, h
    np.save(root / "prior.npy", np.full(c, 1.0 / c))
    return paths


def run_measured(cmd: list[str]) -> tuple[float, float]:
    """(seconds, peak RSS in GB) of one child process, from its own rusage."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}")
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - t0
    err = proc.stderr.read().decode() if proc.stderr else ""
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(cmd[:3])} failed:\n{err[-3000:]}")
    return seconds, usage.ru_maxrss / 2**20  # Linux: kB


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-per-split", type=int, default=50_000)
    ap.add_argument("--views", type=int, default=5)
    ap.add_argument("--classes", type=int, default=1000)
    ap.add_argument("--dim", type=int, default=768)
    ap.add_argument("--method", default="rp_gradnorm")
    ap.add_argument("--limit-gb", type=float, default=2.0)
    ap.add_argument("--workdir", type=Path, default=None, help="keep the caches here")
    ap.add_argument("--json", type=Path, default=None)
    a = ap.parse_args()

    n = a.n_per_split
    splits = {"id_test": n, "ssb_easy": n, "ssb_hard": n}
    root = a.workdir or Path(tempfile.mkdtemp(prefix="bench_cluster_scoring_"))
    root.mkdir(parents=True, exist_ok=True)
    try:
        t0 = time.perf_counter()
        caches = write_caches(root, splits, a.views, a.classes, a.dim)
        size_gb = sum(p.stat().st_size for p in caches) / 2**30
        print(f"caches: {a.views} views x {sum(splits.values())} images x {a.classes} classes, "
              f"{size_gb:.2f} GB on disk, written in {time.perf_counter() - t0:.0f} s")  # fmt: skip
        rows, scores = [], []
        for v in range(a.views):
            out = root / f"scores_view{v}.parquet"
            feats = [x for p in sorted((root / f"view{v}").glob("split~*.npz"))
                     for x in ("--features", str(p))]  # fmt: skip
            cmd = [str(BIN / "sure-ood"), "score", "--method", a.method, *feats,
                   "--prior", str(root / "prior.npy"), "--out", str(out)]  # fmt: skip
            sec, gb = run_measured(cmd)
            rows.append({"job": f"score view {v}", "seconds": round(sec, 1), "peak_gb": gb})
            scores.append(out)
        cmd = [str(BIN / "sure-ood"), "fuse", "--scores", *map(str, scores),
               "--features", *map(str, caches), "--fusion", "mean",
               "--out", str(root / "fused.parquet")]  # fmt: skip
        sec, gb = run_measured(cmd)
        rows.append({"job": f"fuse {a.views} views", "seconds": round(sec, 1), "peak_gb": gb})
    finally:
        if a.workdir is None:
            shutil.rmtree(root, ignore_errors=True)
    print(f"{'job':<16} {'seconds':>8} {'peak RSS GB':>12}")
    for r in rows:
        print(f"{r['job']:<16} {r['seconds']:>8.1f} {r['peak_gb']:>12.2f}")
    worst = max(r["peak_gb"] for r in rows)
    with open("/proc/loadavg") as f:
        load = f.read().split()[:3]
    result = {"n_per_split": n, "views": a.views, "classes": a.classes, "dim": a.dim,
              "method": a.method, "cache_gb": round(size_gb, 2), "jobs": rows,
              "max_peak_gb": round(worst, 3), "limit_gb": a.limit_gb, "loadavg": load}  # fmt: skip
    if a.json:
        a.json.write_text(json.dumps(result, indent=2))
    ok = worst <= a.limit_gb
    print(f"max peak {worst:.2f} GB {'<=' if ok else '>'} {a.limit_gb} GB (load {' '.join(load)})")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
