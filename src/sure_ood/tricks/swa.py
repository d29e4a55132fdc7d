"""Stochastic Weight Averaging helpers (thin wrappers around ``torch.optim.swa_utils``).

Izmailov et al., "Averaging Weights Leads to Wider Optima and Better Generalization", UAI 2018;
SURE / SSB-OSR ``utils/optim.py``, ``main.py:101-138``; docs/method.md#learning-rate-schedule,
#swa.

* ``AveragedModel``: equal-weight running mean of the parameters (buffers are not averaged,
  torch's default), updated once per epoch: ``w_SWA(n) = (1/n) sum_{k<=n} w_k``.
* ``SWALR``: after ``k`` scheduler steps (one per epoch, after the epoch) the LR is
  ``swa_lr + (lr0 - swa_lr) * (1 + cos(pi * min(1, k / anneal_epochs))) / 2`` (``cos``) or
  ``lr0 + (swa_lr - lr0) * min(1, k / anneal_epochs)`` (``linear``); so epoch ``e`` trains with
  ``k = e - 1``. :func:`swalr_lr` is that closed form (documentation and tests only).
* ``update_bn``: recomputes BatchNorm statistics for the averaged model; a ViT has none, so
  :func:`maybe_update_bn` skips it (no data pass).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any, Literal

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.optim.swa_utils import SWALR, AveragedModel, update_bn

__all__ = ["make_swa", "maybe_update_bn", "swalr_lr"]


def make_swa(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    swa_lr: float,
    anneal_epochs: int = 10,
    anneal_strategy: Literal["cos", "linear"] = "cos",
) -> tuple[AveragedModel, SWALR]:
    """Build ``(AveragedModel(model), SWALR(optimizer, ...))`` with torch's defaults otherwise.

    Build the SWALR scheduler once, before the first epoch, on the optimizer (a :class:`SAM`
    works: its ``param_groups`` are the base optimizer's) and step it once after each epoch.
    """
    swa_model = AveragedModel(model)
    scheduler = SWALR(
        optimizer, swa_lr=swa_lr, anneal_epochs=anneal_epochs, anneal_strategy=anneal_strategy
    )
    return swa_model, scheduler


def maybe_update_bn(
    loader: Iterable[Any],
    swa_model: nn.Module,
    device: torch.device | str | None = None,
) -> bool:
    """Call ``torch.optim.swa_utils.update_bn`` only if ``swa_model`` has BatchNorm layers.

    Returns whether a data pass was made. ``loader`` yields tensors or tuples/lists whose first
    element is the input batch (``update_bn``'s contract).
    """
    if not any(isinstance(m, _BatchNorm) for m in swa_model.modules()):
        return False
    update_bn(loader, swa_model, device=device)
    return True


def swalr_lr(
    lr0: float,
    swa_lr: float,
    k: int,
    anneal_epochs: int = 10,
    anneal_strategy: Literal["cos", "linear"] = "cos",
) -> float:
    """LR after ``k`` SWALR steps from ``lr0`` (docs/method.md#learning-rate-schedule); epoch
    ``e`` uses ``k = e - 1``.

    ``cos``: ``swa_lr + (lr0 - swa_lr) * (1 + cos(pi * min(1, k / anneal_epochs))) / 2``.
    ``anneal_epochs == 0`` gives ``swa_lr`` at once (as torch does).
    """
    if k < 0 or anneal_epochs < 0:
        raise ValueError("k and anneal_epochs must be >= 0")
    t = 1.0 if anneal_epochs == 0 else min(1.0, k / anneal_epochs)
    if anneal_strategy == "cos":
        alpha = (1.0 - math.cos(math.pi * t)) / 2.0
    elif anneal_strategy == "linear":
        alpha = t
    else:
        raise ValueError(f"anneal_strategy must be 'cos' or 'linear', got {anneal_strategy!r}")
    return swa_lr * alpha + lr0 * (1.0 - alpha)
