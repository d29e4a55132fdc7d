"""Mahalanobis distance to the closest class mean (shared covariance).

mu_c = mean training feature of class c; Sigma = covariance of the class-centred training
features (sklearn EmpiricalCovariance; precision by pseudo-inverse);
S(x) = -min_c (h - mu_c)^T Sigma^-1 (h - mu_c). Lee et al., "A Simple Unified Framework for
Detecting Out-of-Distribution Samples and Adversarial Attacks", NeurIPS 2018 (OpenOOD ``mds``,
no input pre-processing). Reads: features (+ labelled training features).

Non-finite training rows (NaN/inf in their logits or features) are left out of the fitted
statistics, with a warning that counts them (means and covariance come from the finite rows).
Refused when a class is left with no finite row: its mean would be missing.
"""

from __future__ import annotations

import numpy as np

from sure_ood.cache import FeatureCache
from sure_ood.io import InputError
from sure_ood.scores.array_cache import train_labelled
from sure_ood.scores.numeric import as_f64, chunks
from sure_ood.scores.scorer import Scorer, register


def class_means(h: np.ndarray, y: np.ndarray, num_classes: int, source: str) -> np.ndarray:
    counts = np.bincount(y, minlength=num_classes)
    if (counts == 0).any():
        missing = np.flatnonzero(counts == 0)[:10].tolist()
        raise InputError(f"{source}: no training images for classes {missing}")
    means = np.zeros((num_classes, h.shape[1]))
    np.add.at(means, y, h)
    return means / counts[:, None]


def shared_precision(centred: np.ndarray) -> np.ndarray:
    from sklearn.covariance import EmpiricalCovariance

    return EmpiricalCovariance(assume_centered=True).fit(centred).precision_


def min_class_distance(h: np.ndarray, means: np.ndarray, precision: np.ndarray) -> np.ndarray:
    """min_c (h - mu_c)^T P (h - mu_c), via h'Ph - 2 h'P mu_c + mu_c'P mu_c, chunked."""
    m_p = means @ precision  # [C, D]
    m_const = (m_p * means).sum(axis=1)  # [C]
    out = np.empty(h.shape[0], dtype=np.float64)
    for sl in chunks(h.shape[0], means.shape[0] + h.shape[1]):
        x = as_f64(h[sl])
        quad = ((x @ precision) * x).sum(axis=1)
        out[sl] = quad + (m_const[None, :] - 2.0 * x @ m_p.T).min(axis=1)
    return out


@register
class Mahalanobis(Scorer):
    name = "mahalanobis"
    needs = frozenset({"features", "train"})
    description = "minus the Mahalanobis distance to the closest class mean (shared covariance)"
    paper = "Lee et al., NeurIPS 2018"
    reference = "https://github.com/pokaxpoka/deep_Mahalanobis_detector; OpenOOD `mds`"
    per_class_fit = True
    _state_keys = ("means", "precision")

    def __init__(self) -> None:
        super().__init__()

    def _fit(self, train: FeatureCache | None, prior: np.ndarray | None) -> None:
        h, _, y = train_labelled(train)
        self.means = class_means(h, y, train.num_classes, train.source)
        self.precision = shared_precision(h - self.means[y])

    def _score(self, cache: FeatureCache) -> np.ndarray:
        return -min_class_distance(cache.features, self.means, self.precision)
