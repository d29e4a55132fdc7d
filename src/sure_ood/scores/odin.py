"""ODIN: temperature scaling plus an input perturbation (needs the network).

y_hat = argmax z(x) (unscaled); loss = CE(z(x) / T, y_hat) (batch mean); g = sign(dloss/dx) with
">= 0 -> +1"; optionally g /= std per channel (OpenOOD: epsilon in [0, 1]-pixel units; the CP
code does not divide); x_tilde = x - epsilon * g; S = max_c softmax(z(x_tilde) / T)_c.
Liang et al., "Enhancing the Reliability of Out-of-distribution Image Detection in Neural
Networks", ICLR 2018. Defaults T = 1000, epsilon = 0.0014 (OpenOOD).

:func:`odin_scores` runs on the network (torch imported inside). The registered ``odin`` scorer
cannot score a feature cache: it reads the per-image scores that the ``odin`` rule stored under
the cache key ``odin_score``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from sure_ood.cache import FeatureCache
from sure_ood.io import InputError
from sure_ood.scores.scorer import Scorer, register

ODIN_KEY = "odin_score"


def odin_scores(
    model: Any,
    images: Any,
    temperature: float = 1000.0,
    epsilon: float = 0.0014,
    std: Sequence[float] | None = None,
) -> np.ndarray:
    """ODIN score of a batch of images (tensor [B, ch, H, W]); float64 [B], higher = ID.

    ``model`` maps images to logits and is used as it is (call ``.eval()`` first); its
    parameters receive no gradient. ``std`` (per channel) divides the gradient sign (OpenOOD).
    """
    import torch
    import torch.nn.functional as F

    if epsilon == 0:
        # x - 0 * sign(grad) is x: temperature-scaled MSP (the reference code's setting),
        # one forward and no input gradient (no activations kept for a backward)
        with torch.no_grad():
            z = model(images).float()
            return torch.softmax(z / temperature, dim=1).max(dim=1).values.double().cpu().numpy()
    x = images.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        logits = model(x)
        y_hat = logits.argmax(dim=1).detach()
        loss = F.cross_entropy(logits / temperature, y_hat)
        (grad,) = torch.autograd.grad(loss, x)
    g = torch.where(grad >= 0, 1.0, -1.0).to(x.dtype)
    if std is not None:
        s = torch.as_tensor(std, dtype=x.dtype, device=x.device)
        if s.numel() != x.shape[1]:
            raise InputError(
                f"odin: std has {s.numel()} entries, images have {x.shape[1]} channels"
            )
        g = g / s.view(1, -1, *([1] * (x.ndim - 2)))
    with torch.no_grad():
        x_tilde = x.detach() - epsilon * g
        z = model(x_tilde)
        if z.dtype in (torch.float16, torch.bfloat16):
            z = z.float()  # softmax in at least float32 (AMP)
        p = torch.softmax(z / temperature, dim=1)
        return p.max(dim=1).values.double().cpu().numpy()


def read_odin_scores(cache: FeatureCache) -> np.ndarray:
    """The precomputed ODIN scores of a cache (key ``odin_score``)."""
    if ODIN_KEY not in cache.extra:
        raise InputError(
            f"{cache.source}: missing key {ODIN_KEY!r}; ODIN needs the network and runs in the "
            "'odin' rule (sure-ood odin), not on a feature cache"
        )
    s = np.asarray(cache.extra[ODIN_KEY], dtype=np.float64)
    if s.shape != (len(cache),):
        raise InputError(f"{cache.source}: {ODIN_KEY!r} has shape {s.shape}, want ({len(cache)},)")
    return s


@register
class ODIN(Scorer):
    name = "odin"
    needs = frozenset({"network"})
    description = (
        "temperature-scaled MSP of the input perturbed against the gradient (computed on the "
        "network by the 'odin' rule)"
    )
    paper = "Liang et al., ICLR 2018"
    reference = "https://github.com/facebookresearch/odin; OpenOOD `odin`"

    def __init__(self) -> None:  # T and epsilon belong to the 'odin' rule that ran the network
        super().__init__()

    def required_keys(self) -> tuple[str, ...]:
        return (ODIN_KEY,)

    def _score(self, cache: FeatureCache) -> np.ndarray:
        return read_odin_scores(cache)
