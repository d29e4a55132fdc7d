"""Negated softmax entropy.

S(x) = -H(p) = sum_c p_c log p_c, p = softmax(z) (0 log 0 = 0). Predictive-entropy baseline,
e.g. Chan et al., "Entropy Maximization and Meta Classification for OOD Detection in Semantic
Segmentation", ICCV 2021 (pytorch-ood ``Entropy``). Reads: logits.
"""

from __future__ import annotations

import numpy as np

from sure_ood.cache import FeatureCache
from sure_ood.scores.numeric import log_probs, map_rows
from sure_ood.scores.scorer import Scorer, register


@register
class NegEntropy(Scorer):
    name = "entropy"
    needs = frozenset({"logits"})
    description = "negated entropy of the softmax"
    paper = "Chan et al., ICCV 2021"
    reference = "pytorch-ood `Entropy` (https://github.com/kkirchheim/pytorch-ood)"

    def __init__(self) -> None:
        super().__init__()

    def _score(self, cache: FeatureCache) -> np.ndarray:
        def neg_entropy(sl: slice) -> np.ndarray:
            logp = log_probs(cache.logits[sl])
            return (np.exp(logp) * logp).sum(axis=1)

        return map_rows(len(cache), cache.num_classes, neg_entropy)
