"""Stage ``make_test_model``: build the model under test from finalized runs.

Three test-time tricks of SURE-OOD (spec sections 2.3, 2.4, 5), each a field of the test-model
spec:

- soup: average the parameters of K runs of the same architecture and init (the winners'
  "ensemble": a weight average, not an output average);
- ``drop_final_norm``: replace the final LayerNorm by identity, at test time only;
- ``img_size``: rebuild at another resolution; the absolute position embedding is resampled
  by timm's own ``VisionTransformer.set_input_size`` (``resample_abs_pos_embed``, bicubic).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from sure_ood.io import InputError


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--runs", nargs="+", required=True, type=Path, help="final.safetensors files")
    p.add_argument("--drop-final-norm", action="store_true")
    p.add_argument("--img-size", type=int, default=None, help="test resolution (default: train)")
    p.add_argument("--out", required=True, type=Path)


def soup(state_dicts: list[dict], sources: list | None = None) -> dict:
    """Elementwise mean of K state dicts with identical keys and shapes (Wortsman et al. 2022,
    "Model soups"; SSB-OSR utils/model_emb.py). Integer buffers are taken from the first."""
    import torch

    sources = sources or [f"#{i}" for i in range(len(state_dicts))]
    first = state_dicts[0]
    for sd, src in zip(state_dicts[1:], sources[1:], strict=True):
        if sd.keys() != first.keys():
            diff = sorted(set(sd) ^ set(first))[:5]
            raise InputError(f"{src}: cannot soup with {sources[0]}: different tensors {diff}")
        for k, v in sd.items():
            if v.shape != first[k].shape:
                raise InputError(
                    f"{src}: tensor {k!r} has shape {tuple(v.shape)}, "
                    f"{sources[0]} has {tuple(first[k].shape)}"
                )
    out = {}
    for k, v in first.items():
        if v.is_floating_point():
            out[k] = (
                torch.stack([sd[k].to(torch.float64) for sd in state_dicts]).mean(0).to(v.dtype)
            )
        else:
            out[k] = v.clone()
    return out


def make_test_model(runs: list[Path], drop_final_norm: bool, img_size: int | None, out: Path):
    import torch.nn as nn

    from sure_ood.io import load_state_dict
    from sure_ood.models import build_model, read_spec, save_model

    specs = [read_spec(p) for p in runs]
    for p, s in zip(runs[1:], specs[1:], strict=True):
        if s != specs[0]:
            raise InputError(
                f"{p}: model spec differs from {runs[0]}; only like runs can be souped"
            )
    spec = dict(specs[0])
    weights = soup([load_state_dict(p) for p in runs], [str(p) for p in runs])
    model = build_model(spec)
    model.load_state_dict(weights, strict=True)
    if drop_final_norm:
        model.norm = nn.Identity()
        spec["drop_final_norm"] = True
    if img_size is not None and img_size != spec["img_size"]:
        if not hasattr(model, "set_input_size"):
            raise InputError(f"img_size: {spec['arch']!r} cannot change its input size")
        model.set_input_size(img_size=(img_size, img_size))
        spec["img_size"] = int(img_size)
    save_model(out, model, spec, {"runs": [str(p) for p in runs]})
    return model, spec


def run(args: argparse.Namespace) -> int:
    _, spec = make_test_model(args.runs, args.drop_final_norm, args.img_size, args.out)
    print(
        f"{args.out}: {len(args.runs)} run(s), img_size {spec['img_size']}, "
        f"final norm {'dropped' if spec['drop_final_norm'] else 'kept'}"
    )
    return 0
