"""Rate of rise: how fast temperature and smoke particles climb, from the shared features' rates.

Heat detectors have long used rate-of-rise as well as fixed temperature (UL 521 /
NFPA 72: 15 F = 8.3 C per minute): a flaming fire heats the room fast, a sunny
afternoon does not. The per-reading rates (``*_rate_per_s`` of
:mod:`train.features`, which handle irregular reading intervals) are noisy at
one reading a second, so the detector keeps a short EWMA of them per sensor and
has no opinion until the EWMA has seen ``1 / smoothing_alpha`` rates.

>>> import numpy as np
>>> from train.features import FEATURE_NAMES
>>> from ingest.settings import RateOfRiseSettings
>>> det = RateOfRise(RateOfRiseSettings(smoothing_alpha=0.5))
>>> def reading(deg_per_s):
...     f = np.zeros((1, len(FEATURE_NAMES))); f[0, FEATURE_NAMES.index("temperature_c_rate_per_s")] = deg_per_s
...     return ReadingBatch(np.array([0]), np.zeros(1), np.zeros((1, 12)), f)
>>> for rate in [0.2, 0.2, 0.2]:
...     b = reading(rate); det.learn_batch(b, det.score_batch(b))
>>> det.score_batch(reading(0.2)).observed[0].round(1).tolist()  # C/min, #/cm3/s
[12.0, 0.0]
"""

from __future__ import annotations

import math

import numpy as np

from actors.detectors.base import Detector, ReadingBatch, Scores, ratio_of
from ingest.settings import RateOfRiseSettings
from train.features import FEATURE_NAMES

# (feature, unit factor to the threshold's unit, name in alerts, group)
_RATES = (
    ("temperature_c_rate_per_s", 60.0, "temperature_c_per_min", "heat"),
    ("nc0_5_per_cm3_rate_per_s", 1.0, "nc0_5_per_cm3_per_s", "particles"),
)


class RateOfRise(Detector):
    """Smoothed rate of rise of temperature (C/min) and NC0.5 (#/cm3/s) against configured limits."""

    name = "rate_of_rise"
    sequential = True

    def __init__(self, settings: RateOfRiseSettings, capacity: int = 64) -> None:
        super().__init__({"smoothed": ((len(_RATES),), np.float64, np.nan), "count": ((), np.int64, 0)}, capacity)
        self.alpha = settings.smoothing_alpha
        self.min_rates = math.ceil(1.0 / settings.smoothing_alpha)
        self.columns = np.array([FEATURE_NAMES.index(f) for f, *_ in _RATES])
        self.factor = np.array([r[1] for r in _RATES])
        self.names = tuple(r[2] for r in _RATES)
        self.groups = tuple(r[3] for r in _RATES)
        self.limits = np.array([settings.temperature_c_per_min, settings.nc0_5_per_cm3_per_s])

    def _smoothed(self, batch: ReadingBatch) -> tuple[np.ndarray, np.ndarray]:
        rate = batch.features[:, self.columns] * self.factor
        previous = self.state["smoothed"][batch.slots]
        fresh = np.isfinite(rate)
        blended = np.where(np.isnan(previous), rate, self.alpha * rate + (1 - self.alpha) * previous)
        # A reading without a rate (first of a sensor, or a repeated timestamp) keeps the smoothed value.
        smoothed = np.where(fresh, blended, previous)
        count = self.state["count"][batch.slots] + fresh.all(axis=1)
        return smoothed, count

    def score_batch(self, batch: ReadingBatch) -> Scores:
        smoothed, count = self._smoothed(batch)
        observed = np.where((count >= self.min_rates)[:, None], smoothed, np.nan)
        return Scores(self.names, self.groups, observed, self.limits, ratio_of(observed, self.limits))

    def learn_batch(self, batch: ReadingBatch, scores: Scores) -> None:
        smoothed, count = self._smoothed(batch)
        self.state["smoothed"][batch.slots] = smoothed
        self.state["count"][batch.slots] = count
