"""ViM: virtual-logit matching (energy minus the scaled residual outside the principal space).

o = -pinv(W) b (linear head with bias; else 0); P = top-``dim`` eigenvectors of the
uncentred covariance of (h - o) on training features, R its orthogonal complement;
r(h) = ||R^T (h - o)||_2; alpha = mean_train max_c z_c / mean_train r(h);
S(x) = logsumexp(z) - alpha r(h). ``dim`` >= D is capped to D // 2 (pytorch-ood's rule).
Wang et al., "ViM: Out-Of-Distribution with Virtual-logit Matching", CVPR 2022 (OpenOOD ``vim``,
dim 256 for ViT-B). Reads: logits, features, head (+ training logits and features).

Non-finite training rows (NaN/inf in their logits or features) are left out of the fitted
statistics, with a warning that counts them (origin and principal space come from the finite
rows).
"""

from __future__ import annotations

import logging

import numpy as np

from sure_ood.cache import FeatureCache
from sure_ood.scores.array_cache import train_labelled
from sure_ood.scores.numeric import as_f64, check_positive, chunks, energy
from sure_ood.scores.scorer import Scorer, register

log = logging.getLogger(__name__)


def vim_origin(cache: FeatureCache) -> np.ndarray:
    if cache.head_type == "linear" and cache.head_bias is not None:
        return -np.linalg.pinv(as_f64(cache.head_weight)) @ as_f64(cache.head_bias)
    return np.zeros(cache.features.shape[1])


@register
class ViM(Scorer):
    name = "vim"
    needs = frozenset({"logits", "features", "head", "train"})
    description = (
        "energy minus the scaled norm of the feature outside its principal subspace (virtual logit)"
    )
    paper = "Wang et al., CVPR 2022"
    reference = "https://github.com/haoqiwang/vim; OpenOOD `vim`"
    cosine_head = "no bias, so the origin is 0 (o = -pinv(W) b needs a linear head with bias)."
    _state_keys = ("origin", "residual_basis", "alpha")

    def __init__(self, dim: int = 256) -> None:
        super().__init__()
        check_positive(self.name, "dim", dim)
        self.dim = int(dim)

    def _fit(self, train: FeatureCache | None, prior: np.ndarray | None) -> None:
        from sklearn.covariance import EmpiricalCovariance

        h, logits, _ = train_labelled(train)
        d = h.shape[1]
        dim = self.dim
        if dim >= d:
            dim = d // 2
            log.warning("vim: dim=%d >= feature dimension %d; using dim=%d", self.dim, d, dim)
        self.origin = vim_origin(train)
        x = h - self.origin
        cov = EmpiricalCovariance(assume_centered=True).fit(x).covariance_
        eig_vals, eig_vecs = np.linalg.eigh(cov)  # ascending
        self.residual_basis = np.ascontiguousarray(eig_vecs[:, : d - dim])
        resid = np.linalg.norm(x @ self.residual_basis, axis=1)
        self.alpha = float(logits.max(axis=1).mean() / resid.mean())

    def _score(self, cache: FeatureCache) -> np.ndarray:
        out = np.empty(len(cache), dtype=np.float64)
        for sl in chunks(len(cache), cache.features.shape[1] + cache.num_classes):
            x = as_f64(cache.features[sl]) - self.origin
            resid = np.linalg.norm(x @ self.residual_basis, axis=1)
            out[sl] = energy(cache.logits[sl]) - self.alpha * resid
        return out
