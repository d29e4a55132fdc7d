"""What portable numerics cost in a training step, and where: MKL's branch vs numpy's OpenBLAS.

Runs one process per setting (the math libraries read their pins when they load) and times:

- ``gemm``: the twelve matrix products of one linear layer's forward and backward
  (``x W^T``, ``g W``, ``g^T x``) for the default tiny DeiT-III's four layer shapes (batch 32 x
  17 tokens = 544 rows), by torch (MKL) and by numpy (OpenBLAS), best of ``--repeats``;
- ``step``: ``--steps`` AdamW steps of the default tiny DeiT-III on fixed random data.

Settings: ``native`` (nothing pinned), ``portable`` (every pin, the model's products on numpy's
OpenBLAS: ``sure_ood.portable_blas``) and ``portable-mkl`` (every pin, products on MKL's
COMPATIBLE branch: portable mode before ``portable_blas``). Rounds alternate the settings, so a
change of machine load hits all alike. Not a test: record the figures in docs/performance.md.

    .venv/bin/python benchmarks/bench_portable_blas.py [--rounds 3] [--steps 100]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

from machine import cpu_model, load_average
from probe_numerics import default_model

SETTINGS = ("native", "portable", "portable-mkl")
# (K, N) of the four linear layers of the default model (embed 96, MLP 384): qkv, proj, fc1, fc2
LAYERS = ((96, 288), (96, 96), (96, 384), (384, 96))
ROWS = 544


def inner(setting: str, steps: int, repeats: int) -> dict:
    """One setting, in this process: returns the timings as a dict."""
    from sure_ood import numerics

    numerics.apply("native" if setting == "native" else "portable")
    import numpy as np
    import torch

    numerics.configure_torch(1)
    if setting == "portable-mkl":
        from sure_ood import portable_blas

        portable_blas.uninstall()
    rng = np.random.default_rng(0)
    gemm = {"torch": 0.0, "numpy": 0.0}
    for k, n in LAYERS:
        x = rng.standard_normal((ROWS, k), dtype=np.float32)
        w = rng.standard_normal((n, k), dtype=np.float32)
        g = rng.standard_normal((ROWS, n), dtype=np.float32)
        tx, tw, tg = (torch.from_numpy(a) for a in (x, w, g))
        operands = {
            "torch": ((tx, tw.T), (tg, tw), (tg.T, tx)),
            "numpy": ((x, w.T), (g, w), (g.T, x)),
        }
        for lib, pairs in operands.items():
            for a, b in pairs:
                a @ b
                best = float("inf")
                for _ in range(repeats):
                    t = time.perf_counter()
                    a @ b
                    best = min(best, time.perf_counter() - t)
                gemm[lib] += best

    from sure_ood.models import build_model, model_spec

    torch.manual_seed(0)
    cfg = default_model()
    model = build_model(model_spec(cfg, 6, {"head": "linear"}))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.05)
    gen = torch.Generator().manual_seed(1)

    def step() -> None:
        x = torch.randn(32, 1, 28, 28, generator=gen)
        y = torch.randint(0, 6, (32,), generator=gen)
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()

    for _ in range(10):
        step()
    t = time.perf_counter()
    for _ in range(steps):
        step()
    return {
        "gemm_torch_us": round(gemm["torch"] * 1e6),
        "gemm_numpy_us": round(gemm["numpy"] * 1e6),
        "step_ms": round((time.perf_counter() - t) / steps * 1e3, 2),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=50)
    ap.add_argument("--json", help="also write the figures here")
    ap.add_argument("--inner", choices=SETTINGS, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.inner:
        print(json.dumps(inner(args.inner, args.steps, args.repeats)))
        return
    load0 = load_average()
    runs: dict[str, list[dict]] = {s: [] for s in SETTINGS}
    for _ in range(args.rounds):
        for s in SETTINGS:
            cmd = [sys.executable, __file__, "--inner", s, "--steps", str(args.steps)]
            cmd += ["--repeats", str(args.repeats)]
            out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
            runs[s].append(json.loads(out.strip().splitlines()[-1]))
    med = {s: {k: statistics.median(r[k] for r in v) for k in v[0]} for s, v in runs.items()}
    base = med["native"]
    print(f"{cpu_model()}, load {load0} -> {load_average()}; medians of {args.rounds} rounds")
    head = ("setting", "torch GEMMs us", "numpy GEMMs us", "step ms", "vs native")
    print(f"{head[0]:<14}{head[1]:>16}{head[2]:>16}{head[3]:>10}{head[4]:>11}")
    for s, m in med.items():
        ratio = m["step_ms"] / base["step_ms"]
        print(
            f"{s:<14}{m['gemm_torch_us']:>16.0f}{m['gemm_numpy_us']:>16.0f}"
            f"{m['step_ms']:>10.2f}{ratio:>10.2f}x"
        )
    if args.json:
        res = {"cpu": cpu_model(), "load": [load0, load_average()], "runs": runs, "median": med}
        with open(args.json, "w") as f:
            json.dump(res, f, indent=2)


if __name__ == "__main__":
    main()
