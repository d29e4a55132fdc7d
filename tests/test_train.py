"""The training loop and SWA finalization against independent references.

SWA started at epoch 0 averages every epoch's weights: the finalized model must equal the mean
of the per-epoch snapshots (docs/method.md#swa, w_SWA(e) = mean_{k<=e} w_k). Without SWA the
final model is the last one; with ``select: best_val`` it is the best epoch on the validation split.
"""

from __future__ import annotations

import json

import pytest
import torch

from sure_ood.io import load_state_dict
from sure_ood.stages.finalize_swa import finalize
from sure_ood.stages.prepare_data import prepare
from sure_ood.stages.train import train
from sure_ood.training.setup import TrainingJob

BENCH = {
    "name": "digits_osr",
    "source": "sklearn_digits",
    "known_classes": [0, 1, 2, 3, 4, 5],
    "unknown_classes": [6, 7, 8, 9],
    "split": {"train": 0.6, "val": 0.1, "id_test": 0.3},
    "ood_fraction": 0.5,
    "seed": 0,
    "normalization": {"mean": [0.3], "std": [0.35]},
}
MODEL = {
    "arch": "deit3_small_patch16_224",
    "img_size": 8,
    "in_chans": 1,
    "timm_kwargs": {"patch_size": 4, "depth": 1, "embed_dim": 16, "num_heads": 2, "init_values": 0},
}
SURE = {
    "epochs": 2,
    "batch_size": 64,
    "optimizer": "sgd",
    "lr": 0.05,
    "momentum": 0.9,
    "weight_decay": 0.0005,
    "label_smoothing": 0.1,
    "head": "cosine",
    "cos_temperature": 8.0,
    "mixup_weight": 0.2,
    "mixup_beta": 10.0,
    "crl_weight": 1.0,
    "sam_rho": 0.05,
    "swa_start_epoch": 0,
    "swa_lr": 0.01,
    "swa_anneal_epochs": 2,
}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("data")
    prepare(BENCH, d)
    return d


def _state(run_dir):
    (path,) = run_dir.glob("state/*/state.pt")
    return torch.load(path, weights_only=True)


def _train(tmp, data_dir, recipe, **kw):
    job = TrainingJob(BENCH, MODEL, recipe, 0, data_dir, tmp / "state", **kw)
    return train(job, tmp / "log.jsonl", summary_path=tmp / "run.json")


def test_swa_final_weights_are_the_mean_of_the_epoch_snapshots(tmp_path, data_dir):
    _train(tmp_path, data_dir, SURE, stop_after_epoch=1)
    w1 = {k: v.clone() for k, v in _state(tmp_path)["model"].items()}
    _train(tmp_path, data_dir, SURE)  # resumes, trains epoch 2
    w2 = _state(tmp_path)["model"]
    which = finalize(tmp_path / "run.json", tmp_path / "final.safetensors")
    assert which == "swa"
    final = load_state_dict(tmp_path / "final.safetensors")
    for k, v in final.items():
        if v.is_floating_point() and k in w1:
            torch.testing.assert_close(v, (w1[k] + w2[k]) / 2, rtol=1e-5, atol=1e-6)
    log = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log] == [1, 2] and all(r["swa"] for r in log)
    # SWALR: epoch 1 at lr0, then the cosine anneal towards swa_lr
    # (docs/method.md#learning-rate-schedule)
    assert log[0]["lr"] == pytest.approx(0.05) and log[1]["lr"] == pytest.approx(0.03)


def test_without_swa_the_final_model_is_the_last(tmp_path, data_dir):
    recipe = {**SURE, "swa_start_epoch": None, "sam_rho": 0.0, "mixup_weight": 0.0}
    _train(tmp_path, data_dir, recipe)
    assert finalize(tmp_path / "run.json", tmp_path / "final.safetensors") == "last"
    final = load_state_dict(tmp_path / "final.safetensors")
    for k, v in _state(tmp_path)["model"].items():
        torch.testing.assert_close(final[k], v)


def test_best_val_selection_keeps_the_best_validation_epoch(tmp_path, data_dir):
    recipe = {**SURE, "epochs": 3, "select": "best_val"}
    _train(tmp_path, data_dir, recipe)
    log = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    best = max(log, key=lambda r: r["val_acc"])  # first of equal bests, as the loop keeps
    assert finalize(tmp_path / "run.json", tmp_path / "f.safetensors").startswith("best_val")
    summary = json.loads((tmp_path / "run.json").read_text())
    assert summary["best_epoch"] == best["epoch"]
    assert summary["best_val_acc"] == pytest.approx(best["val_acc"])


