"""Deprecated: the helpers that lived here moved to their own modules.

:mod:`sure_ood.scores.scorer` (Scorer, PercentileScorer, the registry),
:mod:`sure_ood.scores.numeric` (probs, energy, l2_normalize, map_rows, chunks, the prior,
check_* ...), :mod:`sure_ood.scores.geometry` (head_logits, head_space, shaped_energy ...) and
:mod:`sure_ood.scores.array_cache` (arrays, ArrayCache, train_labelled). Kept only so that plugins
written against the old layout (docs/adding-a-method.md named this module) keep working: each
name still resolves, with a DeprecationWarning naming its new module. Nothing in sure-ood
imports this module.
"""

from __future__ import annotations

import importlib
import warnings
from typing import Any

_MOVED_TO = ("scorer", "numeric", "geometry", "array_cache")


def __getattr__(name: str) -> Any:
    for module in _MOVED_TO:
        mod = importlib.import_module(f"sure_ood.scores.{module}")
        if not name.startswith("__") and hasattr(mod, name):
            warnings.warn(
                f"sure_ood.scores.base.{name} is deprecated: import it from "
                f"sure_ood.scores.{module}",
                DeprecationWarning,
                stacklevel=2,
            )
            return getattr(mod, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
