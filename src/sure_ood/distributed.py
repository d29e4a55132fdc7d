"""Multi-GPU data parallel training with ``torch.distributed`` (launched by ``torchrun``).

One training job runs ``torchrun --standalone --nproc_per_node=N -m sure_ood train ...`` when
its rule has ``resources: gpu > 1``; each process reads ``RANK``/``WORLD_SIZE``/``LOCAL_RANK``
from the environment. Backend: NCCL on GPUs, gloo on the CPU (used by the tests).

Semantics (docs/method.md#sam, #fine-tuning-hyper-parameters): the recipe's ``batch_size``
is the GLOBAL batch. Every process draws the same per-epoch permutation and takes its slice of each
global batch, so N processes see exactly the batches of one process; DDP averages the gradients
(all-reduce) in every
backward, so SAM's perturbation norm is taken on the all-reduced gradient, as in SSB-OSR.
A communication hook weights each process's gradient by its share of the global batch, so
slices of unequal size (an epoch's last batch) still give the global-batch mean. Without
per-process randomness (RegMixup permutations and augmentations are drawn per process), the
result equals one process with the same global batch, up to floating-point reduction order.

AMP (``bf16`` | ``fp16``) and channels-last apply on CUDA only; on the CPU they do nothing.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

import torch

from sure_ood.io import InputError

# Precisions (config `compute.amp`, `compute.odin.amp`): none = float32 (the reference's;
# SSB-OSR has no autocast), bf16 / fp16 = autocast, tf32 = float32 tensors with TF32 matmuls
# and convolutions (Ampere and newer).
AMP_DTYPES = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16, "tf32": None}


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: str = "cpu"

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup(device: str = "auto") -> DistInfo:
    """Initialise the process group from torchrun's environment (a no-op for one process)."""
    from sure_ood.models import resolve_device

    dev = resolve_device(device)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo(device=dev)
    import torch.distributed as dist

    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if dev.startswith("cuda"):
        if torch.cuda.device_count() <= local:
            raise InputError(
                f"process {rank}: LOCAL_RANK {local} but only {torch.cuda.device_count()} GPUs"
            )
        torch.cuda.set_device(local)
        dev, backend = f"cuda:{local}", "nccl"
    else:
        backend = "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend)
    return DistInfo(rank, world, local, dev)


def cleanup(info: DistInfo) -> None:
    if info.enabled:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()


def barrier(info: DistInfo) -> None:
    if info.enabled:
        import torch.distributed as dist

        dist.barrier()


def all_reduce_sum(values: list[float], info: DistInfo) -> list[float]:
    """Sum a few numbers over the processes (float64)."""
    if not info.enabled:
        return list(values)
    import torch.distributed as dist

    t = torch.tensor(values, dtype=torch.float64, device=info.device)
    dist.all_reduce(t)
    return t.cpu().tolist()


class GlobalBatchSampler:
    """The batches of ``DataLoader(shuffle=True, batch_size=B, generator=g)``, sliced per rank.

    Draws ``torch.randperm(n, generator=g)`` exactly as torch's ``RandomSampler`` does (and the
    extra permutation it draws when exhausted), cuts it into global batches of ``B`` and yields
    the ``rank``-th of ``world_size`` near-equal contiguous slices of each. A last global batch
    smaller than ``world_size`` is dropped (a process would get no image).
    """

    def __init__(
        self, n: int, batch_size: int, rank: int, world_size: int, generator: torch.Generator
    ) -> None:
        self.n, self.batch_size = int(n), int(batch_size)
        self.rank, self.world_size = int(rank), int(world_size)
        self.generator = generator

    def _global_batches(self, perm: list[int]) -> list[list[int]]:
        b = self.batch_size
        batches = [perm[i : i + b] for i in range(0, self.n, b)]
        if batches and len(batches[-1]) < self.world_size:
            batches.pop()
        return batches

    def _slice(self, batch: list[int]) -> list[int]:
        q, r = divmod(len(batch), self.world_size)
        start = self.rank * q + min(self.rank, r)
        return batch[start : start + q + (1 if self.rank < r else 0)]

    def __iter__(self):
        perm = torch.randperm(self.n, generator=self.generator).tolist()
        batches = self._global_batches(perm)
        full_last = self.n % self.batch_size == 0
        for k, batch in enumerate(batches):
            if k == len(batches) - 1 and not full_last:
                torch.randperm(self.n, generator=self.generator)  # RandomSampler's tail draw
            yield self._slice(batch)
        if full_last:
            torch.randperm(self.n, generator=self.generator)

    def __len__(self) -> int:
        return len(self._global_batches(list(range(self.n))))


