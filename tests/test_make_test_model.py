"""Stage make_test_model: weight soup, "w/o LN", test resolution (docs/method.md).

Real timm models (tiny DeiT-III), saved and reloaded through the package's own checkpoint
format; references are hand means, LayerNorm / cosine formulas, timm's own resampling paths
and SSB-OSR's hand-written pos-embed interpolation.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sure_ood.io import InputError, load_state_dict
from sure_ood.models import build_model, load_model, model_spec, read_spec, save_model
from sure_ood.stages.extract import forward_cache, head_parameters
from sure_ood.stages.make_test_model import make_test_model, soup

MODEL = {
    "arch": "deit3_small_patch16_224",
    "img_size": 8,
    "in_chans": 1,
    "timm_kwargs": {
        "patch_size": 2,
        "depth": 2,
        "embed_dim": 24,
        "num_heads": 2,
        "init_values": 0.5,
    },
}
RECIPE = {"head": "cosine", "cos_temperature": 8.0, "feature_clip": None}
NUM_CLASSES = 5


def _spec(**recipe):
    return model_spec(MODEL, NUM_CLASSES, {**RECIPE, **recipe})


def _random_model(seed: int, spec=None):
    """A model whose every float tensor is random (so LN affine, layer scale... all matter)."""
    spec = spec or _spec()
    model = build_model(spec)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.state_dict().items():
            if p.is_floating_point() and name != "head.temperature":
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)
    return model.eval(), spec


def _save(tmp_path, name: str, seed: int, spec=None):
    model, spec = _random_model(seed, spec)
    path = tmp_path / f"{name}.safetensors"
    save_model(path, model, spec)
    return path, model


def _images(n: int = 6, size: int = 8, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 1, size, size, generator=torch.Generator().manual_seed(seed))


def _loader(x: torch.Tensor):
    y = torch.arange(len(x)) % NUM_CLASSES
    return [(x[:4], y[:4], torch.arange(4)), (x[4:], y[4:], torch.arange(4, len(x)))]


@torch.no_grad()
def _out(model, x):
    return model.eval()(x)


# --------------------------------------------------------------------------------------------
# soup (docs/method.md#ensemble)


def test_soup_of_identical_runs_is_the_run(tmp_path):
    path, model = _save(tmp_path, "a", seed=1)
    soup_model, spec = make_test_model([path, path, path], False, None, tmp_path / "s.safetensors")
    got = load_state_dict(tmp_path / "s.safetensors")
    ref = load_state_dict(path)
    assert got.keys() == ref.keys()
    for k in ref:
        assert torch.equal(got[k], ref[k]), k
    assert spec == read_spec(path)
    x = _images()
    assert torch.equal(_out(soup_model, x), _out(model, x))


def test_soup_of_two_runs_is_the_elementwise_mean(tmp_path):
    pa, ma = _save(tmp_path, "a", seed=1)
    pb, mb = _save(tmp_path, "b", seed=2)
    out = tmp_path / "soup.safetensors"
    make_test_model([pa, pb], False, None, out)
    got = load_state_dict(out)
    sa, sb = ma.state_dict(), mb.state_dict()
    assert not torch.allclose(sa["blocks.0.attn.qkv.weight"], sb["blocks.0.attn.qkv.weight"])
    for k in sa:
        torch.testing.assert_close(got[k], (sa[k] + sb[k]) / 2, rtol=1e-6, atol=1e-7, msg=k)
    # the saved soup rebuilds into the hand-averaged network
    hand, _ = _random_model(0)
    hand.load_state_dict({k: (sa[k] + sb[k]) / 2 for k in sa})
    loaded, spec = load_model(out)
    assert spec["img_size"] == 8 and spec["drop_final_norm"] is False
    x = _images()
    torch.testing.assert_close(_out(loaded, x), _out(hand, x), rtol=1e-5, atol=1e-5)


def test_soup_function_mean_and_integer_buffers():
    a = {
        "w": torch.tensor([1.0, 2.0]),
        "n": torch.tensor(3),
        "h": torch.tensor([1.0], dtype=torch.float16),
    }
    b = {
        "w": torch.tensor([3.0, 6.0]),
        "n": torch.tensor(7),
        "h": torch.tensor([2.0], dtype=torch.float16),
    }
    c = {
        "w": torch.tensor([2.0, 1.0]),
        "n": torch.tensor(1),
        "h": torch.tensor([3.0], dtype=torch.float16),
    }
    s = soup([a, b, c])
    torch.testing.assert_close(s["w"], torch.tensor([2.0, 3.0]))
    assert s["n"].item() == 3, "integer buffers (e.g. n_averaged) come from the first"
    assert s["h"].dtype == torch.float16 and s["h"].item() == 2.0


def test_soup_rejects_different_tensors_naming_the_file():
    a = {"w": torch.zeros(2), "v": torch.zeros(1)}
    with pytest.raises(InputError, match=r"run_b\.pt.*different tensors.*'v'"):
        soup([a, {"w": torch.zeros(2)}], ["run_a.pt", "run_b.pt"])
    with pytest.raises(InputError, match=r"run_b\.pt: tensor 'w' has shape \(3,\)"):
        soup([a, {"w": torch.zeros(3), "v": torch.zeros(1)}], ["run_a.pt", "run_b.pt"])


@pytest.mark.parametrize(
    ("other", "key"),
    [
        ({"cos_temperature": 16.0}, "cos_temperature"),
        ({"head": "linear"}, "head"),
    ],
)
def test_souping_runs_with_different_specs_fails_naming_the_file(tmp_path, other, key):
    pa, _ = _save(tmp_path, "run_a", seed=1)
    pb, _ = _save(tmp_path, "run_b", seed=2, spec=_spec(**other))
    out = tmp_path / "soup.safetensors"
    with pytest.raises(InputError, match=r"run_b\.safetensors: model spec differs from .*run_a"):
        make_test_model([pa, pb], False, None, out)
    with pytest.raises(InputError, match=key):
        make_test_model([pa, pb], False, None, out)
    assert not out.exists()


def test_missing_run_is_named(tmp_path):
    with pytest.raises(InputError, match="nope.safetensors"):
        make_test_model([tmp_path / "nope.safetensors"], False, None, tmp_path / "o.safetensors")


# --------------------------------------------------------------------------------------------
# w/o LN (docs/method.md#without-final-layernorm)


def test_drop_final_norm_changes_only_the_final_norm(tmp_path):
    path, model = _save(tmp_path, "a", seed=3)
    ln_model, _ = make_test_model([path], False, None, tmp_path / "ln.safetensors")
    noln_model, spec = make_test_model([path], True, None, tmp_path / "noln.safetensors")
    assert spec["drop_final_norm"] is True and read_spec(tmp_path / "noln.safetensors") == spec
    ln, noln = (
        load_state_dict(tmp_path / "ln.safetensors"),
        load_state_dict(tmp_path / "noln.safetensors"),
    )
    assert set(ln) - set(noln) == {"norm.weight", "norm.bias"} and set(noln) < set(ln)
    for k in noln:
        assert torch.equal(noln[k], ln[k]), k
    # reloading the saved no-LN model gives the no-LN network, not the LN one
    loaded, _ = load_model(tmp_path / "noln.safetensors")
    assert isinstance(loaded.norm, torch.nn.Identity)
    x = _images()
    assert torch.equal(_out(loaded, x), _out(noln_model, x))
    assert not torch.allclose(_out(noln_model, x), _out(ln_model, x), atol=1e-3)
    assert torch.equal(_out(ln_model, x), _out(model, x))


def _hand_prenorm_cls(model, x):
    """The CLS token of the last block's residual stream, written out from timm's parts."""
    with torch.no_grad():
        t = model._pos_embed(model.patch_embed(x))
        t = model.norm_pre(t)
        for blk in model.blocks:
            t = blk(t)
    return t[:, 0].numpy()


def test_no_ln_features_equal_the_ln_models_prenorm_features(tmp_path):
    path, _ = _save(tmp_path, "a", seed=4)
    ln_model, _ = make_test_model([path], False, None, tmp_path / "ln.safetensors")
    noln_model, _ = make_test_model([path], True, None, tmp_path / "noln.safetensors")
    x = _images(7)
    ln = forward_cache(ln_model, _loader(x), "cpu")
    noln = forward_cache(noln_model, _loader(x), "cpu")
    hand = _hand_prenorm_cls(ln_model, x)
    np.testing.assert_allclose(ln["prenorm"], hand, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(noln["features"], ln["prenorm"], rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(noln["prenorm"], noln["features"])
    # the LN model's features are LayerNorm(pre-norm CLS) with the model's affine (LN is per
    # token, so pooling then normalising = normalising then pooling)
    w, b = ln_model.norm.weight.detach(), ln_model.norm.bias.detach()
    ref = F.layer_norm(torch.from_numpy(ln["prenorm"]), (w.numel(),), w, b, ln_model.norm.eps)
    np.testing.assert_allclose(ln["features"], ref.numpy(), rtol=1e-4, atol=1e-5)
    assert not np.allclose(ln["features"], noln["features"], atol=1e-3)


def test_ln_cache_gives_the_no_ln_logits_by_the_cosine_formula(tmp_path):
    """One extraction serves both: tau * cos(prenorm, w_c) from the LN cache = no-LN logits."""
    path, _ = _save(tmp_path, "a", seed=5)
    ln_model, _ = make_test_model([path], False, None, tmp_path / "ln.safetensors")
    noln_model, _ = make_test_model([path], True, None, tmp_path / "noln.safetensors")
    x = _images(6)
    ln = forward_cache(ln_model, _loader(x), "cpu")
    noln = forward_cache(noln_model, _loader(x), "cpu")
    head = head_parameters(ln_model)
    assert head["head_type"] == "cosine"
    h, w = ln["prenorm"].astype(np.float64), head["head_weight"].astype(np.float64)
    cos = (h / np.linalg.norm(h, axis=1, keepdims=True)) @ (
        w / np.linalg.norm(w, axis=1, keepdims=True)
    ).T
    np.testing.assert_allclose(noln["logits"], head["head_temperature"] * cos, atol=1e-5)


# --------------------------------------------------------------------------------------------
# test resolution (docs/method.md#higher-test-resolution)


def _ssb_osr_pos_embed(pos: torch.Tensor, old: int, new: int) -> torch.Tensor:
    """SSB-OSR docs/Support.md: F.interpolate(..., mode="bicubic") of the patch grid."""
    d = pos.shape[-1]
    grid = pos.permute(0, 2, 1).reshape(1, d, old, old)
    grid = F.interpolate(grid, size=[new, new], mode="bicubic")
    return grid.reshape(1, d, new * new).permute(0, 2, 1)


def test_new_size_equals_timm_checkpoint_filter_and_ssb_osr(tmp_path):
    from timm.models.vision_transformer import checkpoint_filter_fn

    path, model = _save(tmp_path, "a", seed=6)
    ours, spec = make_test_model([path], True, 10, tmp_path / "r10.safetensors")
    assert spec["img_size"] == 10 and ours.patch_embed.grid_size == (5, 5)
    assert ours.pos_embed.shape == (1, 25, 24), "no_embed_class: the CLS token has no pos-embed"
    # SSB-OSR's hand-written resampling, independent of timm
    ref_pos = _ssb_osr_pos_embed(model.pos_embed.detach(), 4, 5)
    torch.testing.assert_close(ours.pos_embed.detach(), ref_pos, rtol=1e-6, atol=1e-6)
    # timm's own path: a model created at 10 px, the 8 px state dict through its checkpoint
    # filter (bicubic, no antialias as SSB-OSR)
    timm_model = build_model({**spec, "img_size": 10})
    state = checkpoint_filter_fn(
        model.state_dict(), timm_model, interpolation="bicubic", antialias=False
    )
    state = {k: v for k, v in state.items() if not k.startswith("norm.")}  # w/o LN
    timm_model.load_state_dict(state, strict=True)
    x = _images(5, size=10)
    torch.testing.assert_close(_out(ours, x), _out(timm_model, x), rtol=1e-5, atol=1e-5)
    # and the saved test model rebuilds at 10 px with the same output
    loaded, _ = load_model(tmp_path / "r10.safetensors")
    torch.testing.assert_close(_out(loaded, x), _out(ours, x), rtol=0, atol=0)
    with pytest.raises(AssertionError):  # the strict input size is now 10
        _out(loaded, _images(2, size=8))


def test_new_size_with_antialias_equals_timm_dynamic_img_size(tmp_path):
    """``pos_embed_antialias=True`` is timm's default resampling (``dynamic_img_size``)."""
    path, model = _save(tmp_path, "a", seed=7)
    ours, spec = make_test_model(
        [path], False, 10, tmp_path / "r10aa.safetensors", pos_embed_antialias=True
    )
    dyn_spec = dict(read_spec(path))
    dyn_spec["timm_kwargs"] = {**dyn_spec["timm_kwargs"], "dynamic_img_size": True}
    dynamic = build_model(dyn_spec)
    dynamic.load_state_dict(model.state_dict(), strict=True)
    x = _images(5, size=10)
    torch.testing.assert_close(_out(ours, x), _out(dynamic, x), rtol=1e-5, atol=1e-5)
    # the two bicubic kernels differ (PyTorch's antialiased bicubic uses a = -0.5, the plain
    # one a = -0.75) even when upsampling: the default follows SSB-OSR, not timm
    plain, _ = make_test_model([path], False, 10, tmp_path / "r10.safetensors")
    assert not torch.allclose(plain.pos_embed, ours.pos_embed, atol=1e-3)


