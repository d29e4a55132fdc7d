"""What a training run is, and everything built before its first step.

:class:`TrainingJob` is the run as the ``train`` stage receives it (config subtrees, seed,
folders and compute settings). :func:`build_run` turns it into a :class:`Run`: devices and
precision, seeds, the model (:func:`sure_ood.models.initial_model`), the training and
validation data, the data-parallel and autocast wrapping, the optimizer (SAM over SGD/AdamW),
the cosine and SWA schedulers, the loss and the CRL history, and the state folder named by
the run's fingerprint. The order of these steps is part of the result (each consumes random
numbers in turn), so keep it.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sure_ood import distributed as ddp
from sure_ood.defaults import with_defaults
from sure_ood.io import InputError, file_digest
from sure_ood.training.state import STATE_NAME

VAL_BATCH_SIZE = 256


@dataclass(frozen=True)
class TrainingJob:
    """One run (model x recipe x seed) and how to compute it.

    ``bench``, ``model_cfg`` and ``recipe`` are the config's subtrees; ``data_dir`` the
    prepare_data folder; ``state_dir`` the folder of resumable states (one subfolder per run
    fingerprint); ``init_path`` initial weights overriding ``recipe.init``'s file. GPU options
    (no effect on the CPU): ``amp`` (autocast dtype or ``tf32``), ``channels_last``;
    ``workers`` / ``pin_memory`` (None = on CUDA) configure the loaders.
    ``stop_after_epoch`` ends the job after that epoch, state saved (to test resuming).
    Keys ``model_cfg`` or ``recipe`` lack take the schema's defaults (a hand-written recipe gets
    what the workflow's validated config holds)."""

    bench: dict
    model_cfg: dict
    recipe: dict
    seed: int
    data_dir: Path
    state_dir: Path
    init_path: str | None = None
    threads: int = 1
    device: str = "auto"
    stop_after_epoch: int | None = None
    amp: str = "none"
    channels_last: bool = False
    workers: int = 0
    pin_memory: bool | None = None

    def __post_init__(self):
        object.__setattr__(self, "model_cfg", with_defaults("model", self.model_cfg))
        object.__setattr__(self, "recipe", with_defaults("recipe", self.recipe))


@dataclass
class Run:
    """A run ready for its first (or next) epoch."""

    job: TrainingJob
    dist: ddp.DistInfo
    device: str
    amp_dtype: torch.dtype | None
    channels_last: bool
    pin_memory: bool
    spec: dict
    model: torch.nn.Module
    train_fwd: torch.nn.Module  # what a step calls: DDP and/or autocast around ``model``
    grad_weights: ddp.GlobalMeanGradients | None
    train_ds: Any
    val_loader: Any
    loader_kw: dict
    optimizer: torch.optim.Optimizer
    cosine: torch.optim.lr_scheduler.LRScheduler
    swa_start: int | None
    swa_model: torch.optim.swa_utils.AveragedModel | None
    swa_sched: torch.optim.swa_utils.SWALR | None
    criterion: torch.nn.Module
    history: Any  # tricks.crl.CorrectnessHistory
    epochs: int
    fingerprint: str
    state_dir: Path  # this run's folder: ``job.state_dir / fingerprint``

    @property
    def state_path(self) -> Path:
        return self.state_dir / STATE_NAME

    @property
    def select(self) -> str:
        return self.job.recipe["select"]

    def swa_active(self, epoch: int) -> bool:
        """Whether epoch ``epoch`` ends with an SWA update (``epoch > swa_start_epoch``)."""
        return self.swa_model is not None and epoch > self.swa_start


