"""Stage ``finalize_swa``: turn a run's training state into its final weights.

The final model is the SWA average (``torch.optim.swa_utils.AveragedModel``) when SWA was
active, else the last model; with ``select: best_val`` it is instead the model (SWA average
where active) of the epoch with the best accuracy on the *validation split of the known
classes*, never a test split. Written as safetensors with the model spec in its metadata.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from sure_ood.io import InputError, read_json


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--summary", required=True, type=Path, help="run.json written by train")
    p.add_argument("--out", required=True, type=Path, help="final weights (.safetensors)")


def finalize(summary_path: Path, out: Path) -> str:
    """Write the final weights of the run ``summary_path`` describes; returns which they are
    (:func:`sure_ood.training.state.final_weights`)."""
    from sure_ood.models import build_model, save_model
    from sure_ood.training.state import final_weights, load_training_state

    summary = read_json(summary_path)
    state_path = Path(summary["state"])
    if not state_path.exists():
        raise InputError(f"{summary_path}: its training state {state_path} does not exist")
    state = load_training_state(state_path)
    spec = json.loads(state["spec"])
    weights, which = final_weights(state)
    model = build_model(spec)
    model.load_state_dict(weights, strict=True)
    save_model(out, model, spec, {"weights": which, "epochs": summary["epochs"]})
    return which


def run(args: argparse.Namespace) -> int:
    which = finalize(args.summary, args.out)
    print(f"{args.out}: {which} weights")
    return 0
