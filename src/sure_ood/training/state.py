"""A run's checkpoint (``state.pt``): built in one place, restored in one place.

Written atomically after every epoch, in a folder outside the rule's declared outputs, so a
killed or requeued job resumes where it stopped and ends with the same weights as an
uninterrupted run (on the CPU). It holds everything the next epoch depends on: the weights,
the optimizer, the cosine and SWA schedulers, the SWA average, the CRL history, every random
stream (python, numpy, torch, CUDA; one set per process under data parallelism), the epoch,
the best validation epoch's weights and the log lines so far. ``finalize_swa`` reads the final
weights out of it (:func:`final_weights`).

Tensors and plain containers only, so it loads with ``weights_only=True``: a crafted pickle
never runs. The random states are saved and restored on the CPU, wherever the run trains.
``run`` below is a :class:`sure_ood.training.setup.Run` (not imported: ``finalize_swa`` reads
states through this module, and its code version should not cover the training loop).
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import distributed as dist

from sure_ood.io import InputError, atomic_path, write_text

STATE_NAME = "state.pt"
LOG_NAME = "train_log.jsonl"


@dataclass
class Progress:
    """Where a run stands: the last finished epoch, the best validation epoch so far
    (``{"val_acc", "epoch", "weights"}``) and the log lines (JSON), kept in the state so
    that a kill never loses one."""

    epoch: int = 0
    best: dict = field(default_factory=lambda: {"val_acc": -1.0, "epoch": 0, "weights": None})
    records: list[str] = field(default_factory=list)
    resumed: bool = False

    def keep_if_best(self, val_acc: float, epoch: int, model) -> None:
        """Remember ``model``'s weights if ``val_acc`` beats every earlier epoch (the first
        of equal bests is kept)."""
        if val_acc > self.best["val_acc"]:
            self.best = {"val_acc": val_acc, "epoch": epoch, "weights": snapshot(model)}


def snapshot(model) -> dict:
    """A copy of ``model``'s weights that later steps do not change."""
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def rng_state(device: str = "cpu") -> dict:
    """This process's random streams: torch's, numpy's, python's and (on CUDA) the device's."""
    np_state = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy_keys": torch.from_numpy(np_state[1].astype(np.int64)),
        "numpy_pos": int(np_state[2]),
        "python": list(random.getstate()[1]),
    }
    if device.startswith("cuda"):
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _cpu_bytes(t):
    """A saved RNG state as the CPU ByteTensor ``torch.set_rng_state`` demands, wherever its
    tensor was loaded (e.g. a GPU after ``map_location="cuda"``)."""
    return t.detach().to(device="cpu", dtype=torch.uint8)


def set_rng_state(s: dict) -> None:
    """Restore the RNG states saved by :func:`rng_state`, whatever device the state's tensors
    were loaded onto: torch's and CUDA's as CPU ByteTensors, numpy's key through the CPU;
    CUDA's only where CUDA is available (a GPU run resumed on a CPU-only node skips it)."""
    torch.set_rng_state(_cpu_bytes(s["torch"]))
    keys = s["numpy_keys"].detach().cpu().numpy().astype(np.uint32)
    np.random.set_state(("MT19937", keys, int(s["numpy_pos"]), 0, 0.0))
    random.setstate((3, tuple(int(v) for v in s["python"]), None))
    if "cuda" in s and torch.cuda.is_available():
        torch.cuda.set_rng_state(_cpu_bytes(s["cuda"]), torch.cuda.current_device())


