"""Post-hoc OOD scores: one method per module, registered by name.

>>> from sure_ood import scores
>>> scorer = scores.get("energy", temperature=1.0).fit(train_cache)
>>> id_score = scorer.score(test_cache)        # float64 [N], higher = more in-distribution
>>> scores.get("msp").score(logits=z)          # numpy arrays, no file: only what it reads

Methods from other packages register through the entry-point group ``sure_ood.scores``
(:mod:`sure_ood.scores.plugins`, docs/adding-a-method.md).

Layout: :mod:`~sure_ood.scores.scorer` (the Scorer class and the registry),
:mod:`~sure_ood.scores.numeric` (softmax, energy, norms, the prior, parameter checks, row
chunks), :mod:`~sure_ood.scores.geometry` (linear and cosine heads),
:mod:`~sure_ood.scores.array_cache` (numpy arrays as a cache), then one module per method.

Importing this package imports numpy/scipy only (sklearn lazily when a method fits, numba when
a compiled kernel first runs); torch is imported only inside
:func:`sure_ood.scores.odin.odin_scores`.
"""

from __future__ import annotations

from sure_ood.scores import (  # noqa: F401  (each import registers its method)
    ash,
    dice,
    energy,
    entropy,
    fdbd,
    gen,
    gradnorm,
    gradnorm_closed,
    kl_matching,
    knn,
    mahalanobis,
    max_logit,
    msp,
    odin,
    react,
    relative_mahalanobis,
    rp_gradnorm,
    rp_msp,
    rw_energy,
    rw_odin,
    scale,
    she,
    temperature_scaling,
    vim,
)
from sure_ood.scores.array_cache import arrays
from sure_ood.scores.numeric import check_prior, prior_from_labels
from sure_ood.scores.scorer import (
    FIT_INPUTS,
    NEEDS,
    Scorer,
    available,
    get,
    method_class,
    needs_of,
    params_of,
    register,
)

__all__ = [
    "FIT_INPUTS",
    "NEEDS",
    "Scorer",
    "arrays",
    "available",
    "check_prior",
    "get",
    "method_class",
    "needs_of",
    "params_of",
    "prior_from_labels",
    "register",
]
