"""Stage ``extract``: one forward pass over one split and one view, cached for every score.

Writes the feature cache of ``sure_ood.cache`` (logits, the head's input features, the
pre-final-norm CLS feature, labels, and the head's parameters), so that every post-hoc method
except ODIN runs without the backbone.

Large splits can be cut into ``--num-shards`` contiguous shards, one job each (``--shard``);
``sure-ood merge_features`` concatenates them in order into the split's cache. On CUDA,
``--amp bf16|fp16`` runs the forward under autocast (outputs are stored as float32) and
``--channels-last`` uses channels-last memory; both do nothing on the CPU.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from sure_ood.inference import BATCH_SIZE
from sure_ood.settings import Compute


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--test-model", required=True, type=Path)
    p.add_argument("--benchmark", required=True, help="benchmark config subtree (JSON)")
    p.add_argument("--data-dir", required=True, type=Path)
    p.add_argument(
        "--split", required=True, nargs="+", help="one or more splits (one --out each, in order)"
    )
    # the workflow passes every setting (defaults: the config schema), so none is restated here
    p.add_argument("--view", required=True)
    p.add_argument("--batch-size", type=int, required=True)
    p.add_argument("--threads", type=int, required=True)
    p.add_argument("--device", required=True)
    Compute.add_arguments(p)  # --amp, --workers, --pin-memory, --channels-last
    p.add_argument("--shard", type=int, default=0, help="which shard of the split (0-based)")
    p.add_argument("--num-shards", type=int, required=True, help="cut the split into N shards")
    p.add_argument("--out", required=True, type=Path, nargs="+")


def forward_cache(
    model,
    loader,
    device: str,
    amp: str = "none",
    channels_last: bool = False,
    desc: str = "extract",
) -> dict:
    """Run the model once; return (logits, features, prenorm_features, labels) as numpy.

    ``features`` is what the classifier sees (timm ``forward_head(pre_logits=True)``);
    ``prenorm_features`` is the same pooled token taken before the final norm (a forward
    hook on ``model.norm``), so one extraction serves the LN and the no-LN analyses.
    ``amp`` / ``channels_last``: CUDA only (see ``sure_ood.distributed``); outputs are float32.
    """
    import torch

    from sure_ood.distributed import autocast, use_channels_last
    from sure_ood.progress import track

    channels_last = use_channels_last(channels_last, device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    non_blocking = device.startswith("cuda")

    captured: dict = {}
    norm = getattr(model, "norm", None)
    hook = None
    if norm is not None and not isinstance(norm, torch.nn.Identity):
        hook = norm.register_forward_hook(lambda m, i, o: captured.__setitem__("pre", i[0]))
    head = model.get_classifier()
    out = {"logits": [], "features": [], "prenorm": [], "labels": []}
    model.eval()
    try:
        with torch.inference_mode(), autocast(amp, device):
            total = len(loader.dataset) if hasattr(loader, "dataset") else None
            batches = track(loader, total, desc, size=lambda b: len(b[1]))
            for x, y, _ in batches:
                x = x.to(device, non_blocking=non_blocking)
                if channels_last:
                    x = x.contiguous(memory_format=torch.channels_last)
                tokens = model.forward_features(x)
                h = model.forward_head(tokens, pre_logits=True)
                z = head(h)
                pre_tokens = captured.pop("pre", tokens)
                pre = model.forward_head(pre_tokens, pre_logits=True)
                out["logits"].append(z.float().cpu())
                out["features"].append(h.float().cpu())
                out["prenorm"].append(pre.float().cpu())
                out["labels"].append(y)
    finally:
        if hook is not None:
            hook.remove()
    arrays = {k: torch.cat(v).numpy() for k, v in out.items()}
    for k in ("logits", "features"):
        bad = ~np.isfinite(arrays[k]).all(axis=1)
        if bad.any():
            raise FloatingPointError(
                f"{int(bad.sum())} images have non-finite {k} (first at row {int(np.argmax(bad))})"
            )
    return arrays


def head_parameters(model) -> dict:
    """The cache's head keys (weight [C, D], bias, type, temperature, clip)."""
    head = model.get_classifier()
    w = head.weight.detach().float().cpu().numpy()
    if hasattr(head, "temperature"):
        params = {"head_type": "cosine", "head_temperature": float(head.temperature)}
        if getattr(head, "feature_clip", None) is not None:
            params["head_feature_clip"] = float(head.feature_clip)
        return {"head_weight": w, "head_bias": None, **params}
    bias = None if head.bias is None else head.bias.detach().float().cpu().numpy()
    return {"head_weight": w, "head_bias": bias, "head_type": "linear"}


def extract(
    test_model: Path,
    bench: dict,
    data_dir: Path,
    split: str,
    view: str,
    out: Path,
    batch_size: int = BATCH_SIZE,
    workers: int = 0,
    threads: int = 1,
    device: str = "auto",
    amp: str = "none",
    channels_last: bool = False,
    pin_memory: bool | None = None,
    shard: int = 0,
    num_shards: int = 1,
):

    from sure_ood import numerics
    from sure_ood.cache import FeatureCache, save_cache
    from sure_ood.inference import open_test_loader

    numerics.configure_torch(threads)  # portable: 1 thread, pinned kernels
    t = open_test_loader(
        test_model,
        bench,
        data_dir,
        split,
        view,
        batch_size,
        workers,
        device,
        shard,
        num_shards,
        pin_memory,
    )
    model, loader, device, where = t.model, t.loader, t.device, t.where
    from sure_ood.distributed import check_precision

    check_precision(amp, device, "compute.amp")
    try:
        arrays = forward_cache(
            model, loader, device, amp=amp, channels_last=channels_last, desc=f"extract {where}"
        )
    except FloatingPointError as e:
        raise FloatingPointError(f"{test_model} on {where}: {e}") from e
    cache = FeatureCache(
        logits=arrays["logits"],
        features=arrays["features"],
        labels=arrays["labels"].astype(np.int64),
        prenorm_features=arrays["prenorm"],
        source=str(out),
        **head_parameters(model),
    )
    save_cache(out, cache)
    return cache


def run(args: argparse.Namespace) -> int:
    """Extract each split into its own cache; one process for several splits saves the
    start-up (importing torch and timm) of one job per split."""
    if len(args.split) != len(args.out):
        from sure_ood.io import InputError

        raise InputError(f"--split names {len(args.split)} splits but --out {len(args.out)} files")
    compute = Compute.from_args(args)
    for split, out in zip(args.split, args.out, strict=True):
        cache = extract(
            args.test_model,
            json.loads(args.benchmark),
            args.data_dir,
            split,
            args.view,
            out,
            args.batch_size,
            compute.workers,
            args.threads,
            args.device,
            amp=compute.amp,
            channels_last=compute.channels_last,
            pin_memory=compute.pin,
            shard=args.shard,
            num_shards=args.num_shards,
        )
        print(f"{out}: {len(cache)} images, {cache.num_classes} classes")
    return 0
