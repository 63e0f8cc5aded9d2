"""Threshold tiers: absolute warning/critical levels per measurement, the way a smoke alarm is rated.

Levels and their sources live in ``configs/pipeline.yaml`` (``detection.thresholds``,
see :class:`ingest.settings.ThresholdTier`). A warning level is one channel of
evidence for fusion (particles, gas or heat, by the measurement); a critical
level pages on its own.

>>> import numpy as np
>>> from ingest.schema import MEASUREMENTS
>>> from ingest.settings import ThresholdSettings, ThresholdTier
>>> tiers = ThresholdTiers(ThresholdSettings(levels={"pm2_5_ugm3": ThresholdTier(warning=150.0, critical=1000.0)}))
>>> values = np.zeros((2, len(MEASUREMENTS))); values[:, MEASUREMENTS.index("pm2_5_ugm3")] = [300.0, 2000.0]
>>> scores = tiers.score_batch(ReadingBatch(np.arange(2), np.zeros(2), values, np.zeros((2, 0))))
>>> scores.names, scores.groups, scores.ratio.tolist()
(('pm2_5_ugm3', 'pm2_5_ugm3:critical'), ('particles', 'critical'), [[2.0, 0.3], [13.333333333333334, 2.0]])
"""

from __future__ import annotations

import numpy as np

from actors.detectors.base import Detector, ReadingBatch, Scores, ratio_of
from ingest.schema import MEASUREMENTS
from ingest.settings import ThresholdSettings

# Which evidence channel a measurement belongs to (fusion wants independent channels:
# a fire shows smoke particles, combustion gases and heat; steam shows particles and humidity).
SIGNAL_GROUPS: dict[str, str] = {
    "temperature_c": "heat",
    "humidity_pct": "humidity",
    "tvoc_ppb": "gas",
    "eco2_ppm": "gas",
    "raw_h2_ticks": "gas",
    "raw_ethanol_ticks": "ethanol",  # cooking releases ethanol too: not fire evidence on its own
    "pressure_hpa": "pressure",
    "pm1_0_ugm3": "particles",
    "pm2_5_ugm3": "particles",
    "nc0_5_per_cm3": "particles",
    "nc1_0_per_cm3": "particles",
    "nc2_5_per_cm3": "particles",
}
CRITICAL = "critical"


class ThresholdTiers(Detector):
    """Fires where a reading is at or above a configured level; stateless."""

    name = "thresholds"

    def __init__(self, settings: ThresholdSettings, capacity: int = 64) -> None:
        super().__init__(capacity=capacity)
        names, groups, columns, levels = [], [], [], []
        for signal, tier in settings.levels.items():
            names.append(signal)
            groups.append(SIGNAL_GROUPS[signal])
            columns.append(MEASUREMENTS.index(signal))
            levels.append(tier.warning)
            if tier.critical is not None:
                names.append(f"{signal}:critical")
                groups.append(CRITICAL)
                columns.append(MEASUREMENTS.index(signal))
                levels.append(tier.critical)
        self.names, self.groups = tuple(names), tuple(groups)
        self.columns = np.array(columns, dtype=np.int64)
        self.levels = np.array(levels, dtype=np.float64)

    def score_batch(self, batch: ReadingBatch) -> Scores:
        observed = batch.values[:, self.columns]
        return Scores(self.names, self.groups, observed, self.levels, ratio_of(observed, self.levels), absolute=True)
