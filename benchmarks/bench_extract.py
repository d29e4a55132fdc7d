"""Extraction throughput: our ``extract.forward_cache`` path vs timm's raw forward.

forward_cache does more than ``model(x)``: it also captures the pre-final-norm token (a forward
hook), pools it a second time, and copies logits + features + pre-norm features to the host.
This measures the cost of that on the same pre-built batches (no data loading), in images/s.
Target: forward_cache >= 0.9x the raw forward.

    python benchmarks/bench_extract.py                      # CPU, a small DeiT-III at 64 px
    python benchmarks/bench_extract.py --device cuda --arch deit3_base_patch16_384 \
        --img-size 384 --batch-size 128 --amp bf16 --channels-last   # and --img-size 480
"""

from __future__ import annotations

import argparse
import json
import platform
import time


def main() -> None:
    import timm
    import torch

    from sure_ood.distributed import autocast, use_channels_last
    from sure_ood.models import resolve_device
    from sure_ood.stages.extract import forward_cache

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--arch", default="deit3_small_patch16_224")
    p.add_argument("--img-size", type=int, default=64)
    p.add_argument("--timm-kwargs", default='{"patch_size": 8, "depth": 6}')
    p.add_argument("--num-classes", type=int, default=1000)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--batches", type=int, default=8)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--device", default="auto")
    p.add_argument("--amp", default="none", choices=("none", "bf16", "fp16"))
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args()

    torch.set_num_threads(a.threads)
    device = resolve_device(a.device)
    kwargs = json.loads(a.timm_kwargs) if a.timm_kwargs else {}
    model = timm.create_model(
        a.arch, pretrained=False, img_size=a.img_size, num_classes=a.num_classes, **kwargs
    )
    model.to(device).eval()
    cl = use_channels_last(a.channels_last, device)
    if cl:
        model.to(memory_format=torch.channels_last)
    g = torch.Generator().manual_seed(0)
    batches = [
        (
            torch.randn(a.batch_size, 3, a.img_size, a.img_size, generator=g),
            torch.zeros(a.batch_size),
            None,
        )
        for _ in range(a.batches)
    ]
    n = a.batch_size * a.batches

    def sync():
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    def raw():
        with torch.inference_mode(), autocast(a.amp, device):
            for x, _, _ in batches:
                x = x.to(device, non_blocking=True)
                if cl:
                    x = x.contiguous(memory_format=torch.channels_last)
                model(x).float().cpu()
        sync()

    def ours():
        forward_cache(model, batches, device, amp=a.amp, channels_last=a.channels_last)
        sync()

    raw()
    ours()  # warm-up
    best = {}
    for name, fn in (("timm_forward", raw), ("forward_cache", ours)) * a.repeats:
        t0 = time.perf_counter()
        fn()
        dt = time.perf_counter() - t0
        best[name] = max(best.get(name, 0.0), n / dt)
    ratio = best["forward_cache"] / best["timm_forward"]
    print(
        json.dumps(
            {
                "machine": platform.processor() or platform.machine(),
                "device": torch.cuda.get_device_name() if device.startswith("cuda") else "cpu",
                "threads": a.threads,
                "arch": a.arch,
                "img_size": a.img_size,
                "batch_size": a.batch_size,
                "amp": a.amp,
                "channels_last": cl,
                "img_per_s": {k: round(v, 1) for k, v in best.items()},
                "ratio": round(ratio, 3),
            }
        )
    )


if __name__ == "__main__":
    main()
