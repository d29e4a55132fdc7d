"""Stage ``make_test_model``: build the model under test from finalized runs.

Three test-time tricks of SURE-OOD (docs/method.md#without-final-layernorm,
#higher-test-resolution, #ensemble), each a field of the test-model
spec:

- soup: average the parameters of K runs of the same architecture and init (the winners'
  "ensemble": a weight average, not an output average);
- ``drop_final_norm``: replace the final LayerNorm by identity, at test time only;
- ``img_size``: rebuild at another resolution: timm's ``VisionTransformer.set_input_size``
  updates the patch grid, and the absolute position embedding is resampled with timm's
  ``resample_abs_pos_embed`` as SSB-OSR does it (docs/Support.md: ``F.interpolate(...,
  mode="bicubic")``, so *no* antialias). timm's own default (``set_input_size``,
  ``checkpoint_filter_fn``, ``dynamic_img_size``) is ``antialias=True``, which in PyTorch is
  a different bicubic kernel (a = -0.5 instead of -0.75) and changes every resampled entry,
  even when upsampling; ``pos_embed_antialias=True`` selects it.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from sure_ood.io import InputError


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--runs", nargs="+", required=True, type=Path, help="final.safetensors files")
    p.add_argument("--drop-final-norm", action="store_true")
    p.add_argument("--img-size", type=int, default=None, help="test resolution (default: train)")
    p.add_argument(
        "--pos-embed-antialias",
        action="store_true",
        help="resample the pos-embed with timm's default antialiased bicubic (default: plain "
        "bicubic, as SSB-OSR)",
    )
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


def resize_model_input(model, img_size: int, antialias: bool = False) -> str:
    """Set a timm ViT's input size to ``img_size``; resample its absolute pos-embed (bicubic).

    Returns a one-line description of what was resampled (for the checkpoint's provenance).
    """
    import torch.nn as nn
    from timm.layers import resample_abs_pos_embed

    old_grid = tuple(model.patch_embed.grid_size)
    pos = getattr(model, "pos_embed", None)
    old_pos = None if pos is None else pos.detach().clone()
    model.set_input_size(img_size=(img_size, img_size))
    new_grid = tuple(model.patch_embed.grid_size)
    if old_pos is None:
        return f"grid {old_grid} -> {new_grid}, no absolute pos-embed"
    n_prefix = 0 if getattr(model, "no_embed_class", False) else model.num_prefix_tokens
    resampled = resample_abs_pos_embed(
        old_pos,
        new_size=list(new_grid),
        old_size=list(old_grid),
        num_prefix_tokens=n_prefix,
        interpolation="bicubic",
        antialias=antialias,
    )
    model.pos_embed = nn.Parameter(resampled, requires_grad=model.pos_embed.requires_grad)
    return f"pos_embed {old_grid} -> {new_grid}, bicubic, antialias={antialias}"


def make_test_model(
    runs: list[Path],
    drop_final_norm: bool,
    img_size: int | None,
    out: Path,
    pos_embed_antialias: bool = False,
):
    """Soup ``runs``, apply the test-time changes, save to ``out``; returns (model, spec)."""
    import torch.nn as nn

    from sure_ood.io import load_state_dict
    from sure_ood.models import build_model, read_spec, save_model

    runs = [Path(p) for p in runs]
    if not runs:
        raise InputError("make_test_model: no run to build a test model from")
    specs = [read_spec(p) for p in runs]
    for p, s in zip(runs[1:], specs[1:], strict=True):
        if s != specs[0]:
            diff = sorted(k for k in set(s) | set(specs[0]) if s.get(k) != specs[0].get(k))
            raise InputError(
                f"{p}: model spec differs from {runs[0]} in {diff}; only like runs can be souped"
            )
    spec = dict(specs[0])
    weights = soup([load_state_dict(p) for p in runs], [str(p) for p in runs])
    model = build_model(spec)
    try:
        model.load_state_dict(weights, strict=True)
    except RuntimeError as e:
        raise InputError(f"{runs[0]}: weights do not fit the stored model spec ({e})") from e
    provenance = {"runs": [str(p) for p in runs]}
    if drop_final_norm:
        model.norm = nn.Identity()
        spec["drop_final_norm"] = True
    if img_size is not None and int(img_size) != spec["img_size"]:
        if not hasattr(model, "set_input_size"):
            raise InputError(f"img_size: {spec['arch']!r} cannot change its input size")
        provenance["resized"] = resize_model_input(model, int(img_size), pos_embed_antialias)
        spec["img_size"] = int(img_size)
    model.eval()
    save_model(out, model, spec, provenance)
    return model, spec


def run(args: argparse.Namespace) -> int:
    _, spec = make_test_model(
        args.runs, args.drop_final_norm, args.img_size, args.out, args.pos_embed_antialias
    )
    print(
        f"{args.out}: {len(args.runs)} run(s), img_size {spec['img_size']}, "
        f"final norm {'dropped' if spec['drop_final_norm'] else 'kept'}"
    )
    return 0
