"""Training tricks of the SURE recipe, each a small pure function or module (docs/method.md).

Composed by the training engine (:mod:`sure_ood.training.engine`); switches live in the recipe
config.
"""

from .cosine_head import CosineHead, replace_head
from .crl import CorrectnessHistory, crl_loss
from .regmixup import has_batchnorm, regmixup_loss, sample_lam_perm
from .sam import SAM
from .sure_step import sure_loss, sure_step
from .swa import make_swa, maybe_update_bn, swalr_lr

__all__ = [
    "SAM",
    "CorrectnessHistory",
    "CosineHead",
    "crl_loss",
    "has_batchnorm",
    "make_swa",
    "maybe_update_bn",
    "regmixup_loss",
    "replace_head",
    "sample_lam_perm",
    "sure_loss",
    "sure_step",
    "swalr_lr",
]
