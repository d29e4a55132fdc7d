"""The training engine: one epoch of SURE steps, and top-1 accuracy on a labelled loader.

Each step is :func:`sure_ood.tricks.sure_step.sure_step` (pass-1 loss with RegMixup and CRL,
SAM's second pass when ``sam_rho > 0``; the formulas are in :mod:`sure_ood.tricks`), on the
module :class:`~sure_ood.training.setup.Run` wraps for the step (data-parallel and/or
autocast). The epoch's batches come from :func:`epoch_loader`, whose permutation depends on
``(seed, epoch)`` only, so a resumed run draws the batches the uninterrupted run would.
"""

from __future__ import annotations

import contextlib
import functools
from typing import TYPE_CHECKING

import torch
from torch.utils.data import DataLoader

from sure_ood import distributed as ddp
from sure_ood.data import stream_seed
from sure_ood.progress import track
from sure_ood.tricks.sure_step import sure_step
from sure_ood.tricks.swa import maybe_update_bn

if TYPE_CHECKING:
    from sure_ood.training.setup import Run


def train_epoch(run: Run, epoch: int) -> tuple[dict, DataLoader]:
    """Train epoch ``epoch``: ``({"lr", "train_loss", "train_acc"}, the epoch's loader)``.

    Loss and accuracy are of the pass-1 clean logits, averaged over the epoch's images (summed
    over the processes under data parallelism). A non-finite loss stops the run, naming the
    epoch and step."""
    job = run.job
    loader, _, mix_gen = epoch_loader(
        run.train_ds, job.recipe["batch_size"], job.seed, epoch, run.dist, run.loader_kw
    )
    run.train_fwd.train()
    lr = run.optimizer.param_groups[0]["lr"]
    tot_loss = tot_correct = tot_n = 0
    bar = track(
        loader, len(loader), f"epoch {epoch}/{run.epochs}", "steps", enabled=run.dist.is_main
    )
    for step, (x, y, idx) in enumerate(bar, 1):
        x = x.to(run.device, non_blocking=run.pin_memory)
        y = y.to(run.device, non_blocking=run.pin_memory)
        if run.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        if run.grad_weights is not None:
            run.grad_weights.set_batch(
                int(y.numel()),
                ddp.global_batch_size(step, len(run.train_ds), job.recipe["batch_size"]),
            )
        try:
            out = sure_step(
                run.train_fwd,
                x,
                y,
                idx,
                run.criterion,
                run.optimizer,
                mixup_weight=job.recipe.get("mixup_weight", 0.0),
                mixup_beta=job.recipe["mixup_beta"],
                crl_weight=job.recipe.get("crl_weight", 0.0),
                crl_history=run.history,
                generator=mix_gen,
            )
        except FloatingPointError as e:
            raise FloatingPointError(f"non-finite loss at epoch {epoch}, step {step}: {e}") from e
        n = int(y.numel())
        tot_loss += out["loss"] * n
        tot_correct += int((out["clean_logits"].argmax(1) == y).sum())
        tot_n += n
    if run.dist.enabled:
        tot_loss, tot_correct, tot_n = ddp.all_reduce_sum([tot_loss, tot_correct, tot_n], run.dist)
    stats = {
        "lr": lr,
        "train_loss": tot_loss / max(tot_n, 1),
        "train_acc": tot_correct / max(tot_n, 1),
    }
    return stats, loader


def end_epoch(run: Run, epoch: int, loader) -> torch.nn.Module:
    """Close epoch ``epoch`` and return the model to validate: the CRL history's epoch count
    moves on; once SWA is active (``epoch > swa_start_epoch``) the average takes the epoch's
    weights and SWALR steps, else the cosine schedule steps
    (docs/method.md#learning-rate-schedule, :mod:`sure_ood.tricks.swa`)."""
    run.history.end_epoch(epoch)
    if run.swa_active(epoch):
        run.swa_model.update_parameters(run.model)
        run.swa_sched.step()
        maybe_update_bn(loader, run.swa_model)
        return run.swa_model.module
    run.cosine.step()
    return run.model


def validate(run: Run, model: torch.nn.Module) -> float:
    """Top-1 accuracy of ``model`` on the validation split, under the run's autocast."""
    if run.amp_dtype is not None:
        model = ddp.AutocastForward(model, run.device, run.amp_dtype)
    return evaluate_accuracy(model, run.val_loader, run.device, run.dist)


def epoch_loader(train_ds, batch_size: int, seed: int, epoch: int, dist_info, loader_kw: dict):
    """The training loader of one epoch and its two generators ``(loader, order, mixup)``.

    ``order`` (seeded by ``seed, epoch``; the same on every rank) draws the permutation, so
    the ranks cut one global batch sequence. Augmentation: a :class:`PerSampleRandomness`
    dataset draws from ``(seed, epoch, index)`` alone; the other policies draw from the
    process's stream, and under data parallelism each loader worker is reseeded from its own
    rank too (:func:`sure_ood.distributed.rank_worker_init`), since torch derives the worker
    seeds from ``order``, which is shared. RegMixup's draws: one process uses ``order`` as
    before; rank ``r`` of several its own ``stream_seed(seed, epoch, r, 1)`` generator.
    """
    if hasattr(train_ds, "set_epoch"):
        train_ds.set_epoch(epoch)
    gen = torch.Generator().manual_seed(seed * 100_003 + epoch)
    if not dist_info.enabled:
        loader = DataLoader(
            train_ds,
            batch_size=batch_size,
            shuffle=True,
            generator=gen,
            drop_last=False,
            **loader_kw,
        )
        return loader, gen, gen
    sampler = ddp.GlobalBatchSampler(
        len(train_ds), batch_size, dist_info.rank, dist_info.world_size, gen
    )
    kw = dict(loader_kw)
    if kw.get("num_workers", 0) > 0:
        kw["worker_init_fn"] = functools.partial(ddp.rank_worker_init, dist_info.rank)
    loader = DataLoader(train_ds, batch_sampler=sampler, generator=gen, **kw)
    mix_gen = torch.Generator().manual_seed(stream_seed(seed, epoch, dist_info.rank, 1))
    return loader, gen, mix_gen


@contextlib.contextmanager
def _eval_mode(model):
    was = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was)


def evaluate_accuracy(model, loader, device: str, dist_info=None) -> float:
    """Top-1 accuracy on a labelled loader (validation split of the known classes).

    Under data parallelism each process passes its shard and the counts are summed."""
    correct = total = 0
    with _eval_mode(model), torch.no_grad():
        for x, y, _ in loader:
            pred = model(x.to(device)).argmax(1).cpu()
            correct += int((pred == y).sum())
            total += int(y.numel())
    if dist_info is not None and dist_info.enabled:
        correct, total = ddp.all_reduce_sum([correct, total], dist_info)
    return correct / max(total, 1)
