"""The GPU acceptance checks that `benchmarks/gpu.sh` runs after its throughput part.

1. training on CUDA (NCCL with 2 processes when the machine has 2+ GPUs, else 1 process):
   a run stopped after epoch 1 and killed (SIGKILL) in epoch 2 resumes from its state file
   and ends like an uninterrupted run (same epochs logged, weights within --resume-atol);
2. ODIN's peak GPU memory per image at 480 px (float32 and bf16; eps > 0, which needs the
   input gradient, and eps = 0, the reference's setting, which does not);
3. a tiny end-to-end run of config/imagenet_ssb_tiny.yaml on the GPU (real Snakemake);
4. the merge: every figure (and gpu.sh's throughput JSON) into one file; exit 1 if any check
   failed.

    python benchmarks/gpu_acceptance.py --work DIR --out gpu_acceptance.json [--cpu-smoke]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "tests"))
BIN = Path(sys.executable).parent

BENCH = {
    "name": "gpu_check",
    "source": "imagefolder",
    "ssb_splits": "imagenet_ssb_splits.json",
    "ood_splits": ["ssb_easy"],
    "val_fraction": 0.1,
    "seed": 0,
    "normalization": {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]},
    "test_transform": {"crop_ratio": 0.875, "interpolation": "bilinear"},
}
MODEL = {
    "arch": "deit3_small_patch16_224",
    "img_size": 32,
    "timm_kwargs": {"patch_size": 8, "depth": 2, "embed_dim": 64, "num_heads": 2, "init_values": 0},
}
RECIPE = {  # the SURE recipe's tricks, shortened: SAM + RegMixup + SWA + the timm augmentation
    "epochs": 2, "batch_size": 16, "optimizer": "sgd", "lr": 0.01, "momentum": 0.9,
    "weight_decay": 0.005, "label_smoothing": 0.1, "head": "cosine", "mixup_weight": 0.2,
    "sam_rho": 0.05, "swa_start_epoch": 0, "swa_lr": 0.001, "swa_anneal_epochs": 1,
    "augmentation": "reference",
}  # fmt: skip


def env() -> dict:
    return dict(
        os.environ,
        OMP_NUM_THREADS="2",
        PYTHONPATH=f"{REPO / 'src'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
        PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}",
    )


def train_cmd(
    bench: dict, data_dir: Path, work: Path, device: str, nproc: int, amp: str
) -> list[str]:
    args = [
        "train", "--benchmark", json.dumps(bench), "--model", json.dumps(MODEL),
        "--recipe", json.dumps(RECIPE), "--seed", "0", "--data-dir", str(data_dir),
        "--state-dir", str(work / "state"), "--log", str(work / "log.jsonl"),
        "--summary", str(work / "run.json"), "--device", device, "--amp", amp,
        "--workers", "2", "--threads", "1", "--pin-memory", "auto",
    ]  # fmt: skip
    if nproc > 1:
        return [str(BIN / "torchrun"), "--standalone", "--nnodes=1",
                f"--nproc_per_node={nproc}", "-m", "sure_ood", "--", *args]  # fmt: skip
    return [sys.executable, "-m", "sure_ood", *args]


def check_train_resume(root: Path, smoke: bool, atol: float) -> dict:
    import torch
    from imagefolder_fixture import make_imagefolder

    from sure_ood.stages.prepare_data import prepare

    gpus = 0 if smoke else torch.cuda.device_count()
    nproc = 2 if smoke or gpus >= 2 else 1
    device, amp = ("cpu", "none") if smoke else ("cuda", "bf16")
    bench = dict(BENCH, data_root=str(make_imagefolder(root / "images", n_train=24)))
    data_dir = root / "data"
    prepare(bench, data_dir, 2)
    out = {"processes": nproc, "backend": "gloo" if smoke else "nccl", "device": device}
    t0 = time.perf_counter()
    full = root / "full"
    r = subprocess.run(train_cmd(bench, data_dir, full, device, nproc, amp), env=env(),
                       capture_output=True, text=True, timeout=240)  # fmt: skip
    if r.returncode != 0:
        return {**out, "ok": False, "error": r.stderr[-2000:]}
    # the interrupted run: a clean stop after epoch 1, then a SIGKILL during epoch 2
    cut = root / "cut"
    cmd = train_cmd(bench, data_dir, cut, device, nproc, amp)
    r = subprocess.run([*cmd, "--stop-after-epoch", "1"], env=env(), capture_output=True,
                       text=True, timeout=240)  # fmt: skip
    # the stage exits 3 on a stop on purpose; torchrun reports any non-zero child as 1
    logged = [
        json.loads(x)["epoch"]
        for f in cut.glob("state/*/train_log.jsonl")
        for x in f.read_text().splitlines()
    ]
    if r.returncode not in (1, 3) or logged != [1]:
        return {**out, "ok": False, "error": "stop after epoch 1: " + r.stderr[-2000:]}
    p = subprocess.Popen(cmd, env=dict(env(), PYTHONUNBUFFERED="1"), stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True, start_new_session=True)  # fmt: skip
    for line in p.stdout:  # kill as soon as epoch 2 is under way
        if "resuming from" in line:
            time.sleep(1.0)
            os.killpg(p.pid, signal.SIGKILL)
            break
    p.wait()
    killed = p.returncode != 0
    r = subprocess.run(cmd, env=env(), capture_output=True, text=True, timeout=240)
    if r.returncode != 0:
        return {**out, "ok": False, "error": "resume after kill: " + r.stderr[-2000:]}
    a = json.loads((full / "run.json").read_text())
    b = json.loads((cut / "run.json").read_text())
    sa = torch.load(a["state"], map_location="cpu", weights_only=True)
    sb = torch.load(b["state"], map_location="cpu", weights_only=True)
    diff = max(float((sa["model"][k].float() - sb["model"][k].float()).abs().max())
               for k in sa["model"])  # fmt: skip
    epochs = [json.loads(x)["epoch"] for x in (cut / "log.jsonl").read_text().splitlines()]
    ok = epochs == [1, 2] and diff <= atol
    return {**out, "ok": ok, "killed_mid_epoch": killed, "epochs_logged": epochs,
            "max_abs_weight_diff_vs_uninterrupted": diff, "atol": atol,
            "seconds": round(time.perf_counter() - t0, 1)}  # fmt: skip


def check_odin_memory(smoke: bool) -> dict:
    """Peak CUDA memory of one ODIN batch, per image, at 480 px on deit3_base (no LN)."""
    import timm
    import torch

    from sure_ood.distributed import autocast
    from sure_ood.scores.odin import odin_scores

    dev = "cpu" if smoke else "cuda"
    size, batch = (32, 4) if smoke else (480, 16)
    kw = {"patch_size": 8, "depth": 2, "embed_dim": 64, "num_heads": 2} if smoke else {}
    arch = "deit3_small_patch16_224" if smoke else "deit3_base_patch16_384"
    model = timm.create_model(arch, pretrained=False, img_size=size, **kw).to(dev).eval()
    model.requires_grad_(False)
    x = torch.randn(batch, 3, size, size, device=dev)
    rows, ok = [], True
    for amp in ("none", "bf16"):
        for eps in (0.0014, 0.0):
            if dev == "cuda":
                torch.cuda.synchronize()
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats()
                base = torch.cuda.memory_allocated()
            t0 = time.perf_counter()
            with autocast(amp if amp == "bf16" else "none", dev):
                s = odin_scores(model, x, 1000.0, eps, (0.229, 0.224, 0.225))
            sec = time.perf_counter() - t0
            ok &= bool((s > 0).all() and (s <= 1).all())
            row = {"amp": amp, "epsilon": eps, "batch": batch, "img_size": size,
                   "seconds": round(sec, 3)}  # fmt: skip
            if dev == "cuda":
                peak = (torch.cuda.max_memory_allocated() - base) / 2**30
                row["peak_gib_per_image"] = round(peak / batch, 3)
                row["peak_gib_batch_64"] = round(64 * peak / batch, 1)
            rows.append(row)
    return {"ok": ok, "runs": rows}


def check_tiny_e2e(root: Path, smoke: bool) -> dict:
    from conftest import copy_workflow
    from imagefolder_fixture import make_imagefolder

    data = make_imagefolder(root / "images")
    work = copy_workflow(root / "wf")
    device = "cpu" if smoke else "cuda"
    cmd = [str(BIN / "snakemake"), "--cores", str(min(8, os.cpu_count() or 2)),
           "--configfile", "config/imagenet_ssb_tiny.yaml",
           "--config", f"data_root={data}", f"device={device}"]  # fmt: skip
    t0 = time.perf_counter()
    r = subprocess.run(cmd, cwd=work, env=env(), capture_output=True, text=True, timeout=420)
    sec = round(time.perf_counter() - t0, 1)
    table = work / "results/imagenet_ssb_tiny/tables/sure_vs_baseline.csv"
    if r.returncode != 0 or not table.exists():
        return {"ok": False, "seconds": sec, "error": (r.stdout + r.stderr)[-3000:]}
    import pandas as pd

    t = pd.read_csv(table)
    return {"ok": True, "seconds": sec, "device": device,
            "rows": t[["row", "auroc", "id_accuracy"]].to_dict("records")}  # fmt: skip


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--cpu-smoke", action="store_true")
    ap.add_argument("--throughput-json", type=Path, default=None)
    ap.add_argument("--throughput-rc", type=int, default=0)
    ap.add_argument("--resume-atol", type=float, default=1e-3)
    ap.add_argument("--skip", nargs="*", default=[], choices=["train", "odin", "e2e"])
    a = ap.parse_args()
    smoke = a.cpu_smoke
    result: dict = {"smoke": smoke}
    if a.throughput_json and a.throughput_json.exists():
        result["throughput"] = json.loads(a.throughput_json.read_text())
    result["throughput_ok"] = a.throughput_rc == 0
    if not smoke:
        import torch

        if not torch.cuda.is_available():
            sys.exit("gpu_acceptance: no CUDA device (use --cpu-smoke)")
    checks = {"train": lambda: check_train_resume(a.work / "train", smoke, a.resume_atol),
              "odin": lambda: check_odin_memory(smoke),
              "e2e": lambda: check_tiny_e2e(a.work / "e2e", smoke)}  # fmt: skip
    for name, fn in checks.items():
        if name in a.skip:
            continue
        t0 = time.perf_counter()
        try:
            result[name] = fn()
        except Exception as e:  # noqa: BLE001 - a check that crashes is a failed check
            result[name] = {"ok": False, "error": f"{type(e).__name__}: {e}"}
        print(f"{name}: {json.dumps(result[name])[:800]} ({time.perf_counter() - t0:.0f} s)",
              flush=True)  # fmt: skip
    failed = [k for k in ("train", "odin", "e2e") if k in result and not result[k]["ok"]]
    if not result["throughput_ok"]:
        failed.insert(0, "throughput")
    result["failed"] = failed
    a.out.write_text(json.dumps(result, indent=2, default=str))
    print(f"gpu acceptance: {'FAILED ' + ', '.join(failed) if failed else 'all checks passed'}"
          f" -> {a.out}")  # fmt: skip
    shutil.rmtree(a.work / "e2e" / "wf", ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
