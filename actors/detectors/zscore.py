"""Per-sensor EWMA mean/variance z-scores, one-sided in the direction a fire moves each signal.

Every sensor has its own baseline (a kitchen is not a server room), learnt as
an exponentially weighted mean and variance (West 1979 / Finch 2009 incremental
form). A reading is scored against the baseline *before* it. Until a sensor has
``warmup_readings`` readings the detector has no opinion (NaN), because a
baseline of a few readings makes every wiggle look extreme.

The standard deviation used is at least the signal's ``std_floor``: a simulated
or very steady sensor has a tiny variance, and without a floor a 1 % bump would
be "20 sigma". ``threshold x std_floor`` is therefore the smallest excess that
can fire, in the signal's units (log units for particles and TVOC).

For pollutants (``tracks_clean_air``), readings on the clean side of the
baseline (lower particles, higher SGP30 raw ticks) are learnt at the larger
``clean_alpha``, the way the SGP30's own
baseline compensation tracks the cleanest air it sees: the baseline is a low
expectile rather than the mean, and it recovers quickly from anything that
spoilt it. Readings that fire (or come close: half the threshold) are learnt
at a much smaller weight, and every deviation is clipped to three standard deviations
before it is learnt (a Huber-style robust EWMA), so an incident neither becomes
its own baseline nor inflates the variance that the next incident is judged
by, while a lasting change of the environment is still absorbed eventually.

>>> import numpy as np
>>> from ingest.schema import MEASUREMENTS
>>> from ingest.settings import ZScoreSettings, ZScoreSignal
>>> det = EwmaZScore(ZScoreSettings(warmup_readings=5, signals={
...     "temperature_c": ZScoreSignal(direction="up", std_floor=0.5, group="heat")}))
>>> def reading(temp):
...     values = np.zeros((1, len(MEASUREMENTS))); values[0, 0] = temp
...     return ReadingBatch(np.array([0]), np.zeros(1), values, np.zeros((1, 0)))
>>> for temp in [20.0, 20.1, 19.9, 20.0, 20.0]:
...     b = reading(temp); det.learn_batch(b, det.score_batch(b))
>>> round(float(det.score_batch(reading(23.0)).observed[0, 0]), 2)  # (23 - 20) / floor 0.5
6.0
"""

from __future__ import annotations

import numpy as np

from actors.detectors.base import Detector, ReadingBatch, Scores, ratio_of
from ingest.schema import MEASUREMENTS
from ingest.settings import ZScoreSettings

# Rows whose ratio reaches this share of the threshold are learnt at the reduced weight.
_GUARD_RATIO = 0.5
# Deviations beyond this many standard deviations are learnt as if they were this large.
_CLIP_Z = 3.0
# A spread wider than this many floors is taken as spoilt (e.g. learnt during a fire in warm-up).
_INFLATED = 5.0


class EwmaZScore(Detector):
    """One-sided z-score of each configured signal against the sensor's EWMA baseline."""

    name = "zscore"
    sequential = True

    def __init__(self, settings: ZScoreSettings, capacity: int = 64) -> None:
        k = len(settings.signals)
        super().__init__({
            "mean": ((k,), np.float64, np.nan),
            "var": ((k,), np.float64, 0.0),
            "count": ((), np.int64, 0),
        }, capacity)
        self.settings = settings
        signals = settings.signals
        self.names = tuple(signals)
        self.groups = tuple(s.group for s in signals.values())
        self.columns = np.array([MEASUREMENTS.index(n) for n in signals], dtype=np.int64)
        self.log = np.array([s.log for s in signals.values()])
        self.sign = np.array([1.0 if s.direction == "up" else -1.0 for s in signals.values()])
        self.floor = np.array([s.std_floor for s in signals.values()])
        self.tracks_clean = np.array([s.tracks_clean_air for s in signals.values()])
        self.thresholds = np.full(k, settings.threshold)

    def _transform(self, values: np.ndarray) -> np.ndarray:
        x = values[:, self.columns]
        # Particles and TVOC span orders of magnitude: compare them on a log scale (log1p keeps 0 valid).
        return np.where(self.log, np.log1p(np.maximum(x, 0.0)), x)

    def score_batch(self, batch: ReadingBatch) -> Scores:
        x = self._transform(batch.values)
        mean = self.state["mean"][batch.slots]
        std = np.maximum(np.sqrt(self.state["var"][batch.slots]), self.floor)
        z = self.sign * (x - mean) / std
        warm = self.state["count"][batch.slots] >= self.settings.warmup_readings
        z[~warm] = np.nan
        return Scores(self.names, self.groups, z, self.thresholds, ratio_of(z, self.thresholds))

    def learn_batch(self, batch: ReadingBatch, scores: Scores) -> None:
        slots = batch.slots
        x = self._transform(batch.values)
        count = self.state["count"][slots] + 1
        mean = self.state["mean"][slots]
        var = self.state["var"][slots]
        first = np.isnan(mean)
        diff = np.where(first, 0.0, x - mean)
        near = np.nan_to_num(scores.ratio, nan=0.0).max(axis=1, initial=0.0) >= _GUARD_RATIO
        base = np.where(near, self.settings.alpha * self.settings.anomalous_alpha_share, self.settings.alpha)
        base = np.broadcast_to(base[:, None], diff.shape)
        # Huber-style clipping after warm-up: one extreme reading (or a whole incident) moves the baseline
        # and inflates the variance by at most _CLIP_Z standard deviations' worth per reading.
        warming = (count <= self.settings.warmup_readings)[:, None]
        limit = _CLIP_Z * np.maximum(np.sqrt(var), self.floor)
        clipped = np.where(warming, diff, np.clip(diff, -limit, limit))
        # Cleaner than the baseline (the side a fire does not push): the mean follows fast and unclipped,
        # so a baseline spoilt by an incident (even one during warm-up) falls back to clean air in tens of
        # readings; and an inflated spread shrinks back as fast (a reading inside it is learnt at
        # clean_alpha), while it only grows at the slow rate.
        cleaner = (self.sign * diff < 0) & self.tracks_clean
        mean_alpha = np.where(cleaner, self.settings.clean_alpha, base)
        mean_step = np.where(cleaner, diff, clipped)
        # Fast shrinking only while the spread is implausibly wide for sensor noise (above _INFLATED x its
        # floor: spoilt by an incident); below that the variance is learnt symmetrically, unbiased.
        inflated = var > (_INFLATED * self.floor) ** 2
        inside = (clipped * clipped < var) & inflated
        var_alpha = np.where(inside, np.maximum(base, self.settings.clean_alpha), base)
        # Warm-up: a running average (weight 1/count) so the baseline settles in a few readings.
        running = 1.0 / count[:, None]
        mean_alpha = np.where(warming, np.maximum(mean_alpha, running), mean_alpha)
        var_alpha = np.where(warming, np.maximum(var_alpha, running), var_alpha)
        self.state["mean"][slots] = np.where(first, x, mean + mean_alpha * mean_step)
        # Clean-side deviations beyond the clip are the baseline's error (it is recovering), not spread:
        # they never widen it. Within the clip they are ordinary noise and count in full.
        beyond = np.abs(diff) > limit
        spread_step = np.where(cleaner & beyond, var, clipped * clipped)
        spread_step = np.where(warming, clipped * clipped, spread_step)
        self.state["var"][slots] = np.where(first, 0.0, (1.0 - var_alpha) * (var + var_alpha * spread_step))
        self.state["count"][slots] = count
