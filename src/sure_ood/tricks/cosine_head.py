"""Cosine Similarity Classifier (CSC), the SURE head.

Formula (docs/method.md#cosine-classifier; SURE: Li et al., "SURE: SUrvey REcipes for
building reliable and robust deep networks", CVPR 2024, ``model/classifier.py``; SSB-OSR
``model/classifier.py``)::

    h_hat = h / max(||h||_2, 1e-12)
    w_hat_c = w_c / max(||w_c||_2, 1e-12)
    z_c = tau * <h_hat, w_hat_c>          in [-tau, tau]

with a fixed (not learned) temperature ``tau`` (8 in SURE-OOD) and no bias. SSB-OSR adds an
undocumented ReAct-style clip ``h <- min(h, 100)`` applied **in eval mode only**, before the
normalisation (docs/method.md#cosine-classifier); here it is the ``feature_clip`` option
(``None`` = off).

Layout: the reference stores ``W`` as ``[D, C]``; we store ``weight`` as ``[C, D]`` so that it is
a drop-in for ``nn.Linear.weight`` (the feature cache's ``head_weight``).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["CosineHead", "replace_head"]


class CosineHead(nn.Module):
    """Cosine classifier ``z = tau * normalize(h) @ normalize(W, dim=1).T`` (no bias).

    Args:
        in_features: feature dimension D.
        num_classes: number of classes C.
        temperature: fixed scale tau (a buffer, so it is saved but never trained).
        feature_clip: if not ``None``, features are clamped from above at this value before the
            normalisation, in eval mode only (SSB-OSR uses 100 at test time).
    """

    bias: None

    def __init__(
        self,
        in_features: int,
        num_classes: int,
        temperature: float = 8.0,
        feature_clip: float | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.in_features = in_features
        self.num_classes = num_classes
        self.out_features = num_classes  # nn.Linear-compatible attribute name
        self.feature_clip = feature_clip
        self.weight = nn.Parameter(
            torch.empty(num_classes, in_features, device=device, dtype=dtype)
        )
        self.bias = None
        self.register_buffer(
            "temperature", torch.tensor(float(temperature), device=device, dtype=dtype)
        )
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Initialise ``weight`` like a fresh ``nn.Linear(D, C)``: uniform(-1/sqrt(D), 1/sqrt(D)).

        (``kaiming_uniform_(a=sqrt(5))`` as nn.Linear does gives exactly this bound.)
        """
        bound = 1.0 / math.sqrt(self.in_features) if self.in_features > 0 else 0.0
        nn.init.uniform_(self.weight, -bound, bound)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        """Map features ``h`` [..., D] to logits [..., C] in ``[-tau, tau]``."""
        if not self.training and self.feature_clip is not None:
            h = h.clamp(max=self.feature_clip)
        h_hat = F.normalize(h, p=2.0, dim=-1, eps=1e-12)
        w_hat = F.normalize(self.weight, p=2.0, dim=1, eps=1e-12)
        return self.temperature * F.linear(h_hat, w_hat)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, num_classes={self.num_classes}, "
            f"temperature={float(self.temperature)}, feature_clip={self.feature_clip}"
        )


def replace_head(model: nn.Module, head: nn.Module) -> nn.Module:
    """Install ``head`` as the classifier of a timm model (in place; returns the model).

    Uses ``model.reset_classifier(C)`` first so that timm's bookkeeping (``num_classes``,
    training mode of the head) stays consistent, then assigns the new module to the
    classifier attribute named by the model's pretrained config (``"head"`` for timm's
    VisionTransformer / DeiT-III). Distilled models (two classifier names) get the head on
    ``head`` and a deep copy on ``head_dist``.
    """
    import copy

    num_classes = int(getattr(head, "num_classes", getattr(head, "out_features", 0)))
    if num_classes <= 0:
        raise ValueError("head must expose num_classes or out_features > 0")
    in_features = getattr(head, "in_features", None)
    feat_dim = getattr(model, "head_hidden_size", None) or getattr(model, "num_features", None)
    if in_features is not None and feat_dim is not None and in_features != feat_dim:
        raise ValueError(f"head expects {in_features} features, the model gives {feat_dim}")

    ref = next(iter(model.parameters()), None)
    if ref is not None:
        head = head.to(device=ref.device)
    if hasattr(model, "reset_classifier"):
        model.reset_classifier(num_classes)
    names: str | tuple[str, ...] = "head"
    cfg = getattr(model, "pretrained_cfg", None) or {}
    if cfg.get("classifier"):
        names = cfg["classifier"]
    if isinstance(names, str):
        names = (names,)
    for i, name in enumerate(names):
        if "." in name:
            raise ValueError(f"nested classifier name {name!r} is not supported")
        if not hasattr(model, name):
            raise AttributeError(f"model has no classifier attribute {name!r}")
        setattr(model, name, head if i == 0 else copy.deepcopy(head))
    if hasattr(model, "num_classes"):
        model.num_classes = num_classes
    head.train(model.training)
    return model
