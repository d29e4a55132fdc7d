"""Stage ``odin``: ODIN scores, the one method that needs the network (Liang et al. 2018).

Per batch, one backward pass to the input with frozen weights (``scores.odin.odin_scores``):
x~ = x - eps * sign(grad_x CE(z(x) / T, argmax z)), score = max softmax(z(x~) / T). The output
is the split's feature cache with the per-image ``odin_score`` added, so ``odin`` and
``rw_odin`` (RW+ODIN, Jiang et al. 2023, which also reads the clean logits) score it like any
other cache.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from sure_ood.inference import BATCH_SIZE
from sure_ood.io import InputError
from sure_ood.settings import OdinCompute, OdinSettings


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--test-model", required=True, type=Path)
    p.add_argument("--features", required=True, type=Path, help="the split's feature cache")
    p.add_argument("--benchmark", required=True, help="benchmark config subtree (JSON)")
    p.add_argument("--data-dir", required=True, type=Path)
    p.add_argument("--split", required=True)
    # the workflow passes every setting (its defaults live in the config schema and in
    # sure_ood.config.odin_params), so a hand run names them too and scores as the workflow
    p.add_argument("--view", required=True)
    OdinSettings.add_arguments(p)  # --temperature, --epsilon, --std-scaled
    OdinCompute.add_arguments(p)  # --amp, --workers, --batch-size, --pin-memory
    p.add_argument("--threads", type=int, required=True)
    p.add_argument("--device", required=True)
    p.add_argument("--out", required=True, type=Path)


def odin(
    test_model: Path,
    features: Path,
    bench: dict,
    data_dir: Path,
    split: str,
    view: str,
    temperature: float,
    epsilon: float,
    std_scaled: bool,
    out: Path,
    batch_size: int = BATCH_SIZE,
    threads: int = 1,
    device: str = "auto",
    workers: int = 0,
    amp: str = "none",
    pin_memory: bool | None = None,
) -> np.ndarray:
    """ODIN scores of one split and view, added to its feature cache (written to ``out``).

    ``workers`` / ``pin_memory`` feed the loader; ``amp`` (``compute.odin.amp``) runs the
    forward and the input-gradient backward under bf16 autocast or with TF32 matmuls on CUDA
    (float32 softmax either way); a device that cannot run it fails before any batch."""

    from sure_ood import numerics
    from sure_ood.cache import load_cache, save_cache
    from sure_ood.distributed import autocast, check_precision
    from sure_ood.inference import open_test_loader
    from sure_ood.progress import track
    from sure_ood.scores.odin import ODIN_KEY, odin_scores

    numerics.configure_torch(threads)  # portable: 1 thread, pinned kernels
    cache = load_cache(features)
    t = open_test_loader(
        test_model, bench, data_dir, split, view, batch_size, workers, device,
        pin_memory=pin_memory,
    )  # fmt: skip
    model, loader, device = t.model, t.loader, t.device
    check_precision(amp, device, "compute.odin.amp")
    model.eval().requires_grad_(False)
    std = t.norm.std if std_scaled else None
    parts, labels = [], []
    non_blocking = device.startswith("cuda")
    for x, y, _ in track(loader, len(loader.dataset), f"odin {split}", size=lambda b: len(b[1])):
        x = x.to(device, non_blocking=non_blocking)
        with autocast("bf16" if amp == "bf16" else "none", device):
            parts.append(odin_scores(model, x, temperature, epsilon, std))
        labels.append(y.numpy())
    scores = np.concatenate(parts)
    if not np.array_equal(np.concatenate(labels), cache.labels):
        raise InputError(
            f"{features}: its images are not those of split {split!r} "
            f"(labels differ); re-extract the features"
        )
    cache.extra[ODIN_KEY] = scores
    cache.source = str(out)
    save_cache(out, cache)
    return scores


def run(args: argparse.Namespace) -> int:
    settings, compute = OdinSettings.from_args(args), OdinCompute.from_args(args)
    s = odin(
        args.test_model,
        args.features,
        json.loads(args.benchmark),
        args.data_dir,
        args.split,
        args.view,
        settings.temperature,
        settings.epsilon,
        settings.std_scaled,
        args.out,
        compute.batch_size,
        args.threads,
        args.device,
        compute.workers,
        compute.amp,
        compute.pin,
    )
    print(f"{args.out}: ODIN scores of {len(s)} images (mean {s.mean():.4f})")
    return 0
