"""Stage ``train``: one run (model x recipe x seed), resumable after every epoch.

The loop composes the training tricks of ``sure_ood.tricks`` as the recipe switches them on
(spec sections 3-4): cosine head, RegMixup, CRL, SAM over SGD/AdamW, SWA with SWALR. The
*baseline* recipe is plain cross-entropy with SGD.

The full training state (model, optimizer, schedulers, SWA model, CRL history, RNG states,
epoch, best validation weights) is written atomically to ``state.pt`` after every epoch, in a
folder outside the rule's declared outputs, so a killed or requeued job resumes where it
stopped and ends with the same weights as an uninterrupted run (on the CPU).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import shutil
import time
from pathlib import Path

import numpy as np

from sure_ood.io import InputError, atomic_path, file_digest, write_json

STATE_NAME = "state.pt"
LOG_NAME = "train_log.jsonl"


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
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="auto")
    p.add_argument("--stop-after-epoch", type=int, default=None, help=argparse.SUPPRESS)


def seed_everything(seed: int) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _rng_state() -> dict:
    import torch

    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "numpy_keys": torch.from_numpy(np_state[1].astype(np.int64)),
        "numpy_pos": int(np_state[2]),
        "python": list(random.getstate()[1]),
    }


def _set_rng_state(s: dict) -> None:
    import torch

    torch.set_rng_state(s["torch"])
    keys = s["numpy_keys"].numpy().astype(np.uint32)
    np.random.set_state(("MT19937", keys, s["numpy_pos"], 0, 0.0))
    random.setstate((3, tuple(s["python"]), None))


def _make_optimizer(params, recipe: dict):
    import torch

    name = recipe.get("optimizer", "sgd")
    if name == "sgd":
        base, kw = (
            torch.optim.SGD,
            {
                "lr": recipe["lr"],
                "momentum": recipe.get("momentum", 0.9),
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

        return SAM(params, base, rho=rho, adaptive=bool(recipe.get("sam_adaptive", False)), **kw)
    return base(params, **kw)


def num_epochs(recipe: dict) -> int:
    """Epochs actually trained: SSB-OSR's loop runs ``epochs + 1`` (spec 4.2 quirk, a flag)."""
    return int(recipe["epochs"]) + (1 if recipe.get("extra_final_epoch", False) else 0)


@contextlib.contextmanager
def _eval_mode(model):
    was = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was)


def evaluate_accuracy(model, loader, device: str) -> float:
    """Top-1 accuracy on a labelled loader (validation split of the known classes)."""
    import torch

    correct = total = 0
    with _eval_mode(model), torch.no_grad():
        for x, y, _ in loader:
            pred = model(x.to(device)).argmax(1).cpu()
            correct += int((pred == y).sum())
            total += int(y.numel())
    return correct / max(total, 1)


