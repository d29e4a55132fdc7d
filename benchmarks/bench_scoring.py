"""Time and peak memory of every cache-based score on the CPU, and KNN's memory scaling.

Synthetic caches: N_test = 100,000 images (default), N_train = 20,000, D = 384, C = 100
(linear head with bias). For each method: fit seconds (on the train cache), score seconds and
peak traced memory during scoring (tracemalloc traces numpy allocations), next to the size of
the test cache's arrays. Then KNN with N_test in {25k, 50k, 100k} (bank 20k) and the bank in
{25k, 50k, 100k} (N_test 10k): peak memory grows linearly, there is no N x N matrix.

    .venv/bin/python benchmarks/bench_scoring.py [--n 100000] [--d 384] [--c 100]
"""

from __future__ import annotations

import argparse
import os
import time
import tracemalloc

import numpy as np


def make(n: int, d: int, c: int, seed: int, w: np.ndarray, b: np.ndarray, ood: bool = False):
    from sure_ood.cache import FeatureCache

    rng = np.random.default_rng(seed)
    y = rng.integers(0, c, n)
    h = np.abs(rng.normal(size=(n, d)))
    if not ood:
        h += 8.0 * np.sqrt(d) * np.maximum(w[y], 0.0)  # separable classes
    z = h @ w.T + b
    msp = np.exp(z - z.max(1, keepdims=True))
    return FeatureCache(
        logits=z.astype(np.float32),
        features=h.astype(np.float32),
        labels=-np.ones(n, dtype=np.int64) if ood else y,
        head_weight=w,
        head_bias=b,
        extra={"odin_score": (msp / msp.sum(1, keepdims=True)).max(1)},
    )


def measure(fn):
    tracemalloc.start()
    tracemalloc.reset_peak()
    t0 = time.perf_counter()
    out = fn()
    secs = time.perf_counter() - t0
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return out, secs, peak / 2**20


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--n-train", type=int, default=20_000)
    ap.add_argument("--d", type=int, default=384)
    ap.add_argument("--c", type=int, default=100)
    ap.add_argument("--skip-knn-scaling", action="store_true")
    args = ap.parse_args()

    import sklearn.covariance  # noqa: F401  (imported by the fitted methods; not timed)

    from sure_ood import scores

    d, c = args.d, args.c
    rng = np.random.default_rng(0)
    w, b = rng.normal(size=(c, d)) / np.sqrt(d), rng.normal(size=c) * 0.1
    train = make(args.n_train, d, c, 1, w, b)
    test = make(args.n, d, c, 2, w, b, ood=True)
    data_mb = (test.logits.nbytes + test.features.nbytes) / 2**20
    print(
        f"{os.cpu_count()} logical CPUs; N_test={args.n}, N_train={args.n_train}, D={d}, C={c}; "
        f"test cache arrays (float32 logits + features): {data_mb:.0f} MiB"
    )
    print()
    print("| method | fit s | score s | peak MiB (score) |")
    print("|---|---|---|---|")
    for name in scores.available():
        if name == "odin":
            continue  # needs the network (the odin rule); its scorer only reads stored scores
        scorer = scores.get(name)
        _, fit_s, _ = measure(lambda s=scorer: s.fit(train))
        out, secs, peak = measure(lambda s=scorer: s.score(test))
        assert out.shape == (args.n,)
        print(f"| {name} | {fit_s:.2f} | {secs:.2f} | {peak:.0f} |", flush=True)

    if args.skip_knn_scaling:
        return
    print()
    print("KNN (K=50) memory scaling (peak traced MiB while scoring):")
    print("| N_test | N_bank | score s | peak MiB |")
    print("|---|---|---|---|")
    for n_test, n_bank in [
        (25_000, 20_000),
        (50_000, 20_000),
        (100_000, 20_000),
        (10_000, 25_000),
        (10_000, 50_000),
        (10_000, 100_000),
    ]:
        bank = make(n_bank, d, c, 3, w, b)
        te = make(n_test, d, c, 4, w, b, ood=True)
        knn = scores.get("knn").fit(bank)
        _, secs, peak = measure(lambda k=knn, t=te: k.score(t))
        print(f"| {n_test} | {n_bank} | {secs:.2f} | {peak:.0f} |", flush=True)


if __name__ == "__main__":
    main()
