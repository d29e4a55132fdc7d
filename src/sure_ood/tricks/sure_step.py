"""One SURE training iteration: RegMixup + CRL loss, optimised by SAM (or any optimizer).

docs/method.md#training-objective and #sam (SURE ``train.py:91-165``; SSB-OSR
``train.py:94-165``). The loss of one evaluation is::

    L = CE(f(x), y) + eta * [lam CE(f(x_mix), y) + (1 - lam) CE(f(x_mix), y[perm])]
        + lambda_crl * L_CRL(f(x))

With SAM (rho > 0): pass 1 evaluates L at w and back-propagates, ``first_step`` moves to
w + e(w); pass 2 re-evaluates the FULL L at w + e(w) (fresh lam / perm, fresh dropout) and
back-propagates; ``second_step`` restores w and takes the base step with pass-2 gradients.
Otherwise one pass and ``optimizer.step()``. The train accuracy and the CRL correctness
history use the pass-1 clean logits and are updated after the step.

Deviation from the reference (RNG only): the reference draws one unused (lam, perm) before the
real one in every loss evaluation; we do not.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from .crl import CorrectnessHistory, crl_loss
from .regmixup import RNG, regmixup_loss
from .sam import SAM

__all__ = ["sure_loss", "sure_step"]

Criterion = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def sure_loss(
    model: nn.Module | Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    y: torch.Tensor,
    indices: torch.Tensor | None,
    criterion: Criterion,
    *,
    mixup_weight: float,
    mixup_beta: float,
    crl_weight: float,
    crl_history: CorrectnessHistory | None,
    generator: RNG = None,
    single_forward: bool | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The combined loss of one evaluation (docs/method.md#training-objective) and the clean
    logits (with graph).

    The CRL term is only computed when ``crl_weight > 0`` (with weight 0 it adds exactly 0).
    """
    loss, clean_logits = regmixup_loss(
        model,
        x,
        y,
        criterion,
        mixup_weight,
        mixup_beta,
        generator=generator,
        single_forward=single_forward,
    )
    if crl_weight > 0:
        if crl_history is None or indices is None:
            raise ValueError("crl_weight > 0 needs crl_history and dataset indices")
        loss = loss + crl_weight * crl_loss(clean_logits, indices, crl_history)
    return loss, clean_logits


def _checked(loss: torch.Tensor, where: str) -> float:
    value = float(loss.detach())
    if not math.isfinite(value):
        raise FloatingPointError(f"non-finite training loss {value} ({where})")
    return value


def sure_step(
    model: nn.Module | Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    y: torch.Tensor,
    indices: torch.Tensor | None,
    criterion: Criterion,
    optimizer: torch.optim.Optimizer,
    *,
    mixup_weight: float,
    mixup_beta: float,
    crl_weight: float,
    crl_history: CorrectnessHistory | None,
    generator: RNG = None,
    single_forward: bool | None = None,
) -> dict[str, Any]:
    """One training iteration (the model must already be in train mode).

    Args:
        model, x, y: network, input batch, integer labels.
        indices: dataset indices of the batch (for the CRL history; may be ``None`` when there
            is no history).
        criterion: e.g. ``nn.CrossEntropyLoss(label_smoothing=0.1)``.
        optimizer: a :class:`SAM` (two passes when ``rho > 0``) or any torch optimizer.
        mixup_weight, mixup_beta: RegMixup eta and beta (0.2 and 10 in SURE-OOD).
        crl_weight: CRL weight (0 in SURE-OOD); ``crl_history`` is updated whenever given.
        generator: RNG for the mixup draws.
        single_forward: see :func:`regmixup_loss`.

    Returns:
        ``{"loss": pass-1 loss (float), "loss_pass2": float or None,
        "clean_logits": pass-1 clean logits (detached), "n_correct": int}``.

    Raises:
        FloatingPointError: if a pass gives a non-finite loss (weights are left at ``w``,
            not updated).
    """

    def evaluate() -> tuple[torch.Tensor, torch.Tensor]:
        return sure_loss(
            model,
            x,
            y,
            indices,
            criterion,
            mixup_weight=mixup_weight,
            mixup_beta=mixup_beta,
            crl_weight=crl_weight,
            crl_history=crl_history,
            generator=generator,
            single_forward=single_forward,
        )

    optimizer.zero_grad(set_to_none=True)
    loss, clean_logits = evaluate()
    loss_value = _checked(loss, "pass 1")
    loss.backward()
    loss2_value: float | None = None
    if isinstance(optimizer, SAM) and optimizer.perturbs:

        def closure() -> float:
            loss2, _ = evaluate()
            value = _checked(loss2, "SAM pass 2")
            loss2.backward()
            return value

        loss2_value = optimizer.step(closure)
    else:
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)

    clean_logits = clean_logits.detach()
    correct = clean_logits.argmax(dim=1) == y
    if crl_history is not None:
        if indices is None:
            raise ValueError("crl_history given without dataset indices")
        crl_history.update(indices, correct)
    return {
        "loss": loss_value,
        "loss_pass2": loss2_value,
        "clean_logits": clean_logits,
        "n_correct": int(correct.sum()),
    }