def train(
    bench: dict,
    model_cfg: dict,
    recipe: dict,
    seed: int,
    data_dir: Path,
    state_dir: Path,
    log_path: Path,
    init_path: str | None = None,
    threads: int = 1,
    device: str = "auto",
    stop_after_epoch: int | None = None,
    summary_path: Path | None = None,
) -> dict:
    """Train (or resume) one run; returns the final log record."""
    import torch
    from torch.utils.data import DataLoader
    from tqdm import tqdm

    from sure_ood.data import Normalization, make_transform, open_split, read_manifest
    from sure_ood.models import build_model, load_init, model_spec, resolve_device
    from sure_ood.tricks.crl import CorrectnessHistory
    from sure_ood.tricks.sure_step import sure_step
    from sure_ood.tricks.swa import make_swa, maybe_update_bn

    torch.set_num_threads(max(1, threads))
    device = resolve_device(device)
    seed_everything(seed)
    classes = json.loads((data_dir / "classes.json").read_text())
    manifest = read_manifest(data_dir / "manifest.parquet")
    spec = model_spec(model_cfg, classes["num_classes"], recipe)

    init = recipe.get("init") or "none"
    tag = init.get("timm_tag") if isinstance(init, dict) else None
    tag_file = init.get("file") if isinstance(init, dict) and tag else None
    model = build_model(spec, pretrained_tag=tag, pretrained_file=tag_file)
    file_init = init_path or (init.get("file") if isinstance(init, dict) and not tag else None)
    if file_init:
        load_init(model, file_init)
    model.to(device)

    norm = Normalization(**bench["normalization"])
    aug = recipe.get("augmentation", "none")
    train_tf = make_transform("center", spec["img_size"], norm, train=True, augmentation=aug)
    val_tf = make_transform("center", spec["img_size"], norm, **_test_tf(bench))
    train_ds = open_split(bench, manifest, "train", train_tf)
    val_ds = open_split(bench, manifest, "val", val_tf)
    val_loader = DataLoader(val_ds, batch_size=256, shuffle=False)

    optimizer = _make_optimizer(model.parameters(), recipe)
    epochs = num_epochs(recipe)
    cosine = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, epochs))
    swa_start = recipe.get("swa_start_epoch")
    swa_model = swa_sched = None
    if swa_start is not None:
        swa_model, swa_sched = make_swa(
            model, optimizer, recipe["swa_lr"], recipe.get("swa_anneal_epochs", 10)
        )
    criterion = torch.nn.CrossEntropyLoss(label_smoothing=recipe.get("label_smoothing", 0.0))
    history = CorrectnessHistory(len(train_ds))

    # The state folder is keyed by everything that defines the run, so an edited recipe
    # starts afresh instead of resuming a different run (and the old state is kept).
    fingerprint = run_fingerprint(bench, model_cfg, recipe, seed, file_init)
    state_dir = state_dir / fingerprint
    state_dir.mkdir(parents=True, exist_ok=True)
    state_path = state_dir / STATE_NAME
    state_log = state_dir / LOG_NAME
    start_epoch, best = 1, {"val_acc": -1.0, "epoch": 0, "weights": None}
    if state_path.exists():
        s = torch.load(state_path, map_location=device, weights_only=True)
        model.load_state_dict(s["model"])
        optimizer.load_state_dict(s["optimizer"])
        cosine.load_state_dict(s["cosine"])
        if swa_model is not None:
            swa_model.load_state_dict(s["swa_model"])
            swa_sched.load_state_dict(s["swa_sched"])
        history.load_state_dict(s["crl"])
        _set_rng_state(s["rng"])
        best = s["best"]
        start_epoch = int(s["epoch"]) + 1
        print(f"resuming from {state_path} after epoch {s['epoch']}")
    else:
        state_log.unlink(missing_ok=True)

    record: dict = {}
    for epoch in range(start_epoch, epochs + 1):
        t0 = time.perf_counter()
        gen = torch.Generator().manual_seed(seed * 100_003 + epoch)
        loader = DataLoader(
            train_ds, batch_size=recipe["batch_size"], shuffle=True, generator=gen, drop_last=False
        )
        model.train()
        lr = optimizer.param_groups[0]["lr"]
        tot_loss = tot_correct = tot_n = 0
        bar = tqdm(loader, desc=f"epoch {epoch}/{epochs}", leave=False, mininterval=2.0)
        for step, (x, y, idx) in enumerate(bar, 1):
            x, y = x.to(device), y.to(device)
            try:
                out = sure_step(
                    model,
                    x,
                    y,
                    idx,
                    criterion,
                    optimizer,
                    mixup_weight=recipe.get("mixup_weight", 0.0),
                    mixup_beta=recipe.get("mixup_beta", 10.0),
                    crl_weight=recipe.get("crl_weight", 0.0),
                    crl_history=history,
                    generator=gen,
                )
            except FloatingPointError as e:
                raise FloatingPointError(
                    f"non-finite loss at epoch {epoch}, step {step}: {e}"
                ) from e
            n = int(y.numel())
            tot_loss += out["loss"] * n
            tot_correct += int((out["clean_logits"].argmax(1) == y).sum())
            tot_n += n
        history.end_epoch(epoch)
        if swa_model is not None and epoch > swa_start:
            swa_model.update_parameters(model)
            swa_sched.step()
            maybe_update_bn(loader, swa_model)
            eval_model = swa_model.module
        else:
            cosine.step()
            eval_model = model
        val_acc = evaluate_accuracy(eval_model, val_loader, device)
        if val_acc > best["val_acc"]:
            best = {
                "val_acc": val_acc,
                "epoch": epoch,
                "weights": {k: v.detach().clone() for k, v in eval_model.state_dict().items()},
            }
        record = {
            "epoch": epoch,
            "lr": lr,
            "train_loss": tot_loss / max(tot_n, 1),
            "train_acc": tot_correct / max(tot_n, 1),
            "val_acc": val_acc,
            "swa": bool(swa_model is not None and epoch > swa_start),
            "seconds": round(time.perf_counter() - t0, 3),
        }
        print(json.dumps(record), flush=True)
        state = {
            "epoch": epoch,
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "cosine": cosine.state_dict(),
            "crl": history.state_dict(),
            "rng": _rng_state(),
            "best": best,
            "spec": json.dumps(spec),
            "select": recipe.get("select", "last"),
        }
        if swa_model is not None:
            state["swa_model"] = swa_model.state_dict()
            state["swa_sched"] = swa_sched.state_dict()
            state["swa_active"] = epoch > swa_start
        with atomic_path(state_path) as tmp:
            torch.save(state, tmp)
        with open(state_log, "a") as fh:
            fh.write(json.dumps(record) + "\n")
        if stop_after_epoch is not None and epoch >= stop_after_epoch:
            print(f"stopping after epoch {epoch} as asked")
            return record
    with atomic_path(log_path) as tmp:
        shutil.copyfile(state_log, tmp)
    if summary_path is not None:
        s = torch.load(state_path, map_location="cpu", weights_only=True)
        write_json(
            summary_path,
            {
                "state": str(state_path),
                "fingerprint": fingerprint,
                "epochs": int(s["epoch"]),
                "final": record or None,
                "best_epoch": int(s["best"]["epoch"]),
                "best_val_acc": float(s["best"]["val_acc"]),
                "select": recipe.get("select", "last"),
            },
        )
    return record


def run_fingerprint(bench, model_cfg, recipe, seed, init_file) -> str:
    """Short hash of everything that defines a run (and of the init file's bytes)."""
    import hashlib

    h = hashlib.sha256(json.dumps([bench, model_cfg, recipe, seed], sort_keys=True).encode())
    if init_file:
        h.update(file_digest(init_file).encode())
    return h.hexdigest()[:12]


def _test_tf(bench: dict) -> dict:
    t = bench.get("test_transform", {})
    return {
        "crop_ratio": t.get("crop_ratio", 1.0),
        "interpolation": t.get("interpolation", "bilinear"),
    }


def run(args: argparse.Namespace) -> int:
    rec = train(
        json.loads(args.benchmark),
        json.loads(args.model),
        json.loads(args.recipe),
        args.seed,
        args.data_dir,
        args.state_dir,
        args.log,
        init_path=args.init,
        threads=args.threads,
        device=args.device,
        stop_after_epoch=args.stop_after_epoch,
        summary_path=args.summary,
    )
    if args.stop_after_epoch is not None:
        return 3  # stopped early on purpose: the declared output is not written
    print(f"done: {json.dumps(rec)}")
    return 0
