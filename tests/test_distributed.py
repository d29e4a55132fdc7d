"""Data-parallel training on the CPU (gloo, 2 processes via torchrun) equals one process with
the same global batch; the per-rank batch slicing; AMP / channels-last are CPU no-ops."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader

from sure_ood.distributed import DistInfo, GlobalBatchSampler, amp_dtype, shard_indices
from sure_ood.io import InputError

BIN = Path(sys.executable).parent


@pytest.mark.parametrize(("n", "batch"), [(100, 32), (96, 32), (50, 7)])
def test_global_batches_are_torch_shuffle_batches_sliced_per_rank(n, batch):
    ds = list(range(n))
    g_ref, g1 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    ref, got = [], []
    # the generator is shared with the training step (RegMixup draws): its state must follow
    # torch's own shuffling exactly, batch by batch
    for b in DataLoader(ds, batch_size=batch, shuffle=True, generator=g_ref):
        ref.append((b.tolist(), torch.rand(1, generator=g_ref).item()))
    sampler = GlobalBatchSampler(n, batch, 0, 1, g1)
    for b in DataLoader(ds, batch_sampler=sampler, generator=g1):
        got.append((b.tolist(), torch.rand(1, generator=g1).item()))
    assert got == ref and len(sampler) == len(ref)
    # two ranks: their slices, concatenated, are the global batches
    per_rank = []
    for r in (0, 1):
        g = torch.Generator().manual_seed(3)
        loader = DataLoader(ds, batch_sampler=GlobalBatchSampler(n, batch, r, 2, g), generator=g)
        per_rank.append([b.tolist() for b in loader])
    glued = [a + b for a, b in zip(*per_rank, strict=True)]
    assert glued == [b for b, _ in ref if len(b) >= 2]


def test_validation_shards_cover_the_split_once():
    parts = [list(shard_indices(11, DistInfo(r, 3, r, "cpu"))) for r in range(3)]
    assert sum(parts, []) == list(range(11))


def test_amp_and_channels_last_do_nothing_on_cpu():
    from sure_ood.distributed import use_channels_last

    assert amp_dtype("bf16", "cpu", training=True) is None
    assert amp_dtype("fp16", "cpu") is None and not use_channels_last(True, "cpu")
    assert amp_dtype("bf16", "cuda:0", training=True) == torch.bfloat16
    with pytest.raises(InputError, match="bf16"):
        amp_dtype("fp16", "cuda", training=True)


BENCH = {
    "name": "digits_osr",
    "source": "sklearn_digits",
    "known_classes": [0, 1, 2, 3, 4, 5],
    "unknown_classes": [6, 7, 8, 9],
    "split": {"train": 0.6, "val": 0.1, "id_test": 0.3},
    "ood_fraction": 0.5,
    "seed": 0,
    "normalization": {"mean": [0.3], "std": [0.35]},
    "test_transform": {"crop_ratio": 1.0, "interpolation": "bilinear"},
}
MODEL = {
    "arch": "deit3_small_patch16_224",
    "img_size": 8,
    "in_chans": 1,
    "timm_kwargs": {"patch_size": 4, "depth": 1, "embed_dim": 32, "num_heads": 2, "init_values": 0},
}


@pytest.fixture(scope="module")
def digits_data(tmp_path_factory):
    from sure_ood.stages.prepare_data import prepare

    out = tmp_path_factory.mktemp("digits")
    prepare(BENCH, out)
    return out


def _train(data_dir: Path, work: Path, recipe: dict, nproc: int) -> dict:
    args = [
        "train",
        "--benchmark", json.dumps(BENCH),
        "--model", json.dumps(MODEL),
        "--recipe", json.dumps(recipe),
        "--seed", "0",
        "--data-dir", str(data_dir),
        "--state-dir", str(work / "state"),
        "--log", str(work / "log.jsonl"),
        "--summary", str(work / "run.json"),
        "--device", "cpu",
        "--threads", "1", "--amp", "none", "--workers", "0", "--pin-memory", "auto",
    ]  # fmt: skip
    if nproc == 1:
        cmd = [str(BIN / "sure-ood"), *args]
    else:
        cmd = [
            str(BIN / "torchrun"),
            "--standalone",
            "--nnodes=1",
            f"--nproc_per_node={nproc}",
            "-m",
            "sure_ood",
            "--",  # what the rule runs: torchrun must not parse the stage's options
            *args,
        ]
    env = dict(os.environ, OMP_NUM_THREADS="1", PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}")
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-5000:]
    summary = json.loads((work / "run.json").read_text())
    state = torch.load(summary["state"], map_location="cpu", weights_only=True)
    log = [json.loads(line) for line in (work / "log.jsonl").read_text().splitlines()]
    return {"state": state, "log": log}


@pytest.mark.parametrize(
    "recipe",
    [
        # plain SGD, 2 epochs
        {"epochs": 2, "batch_size": 32, "optimizer": "sgd", "lr": 0.05, "momentum": 0.9},
        # SAM: the perturbation uses the norm of the all-reduced (global-batch) gradient
        {
            "epochs": 1,
            "batch_size": 32,
            "optimizer": "sgd",
            "lr": 0.05,
            "momentum": 0.9,
            "weight_decay": 0.005,
            "sam_rho": 0.05,
            "swa_start_epoch": 0,
            "swa_lr": 0.01,
        },
    ],
    ids=["sgd", "sam_swa"],
)
def test_two_gloo_processes_equal_one_process(digits_data, tmp_path, recipe):
    one = _train(digits_data, tmp_path / "one", recipe, 1)
    two = _train(digits_data, tmp_path / "two", recipe, 2)
    # 649 training images: 20 global batches of 32 (16 + 16) and one of 9 (5 + 4), whose
    # unequal halves the gradient hook weights back to the global-batch mean
    for key in ("model", "swa_model"):
        if key not in one["state"]:
            continue
        a, b = one["state"][key], two["state"][key]
        assert a.keys() == b.keys()
        for k in a:
            torch.testing.assert_close(b[k], a[k], rtol=1e-4, atol=1e-5, msg=f"{key}.{k}")
    # the logged epoch statistics are global (summed over processes), not one process's
    for ra, rb in zip(one["log"], two["log"], strict=True):
        assert rb["train_acc"] == pytest.approx(ra["train_acc"], abs=1e-6)
        assert rb["train_loss"] == pytest.approx(ra["train_loss"], rel=1e-4)
        assert rb["val_acc"] == pytest.approx(ra["val_acc"], abs=1e-6)
    # every process resumes from its own RNG state
    assert len(two["state"]["rng_ranks"]) == 2
