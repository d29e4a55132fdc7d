"""Sharpness-Aware Minimisation (SAM) as an optimizer wrapper.

Foret et al., "Sharpness-Aware Minimization for Efficiently Improving Generalization",
ICLR 2021; adaptive variant (ASAM): Kwon et al., ICML 2021. Semantics of the davda54/sam
implementation used by SURE and SSB-OSR (``utils/sam.py``; docs/method.md#sam)::

    g     = grad L(w)                                   (pass 1, done by the caller)
    T_w   = |w| if adaptive else 1                      (elementwise)
    e(w)  = rho * T_w^2 * g / (||T_w * g||_2 + 1e-12)   (global L2 over params with a grad)
    w    <- w + e(w)                                    first_step
    g'    = grad L(w + e(w))                            (pass 2)
    w    <- restore w; base_optimizer.step() with g'    second_step

Differences from davda54/sam, on purpose:

* ``state_dict()`` / ``load_state_dict()`` save and restore the **base optimizer's** state
  (SGD momentum buffers, ...) so that a resume is exact; davda54's saves only SAM's own state.
* The perturbation backup is kept outside ``state`` (it is transient, never checkpointed).
* ``rho == 0`` makes ``step()`` exactly the base optimizer's step (no perturbation pass needed;
  a closure, if given, is not evaluated twice).

``param_groups`` is the same list as the base optimizer's, so LR schedulers built on the SAM
object (SWALR, CosineAnnealingLR) drive the base optimizer's learning rate.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch.nn.utils import get_total_norm

__all__ = ["SAM"]


class SAM(torch.optim.Optimizer):
    """SAM around any ``torch.optim.Optimizer`` class.

    Args:
        params: parameters or parameter groups.
        base_optimizer: optimizer **class** (e.g. ``torch.optim.SGD``).
        rho: neighbourhood radius (0.05 in SURE-OOD). ``0`` = plain base optimizer.
        adaptive: ASAM scaling by ``|w|``.
        **kwargs: passed to ``base_optimizer`` (lr, momentum, weight_decay, ...).

    Usage (two passes)::

        loss_fn(model(x), y).backward()
        opt.first_step(zero_grad=True)
        loss_fn(model(x), y).backward()
        opt.second_step(zero_grad=True)

    or ``opt.step(closure)`` after the first backward, ``closure`` doing the second forward and
    backward.
    """

    def __init__(
        self,
        params: Iterable[torch.Tensor] | Iterable[dict[str, Any]],
        base_optimizer: type[torch.optim.Optimizer],
        rho: float = 0.05,
        adaptive: bool = False,
        **kwargs: Any,
    ) -> None:
        if rho < 0:
            raise ValueError(f"Invalid rho, should be non-negative: {rho}")
        defaults = dict(rho=rho, adaptive=adaptive, **kwargs)
        super().__init__(params, defaults)
        self.base_optimizer = base_optimizer(self.param_groups, **kwargs)
        self.param_groups = self.base_optimizer.param_groups
        self.state = self.base_optimizer.state
        self.defaults.update(self.base_optimizer.defaults)
        self._backup: dict[torch.Tensor, torch.Tensor] = {}
        self._perturbed = False

    @property
    def perturbs(self) -> bool:
        """True when some parameter group has ``rho > 0`` (a real two-pass SAM step)."""
        return any(group["rho"] > 0 for group in self.param_groups)

    def _params_with_grad(self) -> list[tuple[dict[str, Any], torch.Tensor]]:
        return [(g, p) for g in self.param_groups for p in g["params"] if p.grad is not None]

    @torch.no_grad()
    def _grad_norm(self) -> torch.Tensor:
        """Global L2 norm of ``T_w * g`` over every parameter that has a gradient."""
        items = self._params_with_grad()
        if not items:
            return torch.zeros(())
        tensors = [(p.abs() * p.grad) if g["adaptive"] else p.grad for g, p in items]
        return get_total_norm(tensors, norm_type=2.0)

    @torch.no_grad()
    def first_step(self, zero_grad: bool = False) -> None:
        """Save ``w`` and move to ``w + e(w)`` (uses the current gradients)."""
        if self._perturbed:
            raise RuntimeError("first_step called twice without second_step")
        grad_norm = self._grad_norm()
        for group in self.param_groups:
            scale = group["rho"] / (grad_norm + 1e-12)
            for p in group["params"]:
                if p.grad is None:
                    continue
                buf = self._backup.get(p)
                if buf is None or buf.shape != p.shape or buf.device != p.device:
                    buf = self._backup[p] = torch.empty_like(p)
                buf.copy_(p)
                if group["adaptive"]:
                    e_w = p.pow(2).mul_(p.grad).mul_(scale.to(p))
                else:
                    e_w = p.grad * scale.to(p)
                p.add_(e_w)
        self._perturbed = True
        if zero_grad:
            self.zero_grad()

    @torch.no_grad()
    def restore(self) -> None:
        """Put back the weights saved by :meth:`first_step` (no-op if not perturbed)."""
        if not self._perturbed:
            return
        for group in self.param_groups:
            for p in group["params"]:
                buf = self._backup.get(p)
                if buf is not None:
                    p.copy_(buf)
        self._perturbed = False

    @torch.no_grad()
    def second_step(self, zero_grad: bool = False) -> None:
        """Restore ``w`` and take the base optimizer's step with the current gradients."""
        self.restore()
        self.base_optimizer.step()
        if zero_grad:
            self.zero_grad()

    def step(self, closure: Callable[[], Any] | None = None) -> Any:  # type: ignore[override]
        """One SAM update; gradients of ``L(w)`` must already be in ``.grad``.

        ``closure`` must zero nothing itself and do the second forward + backward at the
        perturbed weights; its return value is returned. Without a closure this is only valid
        when ``rho == 0`` (then exactly ``base_optimizer.step()``). If the closure raises, the
        weights are restored and no update is taken.
        """
        if not self.perturbs:
            self.base_optimizer.step()
            return None
        if closure is None:
            raise RuntimeError("SAM with rho > 0 requires a closure (the second pass)")
        self.first_step(zero_grad=True)
        try:
            with torch.enable_grad():
                out = closure()
        except BaseException:
            self.restore()
            raise
        self.second_step()
        return out

    def state_dict(self) -> dict[str, Any]:
        """The base optimizer's state dict (its groups also carry ``rho`` and ``adaptive``)."""
        return self.base_optimizer.state_dict()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load a :meth:`state_dict` (base state incl. momentum buffers, rho, lr, ...)."""
        self.base_optimizer.load_state_dict(state_dict)
        self.param_groups = self.base_optimizer.param_groups
        self.state = self.base_optimizer.state
        self._backup.clear()
        self._perturbed = False