def build_run(job: TrainingJob) -> Run:
    """Everything before the first step, in the order that fixes the random streams."""
    from sure_ood import numerics
    from sure_ood.data import TRAIN_SPLITS, read_split_manifests, split_identity
    from sure_ood.models import initial_model, model_spec

    numerics.configure_torch(job.threads)  # portable: 1 thread, pinned kernels
    dist = ddp.setup(job.device)
    device = dist.device
    ddp.check_precision(job.amp, device, "compute.amp")
    amp_dtype = ddp.amp_dtype(job.amp, device, training=True)
    channels_last = ddp.use_channels_last(job.channels_last, device)
    pin_memory = device.startswith("cuda") if job.pin_memory is None else job.pin_memory
    recipe = job.recipe
    seed_everything(job.seed)
    classes = json.loads((job.data_dir / "classes.json").read_text())
    manifest = read_split_manifests(job.data_dir, TRAIN_SPLITS)
    spec = model_spec(job.model_cfg, classes["num_classes"], recipe)
    model, file_init = initial_model(spec, recipe.get("init"), job.init_path)
    model.to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    if dist.enabled and dist.rank > 0:
        # same initial weights on every process (DDP also broadcasts them), then each process
        # its own stream for augmentation and dropout; rank 0 keeps the single-process stream
        seed_everything(job.seed + 7919 * dist.rank)
    loader_kw = {"num_workers": int(job.workers), "pin_memory": bool(pin_memory)}
    if job.workers > 0:
        loader_kw["persistent_workers"] = False
    train_ds, val_loader = _datasets(job, model, spec, manifest, dist, loader_kw)
    train_fwd, grad_weights = _step_module(model, dist, device, amp_dtype)

    optimizer = make_optimizer(model.parameters(), recipe)
    epochs = num_epochs(recipe)
    cosine = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, epochs))
    swa_start = recipe.get("swa_start_epoch")
    swa_model = swa_sched = None
    if swa_start is not None:
        from sure_ood.tricks.swa import make_swa

        swa_model, swa_sched = make_swa(
            model, optimizer, recipe["swa_lr"], recipe["swa_anneal_epochs"]
        )
    criterion = torch.nn.CrossEntropyLoss(label_smoothing=recipe["label_smoothing"])
    history = _history_class(recipe, dist)(len(train_ds))

    # The state folder is keyed by everything that defines the run, so an edited recipe
    # starts afresh instead of resuming a different run (and the old state is kept).
    # The images are part of it through their content (not their folder): moving the data
    # resumes, different training images start afresh.
    data_id = split_identity(manifest, TRAIN_SPLITS)
    fingerprint = run_fingerprint(job.bench, job.model_cfg, recipe, job.seed, file_init, data_id)
    state_dir = job.state_dir / fingerprint
    state_dir.mkdir(parents=True, exist_ok=True)
    return Run(
        job=job,
        dist=dist,
        device=device,
        amp_dtype=amp_dtype,
        channels_last=channels_last,
        pin_memory=pin_memory,
        spec=spec,
        model=model,
        train_fwd=train_fwd,
        grad_weights=grad_weights,
        train_ds=train_ds,
        val_loader=val_loader,
        loader_kw=loader_kw,
        optimizer=optimizer,
        cosine=cosine,
        swa_start=swa_start,
        swa_model=swa_model,
        swa_sched=swa_sched,
        criterion=criterion,
        history=history,
        epochs=epochs,
        fingerprint=fingerprint,
        state_dir=state_dir,
    )


