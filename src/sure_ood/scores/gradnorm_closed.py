"""Closed-form GradNorm on the cached raw feature (the linear-head formula for any head).

S(x) = ||p^(T) - q||_1 * ||h||_1 / T, p^(T) = softmax(z / T) of the cached logits, h the raw
cached feature (unclipped), q uniform (``target: uniform``) or the training class prior
(``target: prior``). For a linear head and q uniform it equals true GradNorm (Huang et al.,
NeurIPS 2021); for a cosine head it is the SSB-OSR "pseudo-GradNorm"
(docs/method.md#rp-gradnorm), not the gradient of any layer. ``features: prenorm_features`` uses the
pre-final-norm feature instead. Reads: logits, features (+ prior).

Training rows: only their labels are read (the class prior), so non-finite logits or features
in them change nothing and all rows are kept.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from sure_ood.cache import FeatureCache
from sure_ood.scores.geometry import feature_matrix
from sure_ood.scores.numeric import check_choice, check_positive, row_l1, softmax_l1
from sure_ood.scores.scorer import Scorer, register


@register
class GradNormClosed(Scorer):
    name = "gradnorm_closed"
    needs = frozenset({"logits", "features"})
    description = (
        "closed-form GradNorm ||softmax(z / T) - q||_1 ||h||_1 / T on the raw cached feature, q "
        "uniform or the class prior"
    )
    paper = "Huang et al., NeurIPS 2021; Jiang et al., ICML 2023"
    reference = "https://github.com/LIYangggggg/SSB-OSR (test_osr_ood_TTA.py)"
    cosine_head = (
        "the linear-head formula applied to the raw feature with the cosine softmax: the SSB-OSR "
        "pseudo-GradNorm, not the gradient of any layer."
    )
    _state_keys = ("prior",)

    def __init__(
        self, temperature: float = 1.0, target: str = "uniform", features: str = "features"
    ) -> None:
        super().__init__()
        check_positive(self.name, "temperature", temperature)
        check_choice(self.name, "target", target, ("uniform", "prior"))
        check_choice(self.name, "features", features, ("features", "prenorm_features"))
        self.temperature = float(temperature)
        self.target = target
        self.features = features
        self.needs = self.needs_for(**self.params)

    @classmethod
    def needs_for(cls, target: str = "uniform", **params: Any) -> frozenset[str]:
        """``target: prior`` reads the class prior too (and so is fitted: it takes the prior)."""
        return cls.needs | {"prior"} if target == "prior" else cls.needs

    def required_keys(self) -> tuple[str, ...]:
        return ("prenorm_features",) if self.features == "prenorm_features" else ()

    def _fit(self, train: FeatureCache | None, prior: np.ndarray | None) -> None:
        self.prior = prior

    def _score(self, cache: FeatureCache) -> np.ndarray:
        h = feature_matrix(cache, self.features)
        q = self.prior if self.target == "prior" else 1.0 / cache.num_classes
        t = self.temperature

        return softmax_l1(cache.logits, q, t) * row_l1(h) / t
