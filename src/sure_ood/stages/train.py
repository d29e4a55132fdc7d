"""Stage ``train``: one run (model x recipe x seed), resumable after every epoch.

The loop composes the training tricks of ``sure_ood.tricks`` as the recipe switches them on
(docs/method.md#recipe): cosine head, RegMixup, CRL, SAM over SGD/AdamW, SWA with SWALR. The
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
import time
from pathlib import Path

import numpy as np

from sure_ood.io import InputError, atomic_path, file_digest, write_json, write_text

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
    # the workflow passes every setting (defaults: the config schema), so none is restated here
    p.add_argument("--threads", type=int, required=True)
    p.add_argument("--device", required=True)
    p.add_argument(
        "--amp",
        required=True,
        choices=("none", "bf16", "fp16", "tf32"),
        help="precision on CUDA: autocast dtype, or tf32 matmuls (no effect on the CPU)",
    )
    p.add_argument("--channels-last", action="store_true", help="channels-last memory (CUDA)")
    p.add_argument("--workers", type=int, required=True, help="DataLoader worker processes")
    p.add_argument("--pin-memory", required=True, choices=("auto", "true", "false"))
    p.add_argument("--stop-after-epoch", type=int, default=None, help=argparse.SUPPRESS)


def seed_everything(seed: int) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _rng_state(device: str = "cpu") -> dict:
    import torch

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
    import torch

    return t.detach().to(device="cpu", dtype=torch.uint8)


def _set_rng_state(s: dict) -> None:
    """Restore the RNG states saved by :func:`_rng_state`, whatever device the state's tensors
    were loaded onto: torch's and CUDA's as CPU ByteTensors, numpy's key through the CPU;
    CUDA's only where CUDA is available (a GPU run resumed on a CPU-only node skips it)."""
    import torch

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
    import torch

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
    if swa is not None and swa[0] is not None:
        swa[0].load_state_dict(s["swa_model"])
        swa[1].load_state_dict(s["swa_sched"])
    history.load_state_dict(s["crl"])
    rank_states = s.get("rng_ranks")
    enabled = dist_info is not None and dist_info.enabled
    if enabled and rank_states and len(rank_states) == dist_info.world_size:
        _set_rng_state(rank_states[dist_info.rank])
    else:
        _set_rng_state(s["rng"])


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
    """Epochs actually trained: SSB-OSR's loop runs ``epochs + 1``
    (docs/method.md#learning-rate-schedule)."""
    return int(recipe["epochs"]) + (1 if recipe.get("extra_final_epoch", False) else 0)


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
    import torch

    correct = total = 0
    with _eval_mode(model), torch.no_grad():
        for x, y, _ in loader:
            pred = model(x.to(device)).argmax(1).cpu()
            correct += int((pred == y).sum())
            total += int(y.numel())
    if dist_info is not None and dist_info.enabled:
        from sure_ood.distributed import all_reduce_sum

        correct, total = all_reduce_sum([correct, total], dist_info)
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
    amp: str = "none",
    channels_last: bool = False,
    workers: int = 0,
    pin_memory: bool | None = None,
) -> dict:
    """Train (or resume) one run; returns the final log record.

    GPU options (no effect on the CPU): ``amp`` (bf16 autocast of the forward passes),
    ``channels_last``; ``workers`` / ``pin_memory`` (None = on CUDA) configure the loaders.
    Started by ``torchrun`` with several processes, trains data-parallel
    (``sure_ood.distributed``): ``recipe.batch_size`` stays the global batch."""
    import torch
    from torch.utils.data import DataLoader

    from sure_ood import distributed as ddp
    from sure_ood import numerics
    from sure_ood.data import (
        TRAIN_SPLITS,
        PerSampleRandomness,
        make_transform,
        open_split,
        read_manifest,
        resolve_transform_config,
        split_identity,
    )
    from sure_ood.models import build_model, load_init, model_spec
    from sure_ood.progress import track
    from sure_ood.tricks.crl import CorrectnessHistory as _CorrectnessHistory
    from sure_ood.tricks.sure_step import sure_step
    from sure_ood.tricks.swa import make_swa, maybe_update_bn

    numerics.configure_torch(threads)  # portable: 1 thread, pinned kernels
    dist_info = ddp.setup(device)
    device = dist_info.device
    ddp.check_precision(amp, device, "compute.amp")
    amp_dtype = ddp.amp_dtype(amp, device, training=True)
    channels_last = ddp.use_channels_last(channels_last, device)
    if pin_memory is None:
        pin_memory = device.startswith("cuda")
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
    if channels_last:
        model.to(memory_format=torch.channels_last)
    if dist_info.enabled and dist_info.rank > 0:
        # same initial weights on every process (DDP also broadcasts them), then each process
        # its own stream for augmentation and dropout; rank 0 keeps the single-process stream
        seed_everything(seed + 7919 * dist_info.rank)

    tcfg = resolve_transform_config(bench, model)
    norm = tcfg.pop("norm")
    aug = recipe.get("augmentation", "none")
    train_tf = make_transform("center", spec["img_size"], norm, train=True, augmentation=aug)
    val_tf = make_transform("center", spec["img_size"], norm, **tcfg)
    train_ds = open_split(bench, manifest, "train", train_tf)
    if aug == "reference":
        train_ds = PerSampleRandomness(train_ds, seed)
    val_ds = open_split(bench, manifest, "val", val_tf)
    if dist_info.enabled:
        from torch.utils.data import Subset

        val_ds = Subset(val_ds, list(ddp.shard_indices(len(val_ds), dist_info)))
    loader_kw = {"num_workers": int(workers), "pin_memory": bool(pin_memory)}
    if workers > 0:
        loader_kw["persistent_workers"] = False
    val_loader = DataLoader(val_ds, batch_size=256, shuffle=False, **loader_kw)

    # the module the training step calls: DDP (gradients all-reduced in every backward, so
    # SAM's norm is of the averaged gradient) and/or autocast; weights stay ``model``'s
    train_fwd = model
    if dist_info.enabled:
        from torch.nn.parallel import DistributedDataParallel

        dev_ids = [dist_info.local_rank] if device.startswith("cuda") else None
        train_fwd = DistributedDataParallel(model, device_ids=dev_ids)
        grad_weights = ddp.GlobalMeanGradients(dist_info.world_size)
        grad_weights.register(train_fwd)
    if amp_dtype is not None:
        train_fwd = ddp.AutocastForward(train_fwd, device, amp_dtype)

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
    if dist_info.enabled and recipe.get("crl_weight", 0.0) > 0:
        # CRL ranks pairs by per-sample history: every process keeps all of it
        CorrectnessHistory = ddp.gather_history_updates(_CorrectnessHistory)  # noqa: N806
    else:
        CorrectnessHistory = _CorrectnessHistory  # noqa: N806
    history = CorrectnessHistory(len(train_ds))

    # The state folder is keyed by everything that defines the run, so an edited recipe
    # starts afresh instead of resuming a different run (and the old state is kept).
    # The images are part of it through their content (not their folder): moving the data
    # resumes, different training images start afresh.
    data_id = split_identity(manifest, TRAIN_SPLITS)
    fingerprint = run_fingerprint(bench, model_cfg, recipe, seed, file_init, data_id)
    state_dir = state_dir / fingerprint
    state_dir.mkdir(parents=True, exist_ok=True)
    state_path = state_dir / STATE_NAME
    state_log = state_dir / LOG_NAME
    start_epoch, best = 1, {"val_acc": -1.0, "epoch": 0, "weights": None}
    records: list[str] = []  # the log lines, kept in the state: a kill never loses one
    if state_path.exists():
        s = load_training_state(state_path)
        restore_training_state(
            s, model, optimizer, cosine, history, (swa_model, swa_sched), dist_info
        )
        best = s["best"]
        records = list(s.get("log", []))
        start_epoch = int(s["epoch"]) + 1
        print(f"resuming from {state_path} after epoch {s['epoch']}")
    elif dist_info.is_main:
        state_log.unlink(missing_ok=True)

    record: dict = {}
    if epochs == 0 and not state_path.exists():
        # a zero-epoch run: the initial weights as they are (e.g. the pretrained baseline)
        val_acc = evaluate_accuracy(model, val_loader, device, dist_info)
        record = {
            "epoch": 0,
            "lr": 0.0,
            "train_loss": None,
            "train_acc": None,
            "val_acc": val_acc,
            "swa": False,
            "seconds": 0.0,
        }
        records.append(json.dumps(record))
        weights = {k: v.detach().clone() for k, v in model.state_dict().items()}
        if dist_info.is_main:
            with atomic_path(state_path) as tmp:
                torch.save(
                    {
                        "epoch": 0,
                        "model": weights,
                        "optimizer": optimizer.state_dict(),
                        "cosine": cosine.state_dict(),
                        "crl": history.state_dict(),
                        "rng": _rng_state(device),
                        "best": {"val_acc": val_acc, "epoch": 0, "weights": weights},
                        "spec": json.dumps(spec),
                        "select": recipe.get("select", "last"),
                        "log": records,
                    },
                    tmp,
                )
            write_text(state_log, "".join(r + "\n" for r in records))
        ddp.barrier(dist_info)
    for epoch in range(start_epoch, epochs + 1):
        t0 = time.perf_counter()
        loader, _, mix_gen = epoch_loader(
            train_ds, recipe["batch_size"], seed, epoch, dist_info, loader_kw
        )
        train_fwd.train()
        lr = optimizer.param_groups[0]["lr"]
        tot_loss = tot_correct = tot_n = 0
        bar = track(
            loader, len(loader), f"epoch {epoch}/{epochs}", "steps", enabled=dist_info.is_main
        )
        for step, (x, y, idx) in enumerate(bar, 1):
            x, y = x.to(device, non_blocking=pin_memory), y.to(device, non_blocking=pin_memory)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            if dist_info.enabled:
                grad_weights.set_batch(
                    int(y.numel()),
                    ddp.global_batch_size(step, len(train_ds), recipe["batch_size"]),
                )
            try:
                out = sure_step(
                    train_fwd,
                    x,
                    y,
                    idx,
                    criterion,
                    optimizer,
                    mixup_weight=recipe.get("mixup_weight", 0.0),
                    mixup_beta=recipe.get("mixup_beta", 10.0),
                    crl_weight=recipe.get("crl_weight", 0.0),
                    crl_history=history,
                    generator=mix_gen,
                )
            except FloatingPointError as e:
                raise FloatingPointError(
                    f"non-finite loss at epoch {epoch}, step {step}: {e}"
                ) from e
            n = int(y.numel())
            tot_loss += out["loss"] * n
            tot_correct += int((out["clean_logits"].argmax(1) == y).sum())
            tot_n += n
        if dist_info.enabled:
            tot_loss, tot_correct, tot_n = ddp.all_reduce_sum(
                [tot_loss, tot_correct, tot_n], dist_info
            )
        history.end_epoch(epoch)
        if swa_model is not None and epoch > swa_start:
            swa_model.update_parameters(model)
            swa_sched.step()
            maybe_update_bn(loader, swa_model)
            eval_model = swa_model.module
        else:
            cosine.step()
            eval_model = model
        eval_fwd = eval_model
        if amp_dtype is not None:
            eval_fwd = ddp.AutocastForward(eval_model, device, amp_dtype)
        val_acc = evaluate_accuracy(eval_fwd, val_loader, device, dist_info)
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
        rng = _rng_state(device)
        rank_states = None
        if dist_info.enabled:
            import torch.distributed as dist

            rank_states = [None] * dist_info.world_size
            dist.all_gather_object(rank_states, rng)
        if not dist_info.is_main:
            ddp.barrier(dist_info)  # wait until process 0 has saved the epoch
            if stop_after_epoch is not None and epoch >= stop_after_epoch:
                ddp.cleanup(dist_info)
                return record
            continue
        print(json.dumps(record), flush=True)
        records.append(json.dumps(record))
        state = {
            "epoch": epoch,
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "cosine": cosine.state_dict(),
            "crl": history.state_dict(),
            "rng": rng,
            "best": best,
            "spec": json.dumps(spec),
            "select": recipe.get("select", "last"),
            "log": records,
        }
        if swa_model is not None:
            state["swa_model"] = swa_model.state_dict()
            state["swa_sched"] = swa_sched.state_dict()
            state["swa_active"] = epoch > swa_start
        if rank_states is not None:
            state["rng_ranks"] = rank_states
        with atomic_path(state_path) as tmp:
            torch.save(state, tmp)
        write_text(state_log, "".join(r + "\n" for r in records))
        ddp.barrier(dist_info)
        if stop_after_epoch is not None and epoch >= stop_after_epoch:
            print(f"stopping after epoch {epoch} as asked")
            ddp.cleanup(dist_info)
            return record
    ddp.cleanup(dist_info)
    if not dist_info.is_main:
        return record
    write_text(log_path, "".join(r + "\n" for r in records))
    record = json.loads(records[-1]) if records else record
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
    import functools

    import torch
    from torch.utils.data import DataLoader

    from sure_ood import distributed as ddp
    from sure_ood.data import stream_seed

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


def run_fingerprint(bench, model_cfg, recipe, seed, init_file, data_id: str = "") -> str:
    """Short hash of everything that defines a run: the benchmark's identity keys (never the
    data's location), model, recipe, seed, the training images' digest, the init file's
    bytes and the training code."""
    import hashlib

    from sure_ood.code_version import code_version
    from sure_ood.data import benchmark_identity

    ident = benchmark_identity(bench, "train")
    h = hashlib.sha256(json.dumps([ident, model_cfg, recipe, seed], sort_keys=True).encode())
    if data_id:
        h.update(data_id.encode())
    if init_file:
        h.update(file_digest(init_file).encode())
    # the training code too: a state written by other code is another run, never resumed
    h.update(code_version("train").encode())
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
        amp=args.amp,
        channels_last=args.channels_last,
        workers=args.workers,
        pin_memory={"auto": None, "true": True, "false": False}[args.pin_memory],
    )
    if args.stop_after_epoch is not None:
        return 3  # stopped early on purpose: the declared output is not written
    print(f"done: {json.dumps(rec)}")
    return 0