def test_original_size_is_the_identity(tmp_path):
    path, model = _save(tmp_path, "a", seed=8)
    same, spec = make_test_model([path], False, 8, tmp_path / "r8.safetensors")
    assert spec == read_spec(path)
    got, ref = load_state_dict(tmp_path / "r8.safetensors"), load_state_dict(path)
    assert got.keys() == ref.keys() and all(torch.equal(got[k], ref[k]) for k in ref)
    x = _images()
    assert torch.equal(_out(same, x), _out(model, x))


def test_cli_builds_the_test_model(tmp_path):
    from sure_ood.cli import main

    pa, ma = _save(tmp_path, "a", seed=9)
    pb, mb = _save(tmp_path, "b", seed=10)
    out = tmp_path / "tm/model.safetensors"
    rc = main(
        ["make_test_model", "--runs", str(pa), str(pb), "--drop-final-norm", "--img-size", "10"]
        + ["--out", str(out)]
    )
    assert rc == 0
    spec = read_spec(out)
    assert spec["drop_final_norm"] is True and spec["img_size"] == 10
    got = load_state_dict(out)
    sa, sb = ma.state_dict(), mb.state_dict()
    torch.testing.assert_close(
        got["blocks.1.mlp.fc2.weight"],
        (sa["blocks.1.mlp.fc2.weight"] + sb["blocks.1.mlp.fc2.weight"]) / 2,
    )
    mean_pos = (sa["pos_embed"] + sb["pos_embed"]) / 2
    torch.testing.assert_close(got["pos_embed"], _ssb_osr_pos_embed(mean_pos, 4, 5))
    assert "norm.weight" not in got
