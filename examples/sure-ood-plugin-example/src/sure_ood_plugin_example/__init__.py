"""Logit margin: the gap between the two largest logits, as a sure-ood method.

S(x) = z_(1) - z_(2), the largest minus the second largest logit: a confident, in-distribution
image has one clearly winning class. (A classic confidence baseline, e.g. the "margin" of
uncertainty sampling in active learning; here only to show how a plugin is written.)
"""

from __future__ import annotations

import numpy as np

from sure_ood.scores import Scorer


class LogitMargin(Scorer):
    name = "logit_margin"  # the entry point's name in pyproject.toml
    needs = frozenset({"logits"})  # what the method reads: test-cache logits only
    description = "largest minus second-largest logit"
    paper = "a classic confidence baseline (example plugin)"
    reference = "examples/sure-ood-plugin-example in the sure-ood repository"

    def __init__(self, scale: float = 1.0) -> None:  # hyper-parameters: keyword arguments
        super().__init__()
        self.scale = float(scale)

    def _score(self, cache) -> np.ndarray:
        top2 = np.sort(np.asarray(cache.logits, dtype=np.float64), axis=1)[:, -2:]
        return self.scale * (top2[:, 1] - top2[:, 0])  # [N], higher = more in-distribution
