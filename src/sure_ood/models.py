"""Models: timm DeiT-III backbones with a linear or cosine head, and their initial weights.

A *model spec* (a plain dict, stored as JSON in every safetensors file this package writes)
is enough to rebuild the network: ``arch`` (a timm model name), ``timm_kwargs`` (architecture
overrides such as img_size / patch_size / depth / embed_dim), ``in_chans``, ``num_classes``,
``head`` (``linear`` | ``cosine``), ``cos_temperature``, ``feature_clip`` and
``drop_final_norm``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from sure_ood.io import InputError, load_state_dict, save_state_dict

SPEC_KEY = "sure_ood_model_spec"


def model_spec(model_cfg: dict, num_classes: int, recipe: dict | None = None) -> dict:
    """The spec of a model config + recipe (head settings come from the recipe); keys the
    model config or recipe lacks take the schema's defaults (``sure_ood.defaults``)."""
    from sure_ood.defaults import with_defaults

    model_cfg = with_defaults("model", model_cfg)
    recipe = with_defaults("recipe", recipe or {})
    return {
        "arch": model_cfg["arch"],
        "timm_kwargs": dict(model_cfg.get("timm_kwargs", {})),
        "img_size": int(model_cfg["img_size"]),
        "in_chans": int(model_cfg["in_chans"]),
        "num_classes": int(num_classes),
        "head": recipe["head"],
        "cos_temperature": float(recipe["cos_temperature"]),
        "feature_clip": recipe.get("feature_clip"),
        "drop_final_norm": False,
    }


def build_model(spec: dict, pretrained_tag: str | None = None, pretrained_file: str | None = None):
    """Create the timm model of ``spec`` (random init unless a pretrained tag is given).

    ``pretrained_tag`` loads timm's pretrained weights for ``arch.tag``; ``pretrained_file``
    points timm at a local copy of them (``pretrained_cfg_overlay``), so no hub download is
    needed. timm drops the classifier when the class count differs from the checkpoint's.
    """
    import timm
    import torch.nn as nn

    kwargs: dict[str, Any] = dict(spec.get("timm_kwargs", {}))
    kwargs.update(img_size=spec["img_size"], in_chans=spec["in_chans"])
    name = spec["arch"]
    pretrained = False
    if pretrained_tag:
        name = f"{spec['arch']}.{pretrained_tag}"
        pretrained = True
        if pretrained_file:
            kwargs["pretrained_cfg_overlay"] = {"file": str(pretrained_file)}
    try:
        model = timm.create_model(
            name, pretrained=pretrained, num_classes=spec["num_classes"], **kwargs
        )
    except (RuntimeError, OSError, ValueError) as e:
        where = pretrained_file or f"timm tag {name!r}"
        raise InputError(f"cannot build {name!r} from {where}: {e}") from e
    if spec["head"] == "cosine":
        from sure_ood.tricks.cosine_head import CosineHead, replace_head

        replace_head(
            model,
            CosineHead(
                model.num_features,
                spec["num_classes"],
                temperature=spec["cos_temperature"],
                feature_clip=spec.get("feature_clip"),
            ),
        )
    if spec.get("drop_final_norm"):
        model.norm = nn.Identity()
    return model


def initial_model(spec: dict, init: dict | str | None, init_path: str | None = None):
    """The model a run starts from, and the local weights file it was initialised from (None
    if none; its bytes are part of the run's fingerprint).

    ``init`` is the recipe's: ``none`` (timm's random init), ``{"timm_tag": T}`` (timm's
    pretrained weights ``arch.T``, read from ``file`` when given, see :func:`build_model`),
    ``{"file": F}`` (a local checkpoint, :func:`load_init`), or ``{"recipe": ...}`` (another
    run's final weights, which the workflow passes as ``init_path``). ``init_path`` (the
    stage's ``--init``) is loaded with :func:`load_init` over whatever ``init`` built."""
    init = init or "none"
    tag = init.get("timm_tag") if isinstance(init, dict) else None
    tag_file = init.get("file") if isinstance(init, dict) and tag else None
    model = build_model(spec, pretrained_tag=tag, pretrained_file=tag_file)
    file_init = init_path or (init.get("file") if isinstance(init, dict) and not tag else None)
    if file_init:
        load_init(model, file_init)
    return model, file_init


def head_of(model):
    """The classifier module (the layer whose input is the cached ``features``)."""
    return model.get_classifier()


def save_model(path: str | os.PathLike, model, spec: dict, extra: dict | None = None) -> None:
    """Save weights as safetensors with the spec (and provenance) in the metadata."""
    meta = {SPEC_KEY: json.dumps(spec)}
    for k, v in (extra or {}).items():
        meta[k] = v if isinstance(v, str) else json.dumps(v)
    save_state_dict(path, model.state_dict(), meta)


def read_spec(path: str | os.PathLike) -> dict:
    """Read the model spec stored in a safetensors file written by :func:`save_model`."""
    from safetensors import safe_open

    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: checkpoint not found")
    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = fh.metadata() or {}
    except Exception as e:  # noqa: BLE001
        raise InputError(f"{path}: unreadable checkpoint ({type(e).__name__}: {e})") from e
    if SPEC_KEY not in meta:
        raise InputError(f"{path}: no {SPEC_KEY!r} in the safetensors metadata")
    try:
        spec = json.loads(meta[SPEC_KEY])
    except json.JSONDecodeError as e:
        raise InputError(f"{path}: metadata {SPEC_KEY!r} is not valid JSON ({e})") from e
    if not isinstance(spec, dict):
        raise InputError(f"{path}: metadata {SPEC_KEY!r} is not a JSON object")
    return spec


def load_model(path: str | os.PathLike, device: str = "cpu"):
    """Rebuild a model from a safetensors file written by :func:`save_model`."""
    spec = read_spec(path)
    model = build_model(spec)
    state = load_state_dict(path)
    _load_strict(model, state, path)
    return model.to(device), spec


def load_init(model, path: str | os.PathLike) -> None:
    """Initialise ``model`` from a local checkpoint; the classifier is kept fresh if its
    shape differs (fine-tuning to another class count). Errors name the path."""
    state = load_state_dict(path)
    own = model.state_dict()
    head_prefixes = ("head.", "fc.", "classifier.")
    head_keys = {k for k in own if k.startswith(head_prefixes)}
    filtered = {}
    for k, v in state.items():
        k = k.removeprefix("module.")
        if k.startswith(head_prefixes) and k not in own:
            continue  # e.g. a linear head's bias when fine-tuning with a cosine head
        if k in own and own[k].shape != v.shape:
            if k in head_keys:
                continue
            raise InputError(
                f"{path}: tensor {k!r} has shape {tuple(v.shape)}, model expects "
                f"{tuple(own[k].shape)}"
            )
        filtered[k] = v
    missing, unexpected = model.load_state_dict(filtered, strict=False)
    missing = [k for k in missing if k not in head_keys]
    unexpected = [k for k in unexpected if k != "n_averaged"]
    if missing or unexpected:
        raise InputError(
            f"{path}: checkpoint does not fit the model: missing {missing[:5]}, "
            f"unexpected {unexpected[:5]}"
        )


def _load_strict(model, state: dict, path) -> None:
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise InputError(f"{path}: weights do not fit the stored model spec ({e})") from e


def resolve_device(device: str = "auto") -> str:
    """``auto`` -> ``cuda`` when a GPU is usable, else ``cpu``."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device
