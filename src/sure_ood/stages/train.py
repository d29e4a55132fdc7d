"""Stage ``train``: one run (model x recipe x seed), resumable after every epoch.

Reads the run from the command line, trains it with :func:`sure_ood.training.loop.train` (the
recipe's tricks from :mod:`sure_ood.tricks`: cosine head, RegMixup, CRL, SAM over SGD/AdamW,
SWA with SWALR; the *baseline* recipe is plain cross-entropy with SGD), and writes the
training log and the run summary that ``finalize_swa`` reads. The resumable state lives in
``--state-dir``, outside the rule's declared outputs (:mod:`sure_ood.training.state`).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from sure_ood.io import write_json, write_text
from sure_ood.settings import Compute


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--benchmark", required=True, help="benchmark config subtree (JSON)")
    p.add_argument("--model", required=True, help="model config subtree (JSON)")
    p.add_argument("--recipe", required=True, help="recipe config subtree (JSON)")
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--data-dir", required=True, type=Path, help="prepare_data output folder")
    p.add_argument("--init", default=None, help="initial weights file (overrides recipe.init)")
    p.add_argument("--state-dir", required=True, type=Path, help="resumable state folder")
    p.add_argument("--log", required=True, type=Path, help="training log (JSON lines) output")
    p.add_argument("--summary", required=True, type=Path, help="run summary (JSON) output")
    # the workflow passes every setting (defaults: the config schema), so none is restated here
    p.add_argument("--threads", type=int, required=True)
    p.add_argument("--device", required=True)
    Compute.add_arguments(p)  # --amp, --workers, --pin-memory, --channels-last
    p.add_argument("--stop-after-epoch", type=int, default=None, help=argparse.SUPPRESS)


def train(job, log_path: Path, summary_path: Path | None = None) -> dict:
    """Train (or resume) the run of ``job`` (a :class:`sure_ood.training.setup.TrainingJob`);
    once every epoch is trained, process 0 writes the log (JSON lines) and the summary.
    Returns the last log record."""
    from sure_ood.training.loop import train as train_run

    outcome = train_run(job)
    run, progress = outcome.run, outcome.progress
    if not outcome.finished or not run.dist.is_main:
        return outcome.record
    write_text(log_path, "".join(r + "\n" for r in progress.records))
    if summary_path is not None:
        write_json(
            summary_path,
            {
                "state": str(run.state_path),
                "fingerprint": run.fingerprint,
                "epochs": int(progress.epoch),
                "final": outcome.record or None,
                "best_epoch": int(progress.best["epoch"]),
                "best_val_acc": float(progress.best["val_acc"]),
                "select": run.select,
            },
        )
    return outcome.record


def run(args: argparse.Namespace) -> int:
    from sure_ood.training.setup import TrainingJob

    compute = Compute.from_args(args)
    job = TrainingJob(
        json.loads(args.benchmark),
        json.loads(args.model),
        json.loads(args.recipe),
        args.seed,
        args.data_dir,
        args.state_dir,
        init_path=args.init,
        threads=args.threads,
        device=args.device,
        stop_after_epoch=args.stop_after_epoch,
        amp=compute.amp,
        channels_last=compute.channels_last,
        workers=compute.workers,
        pin_memory=compute.pin,
    )
    rec = train(job, args.log, summary_path=args.summary)
    if args.stop_after_epoch is not None:
        return 3  # stopped early on purpose: the declared output is not written
    print(f"done: {json.dumps(rec)}")
    return 0
