"""Stuck sensor: a signal that repeats exactly the same value for a window of readings.

Every watched signal has noise larger than its resolution (temperature to
0.001 C, the SGP30 raw ticks jitter by several ticks, SPS30 mass concentrations
by about 10 %), so a value repeated ``window_readings`` times in a row means a
frozen element or firmware, not calm air. A value at the bottom of the
measurement's range (a clean-air 0 of a particle channel) is not counted:
repeating 0 is what a working sensor does in clean air. The SGP30's TVOC and
eCO2 sit flat at 0 ppb / 400 ppm for long periods in clean air and are not
watched by default.

>>> import numpy as np
>>> from ingest.settings import StuckSettings
>>> det = StuckSignal(StuckSettings(window_readings=3, signals=["temperature_c"]))
>>> def reading(temp):
...     values = np.ones((1, 12)); values[0, 0] = temp
...     return ReadingBatch(np.array([0]), np.zeros(1), values, np.zeros((1, 0)))
>>> seen = []
>>> for temp in [20.5, 20.5, 20.5, 20.6]:
...     b = reading(temp); s = det.score_batch(b); det.learn_batch(b, s); seen.append(float(s.observed[0, 0]))
>>> seen  # identical readings in a row; 3 fires
[1.0, 2.0, 3.0, 1.0]
"""

from __future__ import annotations

import numpy as np

from actors.detectors.base import Detector, ReadingBatch, Scores, ratio_of
from ingest.schema import FIELD_BY_NAME, MEASUREMENTS
from ingest.settings import StuckSettings


class StuckSignal(Detector):
    """Counts identical consecutive values of each watched signal; fires at ``window_readings``."""

    name = "stuck"
    sequential = True

    def __init__(self, settings: StuckSettings, capacity: int = 64) -> None:
        k = len(settings.signals)
        super().__init__({"last": ((k,), np.float64, np.nan), "run": ((k,), np.int64, 0)}, capacity)
        self.names = tuple(settings.signals)
        self.groups = ("stuck",) * k
        self.columns = np.array([MEASUREMENTS.index(s) for s in settings.signals], dtype=np.int64)
        self.floor = np.array([max(FIELD_BY_NAME[s].low, 0.0) for s in settings.signals])
        self.window = np.full(k, float(settings.window_readings))

    def _runs(self, batch: ReadingBatch) -> tuple[np.ndarray, np.ndarray]:
        x = batch.values[:, self.columns]
        same = x == self.state["last"][batch.slots]  # NaN (no previous reading) is never equal
        return x, np.where(same, self.state["run"][batch.slots] + 1, 1)

    def score_batch(self, batch: ReadingBatch) -> Scores:
        x, run = self._runs(batch)
        observed = np.where(x <= self.floor, 0.0, run.astype(np.float64))
        return Scores(self.names, self.groups, observed, self.window, ratio_of(observed, self.window))

    def learn_batch(self, batch: ReadingBatch, scores: Scores) -> None:
        x, run = self._runs(batch)
        self.state["last"][batch.slots] = x
        self.state["run"][batch.slots] = run
