"""torch's float matrix products on numpy's pinned OpenBLAS, for ``numerics: portable``.

Why this exists: a CPU-independent result needs a matrix product whose code does not depend on
the CPU. MKL (torch's CPU BLAS) offers that only in its COMPATIBLE branch, which is SSE2 code:
its faster branches are documented for Intel CPUs only and fall back to vendor-dependent code
on AMD. On the default benchmark's shapes, MKL COMPATIBLE is ~3x slower than MKL's native path
(docs/reproducibility.md). numpy's OpenBLAS, pinned by ``numerics.PINS`` to its Haswell kernels
(AVX2 + FMA) and one thread, runs the same code on every x86-64 CPU with AVX2, within a few per
cent of MKL's native speed here. No library routes torch's CPU matrix products to another
BLAS, hence this module.

:func:`install` replaces ``torch.nn.functional.linear`` (``nn.Linear``, timm's layers, the
cosine head) and ``torch.nn.functional.scaled_dot_product_attention`` (timm's fused attention)
with versions whose forward and backward products are numpy matmuls, inside autograd Functions.
They handle CPU float32/float64 tensors; anything else (CUDA, other dtypes, attention masks,
dropout, causal attention, calls inside ``torch.func`` transforms) goes to torch's own function,
which in portable mode still runs on MKL's COMPATIBLE branch, so every path stays pinned.
Replacing two module attributes (rather than a ``TorchFunctionMode``, which sees every torch
call) keeps the rest of a training step free of Python overhead: a mode cost ~20 % of a step
here.

Attention is computed as ``softmax(q k^T * scale) v`` (Vaswani et al., 2017), the formula of
timm's non-fused path; ATen's softmax runs on its pinned AVX2 kernels.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

_FLOATS = (torch.float32, torch.float64)
# torch's own functions, for the inputs the replacements leave to torch
_ORIGINAL: dict[str, Any] = {
    "linear": F.linear,
    "scaled_dot_product_attention": F.scaled_dot_product_attention,
}


def _blasable(t: torch.Tensor) -> np.ndarray:
    """``t`` as a numpy view that numpy hands to BLAS (unit stride in one of its last two dims;
    otherwise numpy would run its own slower loop), copying only when it must."""
    t = t.detach()
    if t.dim() >= 2 and t.stride(-1) != 1 and t.stride(-2) != 1:
        t = t.contiguous()
    return t.numpy()


def _mm(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a @ b`` by numpy's BLAS (batched over leading dims, as ``np.matmul``)."""
    return torch.from_numpy(np.matmul(_blasable(a), _blasable(b)))


class _Linear(torch.autograd.Function):
    """``y = x W^T + b``; backward ``dx = g W``, ``dW = g^T x``, ``db = sum_rows g``."""

    @staticmethod
    def forward(ctx, x, weight, bias):  # type: ignore[override]
        x2 = x.reshape(-1, x.shape[-1])
        y = _mm(x2, weight.mT)
        if bias is not None:
            y += bias
        ctx.save_for_backward(x2, weight)
        ctx.x_shape = x.shape
        ctx.has_bias = bias is not None
        return y.reshape(*x.shape[:-1], weight.shape[0])

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        x2, weight = ctx.saved_tensors
        g2 = grad.reshape(-1, grad.shape[-1])
        gx = _mm(g2, weight).reshape(ctx.x_shape) if ctx.needs_input_grad[0] else None
        gw = _mm(g2.mT, x2) if ctx.needs_input_grad[1] else None
        gb = g2.sum(0) if ctx.has_bias and ctx.needs_input_grad[2] else None
        return gx, gw, gb


class _Matmul(torch.autograd.Function):
    """``c = a @ b`` for equal batch shapes; backward ``da = g b^T``, ``db = a^T g``."""

    @staticmethod
    def forward(ctx, a, b):  # type: ignore[override]
        ctx.save_for_backward(a, b)
        return _mm(a, b)

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        a, b = ctx.saved_tensors
        ga = _mm(grad, b.mT) if ctx.needs_input_grad[0] else None
        gb = _mm(a.mT, grad) if ctx.needs_input_grad[1] else None
        return ga, gb


def _ours(*tensors: Any) -> bool:
    """Plain CPU float tensors of one dtype, outside torch.func transforms (vmap, grad: their
    wrapped tensors have no numpy view, and these Functions define no vmap rule)."""
    if torch._C._are_functorch_transforms_active():
        return False
    return (
        all(
            isinstance(t, torch.Tensor) and t.device.type == "cpu" and t.dtype in _FLOATS
            for t in tensors
        )
        and len({t.dtype for t in tensors}) == 1
    )


def linear(input: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None):
    """``torch.nn.functional.linear`` with its products on numpy's BLAS (CPU floats)."""
    operands = (input, weight) if bias is None else (input, weight, bias)
    if _ours(*operands) and input.dim() >= 1 and weight.dim() == 2:  # tensors first (FX proxies)
        return _Linear.apply(input, weight, bias)
    return _ORIGINAL["linear"](input, weight, bias)


def scaled_dot_product_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attn_mask: torch.Tensor | None = None,
    dropout_p: float = 0.0,
    is_causal: bool = False,
    scale: float | None = None,
    enable_gqa: bool = False,
):
    """``softmax(q k^T * scale) v`` with its products on numpy's BLAS (CPU floats, no mask,
    no dropout, not causal, equal batch shapes); otherwise torch's own function."""
    plain = attn_mask is None and not dropout_p and not is_causal and not enable_gqa
    if (
        plain
        and _ours(query, key, value)
        and query.dim() >= 2
        and query.shape[:-2] == key.shape[:-2] == value.shape[:-2]
    ):
        s = 1.0 / math.sqrt(query.shape[-1]) if scale is None else scale
        attn = _Matmul.apply(query * s, key.mT).softmax(dim=-1)
        return _Matmul.apply(attn, value)
    return _ORIGINAL["scaled_dot_product_attention"](
        query,
        key,
        value,
        attn_mask=attn_mask,
        dropout_p=dropout_p,
        is_causal=is_causal,
        scale=scale,
        enable_gqa=enable_gqa,
    )


_PORTABLE = {"linear": linear, "scaled_dot_product_attention": scaled_dot_product_attention}


def install() -> None:
    """Route ``F.linear`` and ``F.scaled_dot_product_attention`` through numpy's BLAS in this
    process (idempotent). Callers look both up at call time, so this takes effect at once."""
    for name, fn in _PORTABLE.items():
        setattr(F, name, fn)


def uninstall() -> None:
    """Restore torch's own functions (idempotent)."""
    for name, fn in _ORIGINAL.items():
        setattr(F, name, fn)


def installed() -> bool:
    """Whether :func:`install` is in effect."""
    return all(getattr(F, name) is fn for name, fn in _PORTABLE.items())
