"""Portable matrix products (sure_ood.portable_blas) against torch's own functions and autograd.

The replacements must compute the same function as torch's (forward within float rounding,
gradients checked by finite differences in float64), route nn.Linear and timm's attention
through numpy's BLAS once installed (bit-equal to a numpy product), and leave every input they
do not handle to torch.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sure_ood import portable_blas


@pytest.fixture
def installed():
    """Installed for one test (conftest restores torch's functions after each test)."""
    portable_blas.install()


def _original(name):
    return portable_blas._ORIGINAL[name]


@pytest.mark.parametrize("shape", [(7, 5), (2, 3, 5), (5,)])
@pytest.mark.parametrize("bias", [True, False])
def test_linear_matches_torch_and_its_gradients(shape, bias):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(*shape, generator=g, requires_grad=True)
    w = torch.randn(4, 5, generator=g, requires_grad=True)
    b = torch.randn(4, generator=g, requires_grad=True) if bias else None
    ref = _original("linear")(x, w, b)
    got = portable_blas.linear(x, w, b)
    torch.testing.assert_close(got, ref)
    grad = torch.randn(ref.shape, generator=g)
    inputs = [x, w] + ([b] if bias else [])
    want = torch.autograd.grad(ref, inputs, grad)
    have = torch.autograd.grad(got, inputs, grad)
    for h, r in zip(have, want, strict=True):
        torch.testing.assert_close(h, r)


def test_linear_gradcheck_float64():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 3, 4, generator=g, dtype=torch.float64, requires_grad=True)
    w = torch.randn(5, 4, generator=g, dtype=torch.float64, requires_grad=True)
    b = torch.randn(5, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(portable_blas.linear, (x, w, b))


def test_attention_matches_torch_and_gradcheck():
    g = torch.Generator().manual_seed(2)
    q, k, v = (torch.randn(2, 3, 6, 4, generator=g, requires_grad=True) for _ in range(3))
    ref = _original("scaled_dot_product_attention")(q, k, v)
    got = portable_blas.scaled_dot_product_attention(q, k, v)
    torch.testing.assert_close(got, ref)
    torch.testing.assert_close(
        portable_blas.scaled_dot_product_attention(q, k, v, scale=0.3),
        _original("scaled_dot_product_attention")(q, k, v, scale=0.3),
    )
    q64, k64, v64 = (t.detach().double().requires_grad_() for t in (q, k, v))
    assert torch.autograd.gradcheck(portable_blas.scaled_dot_product_attention, (q64, k64, v64))


def test_inputs_it_does_not_handle_go_to_torch():
    g = torch.Generator().manual_seed(3)
    q, k, v = (torch.randn(1, 2, 5, 4, generator=g) for _ in range(3))
    mask = torch.rand(5, 5, generator=g) > 0.3
    sdpa = _original("scaled_dot_product_attention")
    for kwargs in ({"attn_mask": mask}, {"is_causal": True}):
        assert torch.equal(
            portable_blas.scaled_dot_product_attention(q, k, v, **kwargs), sdpa(q, k, v, **kwargs)
        )
    x16, w16 = torch.randn(3, 4, dtype=torch.bfloat16), torch.randn(2, 4, dtype=torch.bfloat16)
    assert torch.equal(portable_blas.linear(x16, w16), _original("linear")(x16, w16))


def test_torch_func_transforms_get_torchs_function(installed):
    """Inside torch.func (vmap of grad, as pytorch-ood's GradNorm) the call goes to torch."""
    g = torch.Generator().manual_seed(5)
    w, x = torch.randn(3, 4, generator=g), torch.randn(6, 4, generator=g)

    def loss(weight, xi):
        return F.linear(xi, weight).logsumexp(-1)

    per_sample = torch.func.vmap(torch.func.grad(loss), in_dims=(None, 0))(w, x)
    p = torch.softmax(x @ w.T, dim=-1)
    torch.testing.assert_close(per_sample, p[:, :, None] * x[:, None, :])


def test_installed_layers_run_on_numpys_blas(installed):
    """After install, nn.Linear gives exactly numpy's product (torch's MKL product would
    generally differ in the last bits), and uninstall restores torch's function."""
    g = torch.Generator().manual_seed(4)
    layer = torch.nn.Linear(64, 48)
    x = torch.randn(33, 64, generator=g)
    with torch.no_grad():
        got = layer(x).numpy()
    want = x.numpy() @ layer.weight.detach().numpy().T + layer.bias.detach().numpy()
    assert np.array_equal(got, want)
    assert F.linear is portable_blas.linear
    assert F.scaled_dot_product_attention is portable_blas.scaled_dot_product_attention
    portable_blas.install()  # idempotent
    assert portable_blas._ORIGINAL["linear"] is torch._C._nn.linear
    portable_blas.uninstall()
    assert F.linear is torch._C._nn.linear
    assert not portable_blas.installed()