def rank_worker_init(rank: int, worker_id: int) -> None:
    """DataLoader ``worker_init_fn`` under data parallelism: reseed the worker's python,
    numpy and torch streams from its torch seed (base seed + worker id, the same on every
    rank, since the base seed comes from the shared order generator) and the ``rank``, so
    each (rank, worker) pair draws its own augmentations, reproducibly."""
    import random

    import numpy as np

    from sure_ood.data import stream_seed

    s = stream_seed(torch.initial_seed() % 2**63, rank, worker_id)
    random.seed(s)
    np.random.seed(s % 2**32)
    torch.manual_seed(s)


class GlobalMeanGradients:
    """A DDP communication hook state: gradients become the mean over the GLOBAL batch even
    when the processes' slices differ in size (the last batch of an epoch).

    DDP averages the per-process mean gradients; weighting process r's by
    ``n_r * world / N`` before that average gives ``sum_r n_r g_r / N``. Set ``factor`` with
    :meth:`set_batch` before each step (both SAM passes use it).
    """

    def __init__(self, world_size: int) -> None:
        self.world_size = world_size
        self.factor = 1.0

    def set_batch(self, local_n: int, global_n: int) -> None:
        self.factor = local_n * self.world_size / global_n

    def register(self, ddp_model) -> None:
        ddp_model.register_comm_hook(self, _weighted_mean_hook)


def _weighted_mean_hook(state: GlobalMeanGradients, bucket):
    import torch.distributed as dist

    buf = bucket.buffer()
    buf.mul_(state.factor / state.world_size)
    fut = dist.all_reduce(buf, async_op=True).get_future()
    return fut.then(lambda f: f.value()[0])


def global_batch_size(step: int, n: int, batch_size: int) -> int:
    """Images in global batch ``step`` (1-based) of an epoch over ``n`` images."""
    return min(batch_size, n - (step - 1) * batch_size)


def shard_indices(n: int, info: DistInfo) -> range:
    """The contiguous part of ``range(n)`` a process evaluates."""
    q, r = divmod(n, info.world_size)
    start = info.rank * q + min(info.rank, r)
    return range(start, start + q + (1 if info.rank < r else 0))


def gather_history_updates(history_cls):
    """A subclass of a CRL ``CorrectnessHistory`` whose ``update`` first gathers the
    ``(indices, correct)`` of every process, so every process keeps the full history."""

    class Gathered(history_cls):
        def update(self, indices, correct):  # noqa: D401
            import torch.distributed as dist

            local = (indices.reshape(-1).cpu().long(), correct.reshape(-1).cpu().double())
            parts = [None] * dist.get_world_size()
            dist.all_gather_object(parts, local)
            super().update(torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts]))

    Gathered.__name__ = f"Gathered{history_cls.__name__}"
    return Gathered


class AutocastForward(torch.nn.Module):
    """Runs ``module`` under ``torch.autocast`` and returns float32 outputs (the loss, SAM's
    norm and the optimizer step stay in float32). Parameters are the wrapped module's."""

    def __init__(self, module: torch.nn.Module, device: str, dtype: torch.dtype) -> None:
        super().__init__()
        self.module = module
        self.device_type = torch.device(device).type
        self.dtype = dtype

    def forward(self, x):
        with torch.autocast(device_type=self.device_type, dtype=self.dtype):
            out = self.module(x)
        return out.float()


def check_precision(amp: str, device: str, key: str = "compute.amp") -> None:
    """Fail at start-up, naming the config ``key``, when ``device`` cannot run ``amp``
    (bf16 without bf16 support, TF32 before compute capability 8.0); then switch TF32 on
    when asked. The CPU ignores every precision setting (it runs float32)."""
    if amp not in AMP_DTYPES:
        raise InputError(f"{key}: {amp!r} is not one of {sorted(AMP_DTYPES)}")
    if not device.startswith("cuda"):
        return
    name = torch.cuda.get_device_name(device)
    if amp == "bf16" and not torch.cuda.is_bf16_supported():
        raise InputError(f"{key}: bf16 is not supported by {name}; use none or fp16")
    if amp == "tf32":
        major, _ = torch.cuda.get_device_capability(device)
        if major < 8:
            raise InputError(f"{key}: tf32 needs compute capability 8.0+, {name} has {major}.x")
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True


def amp_dtype(amp: str, device: str, training: bool = False) -> torch.dtype | None:
    """The autocast dtype of an ``amp`` setting on ``device`` (None = full precision)."""
    if amp not in AMP_DTYPES:
        raise InputError(f"amp: {amp!r} is not one of {sorted(AMP_DTYPES)}")
    if not device.startswith("cuda"):
        return None
    if training and amp == "fp16":
        raise InputError(
            "amp: fp16 training needs loss scaling, which the SAM step does not do; use bf16"
        )
    return AMP_DTYPES[amp]


def autocast(amp: str, device: str):
    """A context manager: autocast on CUDA when ``amp`` is set, else nothing."""
    dtype = amp_dtype(amp, device)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type="cuda", dtype=dtype)


def use_channels_last(flag: bool, device: str) -> bool:
    return bool(flag) and device.startswith("cuda")
