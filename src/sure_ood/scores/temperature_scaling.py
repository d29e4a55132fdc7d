"""Temperature scaling: MSP at a temperature.

S(x) = max_c softmax(z / T)_c. With ``fit_temperature`` T minimises the NLL of the training
labels (Guo et al., "On Calibration of Modern Neural Networks", ICML 2017; OpenOOD
``temp_scaling`` fits on ID validation data); otherwise T = ``temperature``.
Reads: logits (+ labelled training logits when fitted).

Non-finite training rows (NaN/inf in their logits or features) are left out of the fitted
statistics, with a warning that counts them (T is fitted on the finite rows).
"""

from __future__ import annotations

import numpy as np

from sure_ood.cache import FeatureCache
from sure_ood.scores.base import Scorer, check_positive, log_probs, map_rows, probs, register


@register
class TemperatureScaling(Scorer):
    name = "temperature_scaling"
    needs = frozenset({"logits", "train"})
    fitted = True
    _state_keys = ("fitted_temperature",)

    def __init__(self, temperature: float = 1.0, fit_temperature: bool = True) -> None:
        super().__init__()
        check_positive(self.name, "temperature", temperature)
        self.temperature = float(temperature)
        self.fit_temperature = bool(fit_temperature)
        self.fitted = self.fit_temperature
        self.needs = frozenset({"logits", "train"} if self.fitted else {"logits"})
        self.fitted_temperature = self.temperature

    def _fit(self, train: FeatureCache | None, prior: np.ndarray | None) -> None:
        keep = train.labels >= 0
        z, y = np.asarray(train.logits[keep], dtype=np.float64), train.labels[keep]

        def nll(log_t: float) -> float:
            return float(-log_probs(z, np.exp(log_t))[np.arange(len(y)), y].mean())

        from scipy.optimize import minimize_scalar

        res = minimize_scalar(
            nll, bounds=(np.log(1e-2), np.log(1e3)), method="bounded", options={"xatol": 1e-6}
        )
        self.fitted_temperature = float(np.exp(res.x))

    def _score(self, cache: FeatureCache) -> np.ndarray:
        t = self.fitted_temperature
        return map_rows(
            len(cache), cache.num_classes, lambda s: probs(cache.logits[s], t).max(axis=1)
        )
