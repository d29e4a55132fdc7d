"""RP+GradNorm, exactly as the CP / SSB-OSR code computes it (closed form, no backward).

S(x) = ||h||_1 * ||pi - p||_1 / (D * C), p = softmax(z) at T = 1 of the cached logits, h the raw
cached feature (for a cosine head: unclipped, the clip only enters the logits). Jiang et al.,
ICML 2023 (CP funcs.py:182-199); SSB-OSR test_osr_ood_TTA.py:50-55. Reads: logits, features,
prior.

Training rows: only their labels are read (the class prior), so non-finite logits or features
in them change nothing and all rows are kept.
"""

from __future__ import annotations

import numpy as np

from sure_ood.cache import FeatureCache
from sure_ood.scores.geometry import feature_matrix
from sure_ood.scores.numeric import check_choice, row_l1, softmax_l1
from sure_ood.scores.scorer import Scorer, register


@register
class RPGradNorm(Scorer):
    name = "rp_gradnorm"
    needs = frozenset({"logits", "features", "prior"})
    description = (
        "RP+GradNorm, the SURE-OOD score: ||h||_1 ||prior - softmax(z)||_1 / (D C) on the raw "
        "feature"
    )
    paper = "Jiang et al., ICML 2023"
    reference = (
        "https://github.com/tmlr-group/class_prior (funcs.py); "
        "https://github.com/LIYangggggg/SSB-OSR"
    )
    cosine_head = (
        "the raw (unclipped) feature with the softmax of the cosine logits, as SSB-OSR computes it."
    )
    _state_keys = ("prior",)

    def __init__(self, features: str = "features") -> None:
        super().__init__()
        check_choice(self.name, "features", features, ("features", "prenorm_features"))
        self.features = features

    def required_keys(self) -> tuple[str, ...]:
        return ("prenorm_features",) if self.features == "prenorm_features" else ()

    def _fit(self, train: FeatureCache | None, prior: np.ndarray | None) -> None:
        self.prior = prior

    def _score(self, cache: FeatureCache) -> np.ndarray:
        h = feature_matrix(cache, self.features)
        n_dims, n_classes = h.shape[1], cache.num_classes
        return row_l1(h) * softmax_l1(cache.logits, self.prior) / (n_dims * n_classes)