def load_training_state(path: Path) -> dict:
    """Read a ``state.pt`` onto the CPU, never onto the training device.

    The RNG states must reach ``torch.set_rng_state`` as CPU ByteTensors and numpy's key goes
    through ``.numpy()``: both fail on tensors mapped to a GPU. The weights and optimizer
    state are copied onto the model's device by ``load_state_dict`` (torch's optimizer casts
    each state tensor to its parameter's device). Tensors and plain containers only: a
    crafted pickle never runs."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - every loader error becomes one clear message
        raise InputError(
            f"{path}: unreadable training state ({type(e).__name__}: {e}); "
            "delete it to restart the run from scratch"
        ) from e


def restore_training_state(
    s: dict, model, optimizer, cosine, history, swa=None, dist_info=None
) -> None:
    """Put a loaded state back into the run's objects, on the model's device: weights,
    optimizer (moved to its parameters' device by torch), schedulers, SWA, CRL history and
    this process's RNG states (its own under data parallelism)."""
    model.load_state_dict(s["model"])
    optimizer.load_state_dict(s["optimizer"])
    cosine.load_state_dict(s["cosine"])
    if swa is not None and swa[0] is not None and "swa_model" in s:  # none at epoch 0
        swa[0].load_state_dict(s["swa_model"])
        swa[1].load_state_dict(s["swa_sched"])
    history.load_state_dict(s["crl"])
    rank_states = s.get("rng_ranks")
    enabled = dist_info is not None and dist_info.enabled
    if enabled and rank_states and len(rank_states) == dist_info.world_size:
        set_rng_state(rank_states[dist_info.rank])
    else:
        set_rng_state(s["rng"])


def resume(run) -> Progress:
    """Restore the run from its state folder if a state is there; else start afresh (and
    drop a stale log copy). Returns where the run stands."""
    if run.state_path.exists():
        s = load_training_state(run.state_path)
        restore_training_state(
            s,
            run.model,
            run.optimizer,
            run.cosine,
            run.history,
            (run.swa_model, run.swa_sched),
            run.dist,
        )
        print(f"resuming from {run.state_path} after epoch {s['epoch']}")
        return Progress(int(s["epoch"]), s["best"], list(s.get("log", [])), resumed=True)
    if run.dist.is_main:
        (run.state_dir / LOG_NAME).unlink(missing_ok=True)
    return Progress()


def commit(run, progress: Progress) -> None:
    """Save the run's state after epoch ``progress.epoch`` (process 0 writes it) and its log
    copy beside it; every process waits until it is written."""
    rng = rng_state(run.device)
    rank_states = None
    if run.dist.enabled and progress.epoch > 0:
        rank_states = [None] * run.dist.world_size
        dist.all_gather_object(rank_states, rng)
    if run.dist.is_main:
        with atomic_path(run.state_path) as tmp:
            torch.save(checkpoint(run, progress, rng, rank_states), tmp)
        write_text(run.state_dir / LOG_NAME, "".join(r + "\n" for r in progress.records))
    if run.dist.enabled:
        dist.barrier()


def checkpoint(run, progress: Progress, rng: dict, rank_states=None) -> dict:
    """The state of ``run`` after epoch ``progress.epoch``: the one place it is built.

    After a trained epoch: the model's weights, SWA's average and scheduler (when SWA is on)
    and every process's streams (``rng_ranks``, under data parallelism). At epoch 0 (a
    zero-epoch run keeps its initial weights) the model is the best weights themselves and
    there is nothing else to resume. Key order is part of the file's bytes: keep it."""
    trained = progress.epoch > 0
    state: dict[str, Any] = {
        "epoch": progress.epoch,
        "model": run.model.state_dict() if trained else progress.best["weights"],
        "optimizer": run.optimizer.state_dict(),
        "cosine": run.cosine.state_dict(),
        "crl": run.history.state_dict(),
        "rng": rng,
        "best": progress.best,
        "spec": json.dumps(run.spec),
        "select": run.select,
        "log": progress.records,
    }
    if trained and run.swa_model is not None:
        state["swa_model"] = run.swa_model.state_dict()
        state["swa_sched"] = run.swa_sched.state_dict()
        state["swa_active"] = run.swa_active(progress.epoch)
    if rank_states is not None:
        state["rng_ranks"] = rank_states
    return state


def final_weights(state: dict) -> tuple[dict, str]:
    """The weights a finished run keeps, and a word saying which: the best validation
    epoch's with ``select: best_val``, else the SWA average where SWA was active (its
    ``module.`` entries, without ``n_averaged``), else the last model
    (docs/method.md#swa)."""
    if state.get("select") == "best_val":
        return state["best"]["weights"], f"best_val (epoch {state['best']['epoch']})"
    if state.get("swa_active"):
        prefix = "module."
        weights = {
            k[len(prefix) :]: v for k, v in state["swa_model"].items() if k.startswith(prefix)
        }
        return weights, "swa"
    return state["model"], "last"
