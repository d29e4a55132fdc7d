"""Cost of one SURE training step relative to one plain cross-entropy SGD step.

Same timm model (tiny DeiT-III with a cosine head), same batch; variants timed interleaved
(one step of each per repeat, so drift in machine load hits all alike); reports medians and
the median of the per-repeat ratios. Not a test: run it by hand and record the figures in
docs/performance_training.md.

    .venv/bin/python benchmarks/bench_sure_step.py [--repeats 200] [--warmup 20] [--threads N]

Variants:
  plain       CE, SGD(momentum 0.9, wd 5e-3): 1 forward + 1 backward on B.
  sure        SAM(rho 0.05) + RegMixup weight 0.2 (beta 10), label smoothing 0.1, CRL weight 0:
              2 passes x (1 forward + 1 backward on the concatenated 2B batch).
  sure_2fwd   the same with single_forward=False: 2 passes x (2 forwards on B + backward).
  sure_crl    sure with CRL weight 1 (CRL term computed; SURE's ResNet setting).
Theory: ~4x for sure (twice the passes, twice the samples per pass).
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time

import timm
import torch
from machine import cpu_model
from torch import nn

from sure_ood.tricks import SAM, CorrectnessHistory, CosineHead, replace_head, sure_step


def make_model() -> nn.Module:
    model = timm.create_model(
        "deit3_small_patch16_224",
        pretrained=False,
        img_size=28,
        patch_size=7,
        depth=4,
        embed_dim=96,
        num_heads=3,
        num_classes=6,
        in_chans=1,
        init_values=0,
    )
    return replace_head(model, CosineHead(model.num_features, 6, temperature=8.0))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=200)
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    dev = torch.device(args.device)

    base = make_model().to(dev).train()
    n = 1024
    x = torch.randn(args.batch, 1, 28, 28, device=dev)
    y = torch.randint(0, 6, (args.batch,), device=dev)
    idx = torch.randint(0, n, (args.batch,), device=dev)
    ce = nn.CrossEntropyLoss()
    ce_ls = nn.CrossEntropyLoss(label_smoothing=0.1)
    sgd_kw = dict(lr=0.01, momentum=0.9, weight_decay=5e-3)

    m_plain = copy.deepcopy(base)
    o_plain = torch.optim.SGD(m_plain.parameters(), **sgd_kw)

    def plain_step() -> None:
        o_plain.zero_grad(set_to_none=True)
        loss = ce(m_plain(x), y)
        loss.backward()
        o_plain.step()
        float(loss.detach())  # same host sync as sure_step's finiteness check

    def make_sure(single_forward: bool, crl_weight: float):
        m = copy.deepcopy(base)
        opt = SAM(m.parameters(), torch.optim.SGD, rho=0.05, **sgd_kw)
        hist = CorrectnessHistory(n, device=dev)
        gen = torch.Generator().manual_seed(0)

        def step() -> None:
            sure_step(m, x, y, idx, ce_ls, opt, mixup_weight=0.2, mixup_beta=10.0,
                      crl_weight=crl_weight, crl_history=hist, generator=gen,
                      single_forward=single_forward)  # fmt: skip

        return step

    variants = {
        "plain": plain_step,
        "sure": make_sure(True, 0.0),
        "sure_2fwd": make_sure(False, 0.0),
        "sure_crl": make_sure(True, 1.0),
    }
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    for _ in range(args.warmup):
        for fn in variants.values():
            fn()
    times: dict[str, list[float]] = {k: [] for k in variants}
    for _ in range(args.repeats):
        for name, fn in variants.items():
            sync()
            t0 = time.perf_counter()
            fn()
            sync()
            times[name].append(time.perf_counter() - t0)

    med = {k: statistics.median(v) for k, v in times.items()}
    result = {
        "torch": torch.__version__,
        "timm": timm.__version__,
        "device": str(dev),
        "cpu": cpu_model(),
        "num_threads": torch.get_num_threads(),
        "batch": args.batch,
        "repeats": args.repeats,
        "median_ms": {k: round(v * 1e3, 3) for k, v in med.items()},
    }
    for k in variants:
        if k == "plain":
            continue
        per_rep = [a / b for a, b in zip(times[k], times["plain"], strict=True)]
        result[f"ratio_{k}_over_plain"] = {
            "of_medians": round(med[k] / med["plain"], 3),
            "median_per_repeat": round(statistics.median(per_rep), 3),
        }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