def seed_everything(seed: int) -> None:
    """Seed python's, numpy's and torch's global streams."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def num_epochs(recipe: dict) -> int:
    """Epochs actually trained: SSB-OSR's loop runs ``epochs + 1``
    (docs/method.md#learning-rate-schedule). Keys the recipe lacks take the schema's defaults."""
    recipe = with_defaults("recipe", recipe)
    return int(recipe["epochs"]) + (1 if recipe["extra_final_epoch"] else 0)


def make_optimizer(params, recipe: dict) -> torch.optim.Optimizer:
    """SGD (momentum) or AdamW with the recipe's lr and weight decay, wrapped in SAM
    (:class:`sure_ood.tricks.sam.SAM`, ASAM if ``sam_adaptive``) when ``sam_rho > 0``. Keys the
    recipe lacks take the schema's defaults."""
    recipe = with_defaults("recipe", recipe)
    name = recipe["optimizer"]
    if name == "sgd":
        base, kw = (
            torch.optim.SGD,
            {
                "lr": recipe["lr"],
                "momentum": recipe["momentum"],
                "weight_decay": recipe.get("weight_decay", 0.0),
            },
        )
    elif name == "adamw":
        base, kw = (
            torch.optim.AdamW,
            {
                "lr": recipe["lr"],
                "weight_decay": recipe.get("weight_decay", 0.0),
            },
        )
    else:
        raise InputError(f"recipe.optimizer: unknown optimizer {name!r} (sgd | adamw)")
    rho = float(recipe.get("sam_rho", 0.0))
    if rho > 0:
        from sure_ood.tricks.sam import SAM

        return SAM(params, base, rho=rho, adaptive=bool(recipe["sam_adaptive"]), **kw)
    return base(params, **kw)


def _datasets(job: TrainingJob, model, spec: dict, manifest, dist, loader_kw: dict):
    """``(training dataset, validation loader)``: the recipe's augmentation for training
    (per-sample streams for ``reference``), the test view for validation, sharded over the
    processes under data parallelism. Normalisation from the config, else the model's timm
    ``pretrained_cfg``."""
    from torch.utils.data import DataLoader, Subset

    from sure_ood.data import (
        PerSampleRandomness,
        make_transform,
        open_split,
        resolve_transform_config,
    )

    tcfg = resolve_transform_config(job.bench, model)
    norm = tcfg.pop("norm")
    aug = job.recipe["augmentation"]
    train_tf = make_transform("center", spec["img_size"], norm, train=True, augmentation=aug)
    val_tf = make_transform("center", spec["img_size"], norm, **tcfg)
    train_ds = open_split(job.bench, manifest, "train", train_tf)
    if aug == "reference":
        train_ds = PerSampleRandomness(train_ds, job.seed)
    val_ds = open_split(job.bench, manifest, "val", val_tf)
    if dist.enabled:
        val_ds = Subset(val_ds, list(ddp.shard_indices(len(val_ds), dist)))
    return train_ds, DataLoader(val_ds, batch_size=VAL_BATCH_SIZE, shuffle=False, **loader_kw)


def _step_module(model, dist, device: str, amp_dtype):
    """The module the training step calls, and the DDP gradient weighting (or None).

    Under data parallelism, DDP (gradients all-reduced in every backward, so SAM's norm is of
    the averaged gradient, weighted to the global-batch mean by
    :class:`sure_ood.distributed.GlobalMeanGradients`); with ``amp``, autocast around it.
    The weights stay ``model``'s."""
    fwd, grad_weights = model, None
    if dist.enabled:
        from torch.nn.parallel import DistributedDataParallel

        dev_ids = [dist.local_rank] if device.startswith("cuda") else None
        fwd = DistributedDataParallel(model, device_ids=dev_ids)
        grad_weights = ddp.GlobalMeanGradients(dist.world_size)
        grad_weights.register(fwd)
    if amp_dtype is not None:
        fwd = ddp.AutocastForward(fwd, device, amp_dtype)
    return fwd, grad_weights


def _history_class(recipe: dict, dist):
    """CRL's correctness history; under data parallelism with CRL on, one that gathers every
    process's updates (CRL ranks pairs by per-sample history: every process keeps all of it)."""
    from sure_ood.tricks.crl import CorrectnessHistory

    if dist.enabled and recipe.get("crl_weight", 0.0) > 0:
        return ddp.gather_history_updates(CorrectnessHistory)
    return CorrectnessHistory


def run_fingerprint(bench, model_cfg, recipe, seed, init_file, data_id: str = "") -> str:
    """Short hash of everything that defines a run: the benchmark's identity keys (never the
    data's location), model, recipe, seed, the training images' digest, the init file's
    bytes and the training code. A partial model or recipe is the run of its schema defaults
    (the fingerprint of the :class:`TrainingJob` built from it)."""
    import hashlib

    from sure_ood.code_version import code_version
    from sure_ood.data import benchmark_identity

    ident = benchmark_identity(bench, "train")
    model_cfg, recipe = with_defaults("model", model_cfg), with_defaults("recipe", recipe)
    h = hashlib.sha256(json.dumps([ident, model_cfg, recipe, seed], sort_keys=True).encode())
    if data_id:
        h.update(data_id.encode())
    if init_file:
        h.update(file_digest(init_file).encode())
    # the training code too: a state written by other code is another run, never resumed
    h.update(code_version("train").encode())
    return h.hexdigest()[:12]
