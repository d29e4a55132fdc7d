"""Temperature scaling: MSP at a temperature.

S(x) = max_c softmax(z / T)_c. With ``fit_temperature`` T minimises the NLL of the labels of
the held-out validation split (Guo et al., "On Calibration of Modern Neural Networks", ICML
2017; as OpenOOD ``temp_scaling``), searched in [0.01, 1000]; otherwise T = ``temperature``.
Not on the training split: a network that fits its training set (~100 % accuracy) drives the
NLL fit to the lower bound, and most test scores then tie at 1.0. A fit that ends at a bound
is logged as a warning. Reads: logits (+ labelled validation logits when fitted).

Non-finite validation rows (NaN/inf in their logits or features) are left out of the fit,
with a warning that counts them (T is fitted on the finite rows).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from sure_ood.cache import FeatureCache
from sure_ood.io import InputError
from sure_ood.scores.numeric import check_positive, log_probs, map_rows, probs
from sure_ood.scores.scorer import Scorer, register

log = logging.getLogger(__name__)
BOUNDS = (1e-2, 1e3)  # the temperature search interval


@register
class TemperatureScaling(Scorer):
    name = "temperature_scaling"
    needs = frozenset({"logits", "val"})
    description = "MSP at a temperature fitted by NLL on the held-out validation split"
    paper = "Guo et al., ICML 2017"
    reference = "https://github.com/gpleiss/temperature_scaling; OpenOOD `temp_scaling`"
    _state_keys = ("fitted_temperature",)

    def __init__(self, temperature: float = 1.0, fit_temperature: bool = True) -> None:
        super().__init__()
        check_positive(self.name, "temperature", temperature)
        self.temperature = float(temperature)
        self.fit_temperature = bool(fit_temperature)
        self.needs = self.needs_for(**self.params)
        self.fitted_temperature = self.temperature

    @classmethod
    def needs_for(cls, fit_temperature: bool = True, **params: Any) -> frozenset[str]:
        """Fitting the temperature reads the validation split; a fixed one reads logits only."""
        return cls.needs if fit_temperature else cls.needs - {"val"}

    def _fit(self, val: FeatureCache | None, prior: np.ndarray | None) -> None:
        keep = val.labels >= 0
        if not keep.any():
            raise InputError(f"{val.source}: no labelled images to fit the temperature on")
        z, y = np.asarray(val.logits[keep], dtype=np.float64), val.labels[keep]

        def nll(log_t: float) -> float:
            return float(-log_probs(z, np.exp(log_t))[np.arange(len(y)), y].mean())

        from scipy.optimize import minimize_scalar

        lo, hi = np.log(BOUNDS[0]), np.log(BOUNDS[1])
        res = minimize_scalar(nll, bounds=(lo, hi), method="bounded", options={"xatol": 1e-6})
        self.fitted_temperature = float(np.exp(res.x))
        # at a bound, or a bound is as good (the NLL went flat at 0 on separable logits)
        tol = 1e-9 * max(1.0, abs(res.fun))
        at_bound = min(res.x - lo, hi - res.x) < 1e-3 or min(nll(lo), nll(hi)) <= res.fun + tol
        if at_bound:
            log.warning(
                "temperature_scaling: the fitted temperature %.4g is at the bound of %s "
                "(%d validation images, accuracy %.1f %%): the fit did not converge inside it",
                self.fitted_temperature,
                BOUNDS,
                len(y),
                100.0 * float((z.argmax(axis=1) == y).mean()),
            )

    def _score(self, cache: FeatureCache) -> np.ndarray:
        t = self.fitted_temperature
        return map_rows(
            len(cache), cache.num_classes, lambda s: probs(cache.logits[s], t).max(axis=1)
        )
