"""RegMixup: mixup used as a regulariser on top of the clean cross-entropy.

Formula (docs/method.md#training-objective; Pinto et al., "RegMixup: Mixup as a Regularizer
Can Surprisingly Improve Accuracy and Out Distribution Robustness", NeurIPS 2022; SURE
``train.py:7-24``)::

    lam ~ Beta(beta, beta)            one draw per loss evaluation
    perm = randperm(B)                one permutation per batch
    x_mix = lam * x + (1 - lam) * x[perm]
    L = CE(f(x), y) + weight * [lam * CE(f(x_mix), y) + (1 - lam) * CE(f(x_mix), y[perm])]

Labels are not mixed into a soft target; the mixed logits are scored against both label sets
and the two losses interpolated (identical to a soft target for plain CE, and still the same
linear combination with label smoothing). ``criterion`` is used for all three terms.

Performance: with ``single_forward`` the clean and mixed batches go through ONE forward of
``torch.cat([x, x_mix])``. That is exactly equivalent to two forwards only when the model has
no batch-dependent layers (ViT: LayerNorm is per sample, fine; BatchNorm is not: its batch
statistics and running-stat updates would differ). ``single_forward=None`` (default) picks the
single forward unless the model contains BatchNorm layers.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

__all__ = ["RNG", "has_batchnorm", "regmixup_loss", "sample_lam_perm"]

RNG = torch.Generator | np.random.Generator | None


def has_batchnorm(model: object) -> bool:
    """True if ``model`` is an ``nn.Module`` containing any BatchNorm layer."""
    return isinstance(model, nn.Module) and any(isinstance(m, _BatchNorm) for m in model.modules())


def sample_lam_perm(
    batch_size: int,
    beta: float,
    generator: RNG = None,
    device: torch.device | str | None = None,
) -> tuple[float, torch.Tensor]:
    """Draw ``lam ~ Beta(beta, beta)`` and a permutation of ``range(batch_size)``.

    Reproducible from the RNG state: with a ``torch.Generator`` (or ``None`` = torch's global
    RNG) a 62-bit seed is drawn from it to seed a numpy ``Beta`` draw (torch's Beta sampler
    takes no generator), and ``randperm`` uses the generator directly; with a
    ``numpy.random.Generator`` both come from it. Saving the generator's state therefore
    makes the whole sequence resumable.
    """
    if beta <= 0:
        raise ValueError(f"mixup beta must be > 0, got {beta}")
    if isinstance(generator, np.random.Generator):
        lam = float(generator.beta(beta, beta))
        perm = torch.from_numpy(generator.permutation(batch_size))
    else:
        gen_device = generator.device if generator is not None else torch.device("cpu")
        seed = int(torch.randint(0, 2**62, (1,), generator=generator, device=gen_device).item())
        lam = float(np.random.default_rng(seed).beta(beta, beta))
        perm = torch.randperm(batch_size, generator=generator, device=gen_device)
    if device is not None:
        perm = perm.to(device)
    return lam, perm


def regmixup_loss(
    model_or_fn: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    y: torch.Tensor,
    criterion: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    weight: float,
    beta: float,
    generator: RNG = None,
    lam: float | None = None,
    perm: torch.Tensor | None = None,
    single_forward: bool | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """RegMixup loss ``CE(f(x), y) + weight * L_mix`` (see module docstring).

    Args:
        model_or_fn: the network f (any callable batch -> logits).
        x, y: clean inputs [B, ...] and integer labels [B].
        criterion: loss on (logits, labels) with a mean reduction (e.g. CE, label smoothing 0.1).
        weight: eta, the mixup weight (0.2 in SURE-OOD). ``0`` = clean forward only, no RNG use.
        beta: Beta(beta, beta) parameter (10 in SURE-OOD).
        generator: RNG for lam and perm (see :func:`sample_lam_perm`).
        lam, perm: fix the mixing coefficient / permutation (tests); drawn when ``None``.
        single_forward: run clean + mixed as one concatenated forward (``None``: yes unless the
            model has BatchNorm).

    Returns:
        ``(loss, clean_logits)``; ``clean_logits`` keep their graph (CRL and accuracy use them).
    """
    if weight < 0:
        raise ValueError(f"mixup weight must be >= 0, got {weight}")
    if weight == 0:
        logits = model_or_fn(x)
        return criterion(logits, y), logits

    b = x.shape[0]
    if lam is None or perm is None:
        lam_s, perm_s = sample_lam_perm(b, beta, generator, device=x.device)
        lam = lam_s if lam is None else lam
        perm = perm_s if perm is None else perm
    perm = perm.to(x.device)
    x_mix = lam * x + (1.0 - lam) * x[perm]
    if single_forward is None:
        single_forward = not has_batchnorm(model_or_fn)
    if single_forward:
        out = model_or_fn(torch.cat([x, x_mix], dim=0))
        clean_logits, mix_logits = out[:b], out[b:]
    else:
        clean_logits = model_or_fn(x)
        mix_logits = model_or_fn(x_mix)
    loss_mix = lam * criterion(mix_logits, y) + (1.0 - lam) * criterion(mix_logits, y[perm])
    return criterion(clean_logits, y) + weight * loss_mix, clean_logits
