"""Model building and the three initialisation paths (none, timm tag, local file)."""

from __future__ import annotations

import pytest
import torch

from sure_ood.io import InputError
from sure_ood.models import (
    build_model,
    initial_model,
    load_init,
    load_model,
    model_spec,
    save_model,
)

MODEL = {
    "arch": "deit3_small_patch16_224",
    "img_size": 8,
    "in_chans": 1,
    "timm_kwargs": {"patch_size": 2, "depth": 1, "embed_dim": 24, "num_heads": 2, "init_values": 0},
}


def test_scratch_model_has_the_requested_shape():
    spec = model_spec(MODEL, 6)
    m = build_model(spec)
    assert m.patch_embed.grid_size == (4, 4) and len(m.blocks) == 1
    assert m(torch.zeros(2, 1, 8, 8)).shape == (2, 6)


def test_timm_tag_path_loads_a_local_file_without_download(tmp_path):
    """``init: {timm_tag, file}``: timm's pretrained path, pointed at a local file."""
    src = build_model(model_spec(MODEL, 1000))  # a "pretrained" checkpoint with 1000 classes
    ckpt = tmp_path / "pretrained.pth"
    torch.save(src.state_dict(), ckpt)
    m = build_model(model_spec(MODEL, 6), pretrained_tag="fb_in1k", pretrained_file=str(ckpt))
    torch.testing.assert_close(m.pos_embed, src.pos_embed)
    torch.testing.assert_close(m.blocks[0].attn.qkv.weight, src.blocks[0].attn.qkv.weight)
    assert m.head.weight.shape == (6, 24)  # timm keeps a fresh head for the new class count


def test_local_file_init_keeps_fresh_head_when_class_count_differs(tmp_path):
    src = build_model(model_spec(MODEL, 10))
    torch.save({"state_dict": src.state_dict()}, tmp_path / "init.pt")
    m = build_model(model_spec(MODEL, 6))
    load_init(m, tmp_path / "init.pt")
    torch.testing.assert_close(m.cls_token, src.cls_token)


def test_linear_to_cosine_head_init(tmp_path):
    src = build_model(model_spec(MODEL, 6))
    save_model(tmp_path / "base.safetensors", src, model_spec(MODEL, 6))
    m = build_model(model_spec(MODEL, 6, {"head": "cosine", "cos_temperature": 8.0}))
    load_init(m, tmp_path / "base.safetensors")  # the linear bias is ignored
    torch.testing.assert_close(m.head.weight, src.head.weight)


def test_save_and_load_model_round_trip(tmp_path):
    spec = model_spec(MODEL, 6, {"head": "cosine"})
    m = build_model(spec)
    save_model(tmp_path / "m.safetensors", m, spec)
    back, spec2 = load_model(tmp_path / "m.safetensors")
    assert spec2 == spec
    x = torch.randn(3, 1, 8, 8)
    torch.testing.assert_close(back.eval()(x), m.eval()(x))


def test_bad_init_files_are_named(tmp_path):
    m = build_model(model_spec(MODEL, 6))
    with pytest.raises(InputError, match="nope.pt"):
        load_init(m, tmp_path / "nope.pt")
    (tmp_path / "junk.pt").write_bytes(b"\x00garbage")
    with pytest.raises(InputError, match="junk.pt"):
        load_init(m, tmp_path / "junk.pt")
    wrong = build_model(
        model_spec({**MODEL, "timm_kwargs": {**MODEL["timm_kwargs"], "embed_dim": 32}}, 6)
    )
    torch.save(wrong.state_dict(), tmp_path / "wrong.pt")
    with pytest.raises(InputError, match="wrong.pt"):
        load_init(m, tmp_path / "wrong.pt")


def test_initial_model_follows_recipe_init_and_the_init_override(tmp_path):
    """``recipe.init`` as the train stage reads it: ``{file}`` loads that file; ``--init``
    (``init_path``) wins over it, and is what ``{recipe}`` (another run's weights) gets; a
    timm tag's file is timm's, not a run-defining init file. The returned file is the one
    whose bytes fingerprint the run."""
    spec = model_spec(MODEL, 6)
    a, b = build_model(spec), build_model(spec)
    save_model(tmp_path / "a.safetensors", a, spec)
    save_model(tmp_path / "b.safetensors", b, spec)
    fa, fb = str(tmp_path / "a.safetensors"), str(tmp_path / "b.safetensors")

    m, f = initial_model(spec, {"file": fa})
    assert f == fa
    torch.testing.assert_close(m.blocks[0].attn.qkv.weight, a.blocks[0].attn.qkv.weight)
    m, f = initial_model(spec, {"file": fa}, init_path=fb)
    assert f == fb
    torch.testing.assert_close(m.blocks[0].attn.qkv.weight, b.blocks[0].attn.qkv.weight)
    m, f = initial_model(spec, {"recipe": "baseline"}, init_path=fa)
    assert f == fa
    torch.testing.assert_close(m.pos_embed, a.pos_embed)
    for init in ("none", None):
        m, f = initial_model(spec, init)
        assert f is None and m.head.weight.shape == (6, 24)

    pretrained = build_model(model_spec(MODEL, 1000))
    torch.save(pretrained.state_dict(), tmp_path / "pretrained.pth")
    tag = {"timm_tag": "fb_in1k", "file": str(tmp_path / "pretrained.pth")}
    m, f = initial_model(spec, tag)
    assert f is None
    torch.testing.assert_close(m.pos_embed, pretrained.pos_embed)
