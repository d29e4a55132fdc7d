"""Correctness Ranking Loss (CRL).

Moon et al., "Confidence-Aware Learning for Deep Neural Networks", ICML 2020; as used in SURE
(``train.py:26-88``) and SSB-OSR (``train.py:29-91``); docs/method.md#training-objective.
Off in SURE-OOD (weight 0), kept as an ablation.

Per training sample k a counter c_k counts how often its clean top-1 prediction was correct
(updated after every optimizer step from the pre-step clean logits, accumulated over epochs).
With ``m = min_k c_k`` over ALL training samples and ``M`` the max-correctness counter (1 during
epochs 1 and 2, then e-1 during epoch e)::

    c_bar_k = (c_k - m) / max(M - m, eps)   eps = 1 (the reference divides by M - m unguarded)
    kappa_i = max_c softmax(z_i)_c                  (clean logits, T = 1)
    j = (i + 1) mod B                               (the batch rolled by one: roll(., -1))
    t_i = sign(c_bar_i - c_bar_j),  mu_i = |c_bar_i - c_bar_j|
    L_CRL = (1/B) * sum_i max(0, -t_i * (kappa_i - kappa_j) + mu_i)

Pairs with t = 0 contribute 0 but count in the mean; gradients reach both kappa_i and kappa_j.
"""

from __future__ import annotations

import torch

__all__ = ["CorrectnessHistory", "crl_loss"]


class CorrectnessHistory:
    """Per-training-sample correctness counters, indexed by dataset index.

    Args:
        num_samples: size of the training set (indices are ``0 .. num_samples-1``).
        device: where the counters live (CPU by default; indices are moved there).
    """

    def __init__(self, num_samples: int, device: torch.device | str = "cpu") -> None:
        if num_samples <= 0:
            raise ValueError(f"num_samples must be > 0, got {num_samples}")
        self.correctness = torch.zeros(num_samples, dtype=torch.float64, device=device)
        self.max_correctness = 1

    def __len__(self) -> int:
        return self.correctness.numel()

    @torch.no_grad()
    def update(self, indices: torch.Tensor, correct: torch.Tensor) -> None:
        """Add ``correct`` (bool/0-1, [B]) to the counters of dataset ``indices`` [B]."""
        idx = indices.reshape(-1).to(device=self.correctness.device, dtype=torch.long)
        val = correct.reshape(-1).to(device=self.correctness.device, dtype=torch.float64)
        self.correctness.index_put_((idx,), val, accumulate=True)

    def end_epoch(self, epoch: int) -> None:
        """Call after epoch ``epoch`` (1-based): ``M += 1`` for every epoch > 1.

        So M = 1 during epochs 1 and 2 and M = e - 1 during epoch e (reference
        ``max_correctness_update``).
        """
        if epoch > 1:
            self.max_correctness += 1

    @torch.no_grad()
    def normalized(self, indices: torch.Tensor, eps: float = 1.0) -> torch.Tensor:
        """``c_bar = (c[indices] - m) / max(M - m, eps)`` with ``m`` the min over all samples.

        Counters and M are integers, so ``M - m >= 1`` whenever the reference is well defined and
        the default ``eps = 1`` changes nothing there; when ``M - m <= 0`` (every sample correct
        in every epoch so far, or m overtaking M late in an epoch: inf/NaN or sign-flipped in the
        reference) it keeps ``c_bar = c - m`` bounded instead of dividing by a tiny number.
        """
        idx = indices.reshape(-1).to(device=self.correctness.device, dtype=torch.long)
        m = self.correctness.min()
        denom = torch.clamp(self.max_correctness - m, min=eps)
        return (self.correctness[idx] - m) / denom

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Tensors only (safe for ``torch.load(weights_only=True)`` and safetensors)."""
        return {
            "correctness": self.correctness.clone(),
            "max_correctness": torch.tensor(self.max_correctness, dtype=torch.long),
        }

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        corr = state["correctness"]
        if corr.shape != self.correctness.shape:
            want = tuple(self.correctness.shape)
            raise ValueError(f"correctness has shape {tuple(corr.shape)}, expected {want}")
        self.correctness.copy_(corr.to(self.correctness))
        self.max_correctness = int(state["max_correctness"])


def crl_loss(
    logits: torch.Tensor,
    indices: torch.Tensor,
    history: CorrectnessHistory,
    eps: float = 1.0,
) -> torch.Tensor:
    """Correctness ranking loss on a batch of clean ``logits`` [B, C] (see module docstring).

    ``indices`` [B] are the samples' dataset indices into ``history``. Returns a scalar
    differentiable with respect to ``logits`` (both members of every pair).
    """
    kappa = torch.softmax(logits, dim=1).amax(dim=1)
    kappa_j = torch.roll(kappa, shifts=-1, dims=0)
    c_bar = history.normalized(indices, eps=eps).to(device=logits.device, dtype=kappa.dtype)
    c_bar_j = torch.roll(c_bar, shifts=-1, dims=0)
    target = torch.sign(c_bar - c_bar_j)
    margin = (c_bar - c_bar_j).abs()
    return torch.clamp(-target * (kappa - kappa_j) + margin, min=0).mean()
