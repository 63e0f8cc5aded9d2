"""Silent sensor: no reading for ``after_s`` seconds of wall clock since the sensor's last arrival.

Silence is the absence of readings, so it is found by a timer
(:meth:`SilentSensor.silent`, called from the engine's ``tick``) rather than by
scoring a reading; every reading that arrives scores 0 (the sensor is talking)
and moves the sensor's last arrival. The clock is the ingest (arrival) clock,
not event time: a sensor with a wrong clock that keeps sending is not silent.

>>> import numpy as np
>>> from ingest.settings import SilentSettings
>>> det = SilentSensor(SilentSettings(after_s=60.0))
>>> b = ReadingBatch(np.array([0, 1]), np.array([100.0, 100.0]), np.zeros((2, 12)), np.zeros((2, 0)),
...                  arrivals=np.array([1000.0, 1030.0]))
>>> det.learn_batch(b, det.score_batch(b))
>>> det.silent(1075.0, np.array([0, 1])).tolist()
[0]
"""

from __future__ import annotations

import numpy as np

from actors.detectors.base import Detector, ReadingBatch, Scores
from ingest.settings import SilentSettings


class SilentSensor(Detector):
    """Remembers each sensor's last arrival and event time; :meth:`silent` lists the quiet ones."""

    name = "silent"
    sequential = True

    def __init__(self, settings: SilentSettings, capacity: int = 64) -> None:
        super().__init__({"last_arrival": ((), np.float64, np.nan), "last_event": ((), np.float64, np.nan)},
                         capacity)
        self.after_s = settings.after_s

    def score_batch(self, batch: ReadingBatch) -> Scores:
        n = len(batch)
        zeros = np.zeros((n, 1))
        return Scores(("silence_s",), ("silent",), zeros, np.array([self.after_s]), zeros.copy())

    def learn_batch(self, batch: ReadingBatch, scores: Scores) -> None:
        if batch.arrivals is None:
            raise ValueError("the silent-sensor detector needs arrival times")
        self.state["last_arrival"][batch.slots] = np.fmax(self.state["last_arrival"][batch.slots], batch.arrivals)
        self.state["last_event"][batch.slots] = batch.timestamps

    def silent(self, now: float, slots: np.ndarray) -> np.ndarray:
        """Those of ``slots`` whose last arrival is at least ``after_s`` before ``now``."""
        last = self.state["last_arrival"][slots]
        return slots[np.isfinite(last) & (now - last >= self.after_s)]
