"""The training loop of one run, in the recipe's order (docs/method.md#recipe).

Per epoch: SURE steps over the shuffled training split (:func:`engine.train_epoch`), then the
schedule (SWA average + SWALR once SWA is active, else the cosine step), then the validation
accuracy of the model that would be kept (the SWA average where active), then the state is
saved. A run with zero epochs keeps its initial weights (e.g. a pretrained baseline).
Under ``torchrun`` with several processes it trains data-parallel (:mod:`sure_ood.distributed`):
``recipe.batch_size`` stays the global batch.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

from sure_ood import distributed as ddp
from sure_ood.training.engine import end_epoch, evaluate_accuracy, train_epoch, validate
from sure_ood.training.setup import Run, TrainingJob, build_run
from sure_ood.training.state import Progress, commit, resume, snapshot


@dataclass
class Outcome:
    """How a training job ended: the last log record, whether every epoch is trained (False
    when it stopped after ``stop_after_epoch``) and the run's state on this process."""

    record: dict
    finished: bool
    run: Run
    progress: Progress


def train(job: TrainingJob) -> Outcome:
    """Train (or resume) one run; the state is saved after every epoch."""
    run = build_run(job)
    progress = resume(run)
    record: dict = {}
    if run.epochs == 0 and not progress.resumed:
        record = _keep_initial_weights(run, progress)
    for epoch in range(progress.epoch + 1, run.epochs + 1):
        t0 = time.perf_counter()
        stats, loader = train_epoch(run, epoch)
        model = end_epoch(run, epoch, loader)  # the SWA average once it is active
        val_acc = validate(run, model)
        progress.keep_if_best(val_acc, epoch, model)
        record = {
            "epoch": epoch,
            **stats,
            "val_acc": val_acc,
            "swa": run.swa_active(epoch),
            "seconds": round(time.perf_counter() - t0, 3),
        }
        progress.epoch = epoch
        if run.dist.is_main:
            print(json.dumps(record), flush=True)
            progress.records.append(json.dumps(record))
        commit(run, progress)
        if job.stop_after_epoch is not None and epoch >= job.stop_after_epoch:
            if run.dist.is_main:
                print(f"stopping after epoch {epoch} as asked")
            ddp.cleanup(run.dist)
            return Outcome(record, False, run, progress)
    ddp.cleanup(run.dist)
    if run.dist.is_main and progress.records:
        record = json.loads(progress.records[-1])
    return Outcome(record, True, run, progress)


def _keep_initial_weights(run: Run, progress: Progress) -> dict:
    """Zero epochs: record the initial weights' validation accuracy and save them as the
    run's state (they are the last and the best model). Evaluated without autocast."""
    val_acc = evaluate_accuracy(run.model, run.val_loader, run.device, run.dist)
    record = {
        "epoch": 0,
        "lr": 0.0,
        "train_loss": None,
        "train_acc": None,
        "val_acc": val_acc,
        "swa": False,
        "seconds": 0.0,
    }
    progress.records.append(json.dumps(record))
    progress.best = {"val_acc": val_acc, "epoch": 0, "weights": snapshot(run.model)}
    commit(run, progress)
    return record