def test_an_edited_recipe_does_not_resume_the_old_state(tmp_path, data_dir):
    _train(tmp_path, data_dir, SURE, stop_after_epoch=1)
    _train(tmp_path, data_dir, {**SURE, "lr": 0.02}, stop_after_epoch=1)
    states = sorted(tmp_path.glob("state/*/state.pt"))
    assert len(states) == 2, "the edited recipe must start afresh and keep the old state"


def test_editing_a_score_never_retrains(tmp_path):
    """Training's code version (a params trigger and part of the run fingerprint) covers the
    code training runs, not the score registry: editing a method must not rerun training."""
    import shutil
    from pathlib import Path

    import sure_ood
    from sure_ood.code_version import code_version

    pkg = Path(sure_ood.__file__).parent
    shutil.copytree(pkg, tmp_path / "sure_ood", ignore=shutil.ignore_patterns("__pycache__"))
    before = {s: code_version(s, root=tmp_path) for s in ("train", "score")}
    msp = tmp_path / "sure_ood/scores/msp.py"
    msp.write_text(msp.read_text() + "\nEDITED = 1\n")
    from sure_ood import code_version as cv

    cv._CODE_VERSIONS.clear()
    cv._MODULES.clear()
    assert code_version("train", root=tmp_path) == before["train"]
    assert code_version("score", root=tmp_path) != before["score"]


def test_zero_epochs_keep_the_initial_weights(tmp_path, data_dir):
    """``epochs: 0`` (a pretrained baseline): no step is taken. The state's model and best
    weights are the seeded initial model, the log holds one epoch-0 record, finalize keeps
    the weights as they are (``last``: SWA never ran) and a rerun trains nothing (it used to
    fail restoring the SWA model the epoch-0 state does not hold)."""
    from sure_ood.models import build_model, model_spec
    from sure_ood.training.setup import seed_everything

    recipe = {"epochs": 0, "batch_size": 64, "lr": 0.05, "swa_start_epoch": 0, "swa_lr": 0.01}
    record = _train(tmp_path, data_dir, recipe)
    seed_everything(0)
    initial = build_model(model_spec(MODEL, 6, recipe)).state_dict()
    state = _state(tmp_path)
    assert state["epoch"] == 0 and "swa_model" not in state and "swa_active" not in state
    for k, v in initial.items():
        torch.testing.assert_close(state["model"][k], v, rtol=0, atol=0)
        torch.testing.assert_close(state["best"]["weights"][k], v, rtol=0, atol=0)
    assert record["epoch"] == 0 and record["lr"] == 0.0 and record["train_loss"] is None
    summary = json.loads((tmp_path / "run.json").read_text())
    assert summary["epochs"] == 0 and summary["best_epoch"] == 0
    assert summary["best_val_acc"] == record["val_acc"] and 0.0 <= record["val_acc"] <= 1.0
    assert finalize(tmp_path / "run.json", tmp_path / "final.safetensors") == "last"
    final = load_state_dict(tmp_path / "final.safetensors")
    for k, v in initial.items():
        torch.testing.assert_close(final[k], v, rtol=0, atol=0)
    assert _train(tmp_path, data_dir, recipe) == record  # resumed: nothing left to train
    assert len((tmp_path / "log.jsonl").read_text().splitlines()) == 1


@pytest.mark.parametrize(
    ("edited", "train_changes", "finalize_changes"),
    [
        ("training/engine.py", True, False),  # the loop: training only
        ("training/state.py", True, True),  # the checkpoint layout: both read it
        ("stages/finalize_swa.py", False, True),
    ],
)
def test_code_versions_of_train_and_finalize_swa(tmp_path, edited, train_changes, finalize_changes):
    """finalize_swa reads states through training/state.py alone, so editing the training loop
    reruns training (a params trigger) but not, by itself, finalize_swa."""
    import shutil
    from pathlib import Path

    import sure_ood
    from sure_ood import code_version as cv

    pkg = Path(sure_ood.__file__).parent
    versions = []
    for name, edit in (("base", False), ("new", True)):
        root = tmp_path / name
        shutil.copytree(pkg, root / "sure_ood", ignore=shutil.ignore_patterns("__pycache__"))
        if edit:
            f = root / "sure_ood" / edited
            f.write_text(f.read_text() + "\nEDITED = 1\n")
        versions.append({s: cv.code_version(s, root=root) for s in ("train", "finalize_swa")})
    assert (versions[0]["train"] != versions[1]["train"]) is train_changes
    assert (versions[0]["finalize_swa"] != versions[1]["finalize_swa"]) is finalize_changes
