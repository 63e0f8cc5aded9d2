"""Particle size: smoke is fine, steam and cooking aerosols are coarse.

Combustion aerosol is mostly sub-micron, so nearly all of an SPS30's PM2.5 mass
is already in PM1.0 (PM2.5/PM1.0 close to 1; about 1.25 in the simulator's fine
smoke); steam and cooking droplets are larger than a micron and push the ratio
toward 3. Optical detectors that compare two wavelengths or scattering angles
reject steam the same way. This detector fires when the ratio (the shared
feature ``pm2_5_pm1_0_ratio``) is at or above ``coarse_pm2_5_pm1_0_ratio``;
fusion then does not count particles as fire evidence. It has no opinion where
PM1.0 is too small for the ratio to mean anything (clean air).

>>> import numpy as np
>>> from ingest.settings import ParticleSizeSettings
>>> from train.features import FEATURE_NAMES
>>> det = ParticleSize(ParticleSizeSettings(coarse_pm2_5_pm1_0_ratio=2.0, min_pm1_0_ugm3=5.0))
>>> f = np.zeros((3, len(FEATURE_NAMES))); f[:, FEATURE_NAMES.index("pm2_5_pm1_0_ratio")] = [1.2, 2.8, 2.8]
>>> f[:, FEATURE_NAMES.index("pm1_0_ugm3")] = [40.0, 40.0, 1.0]
>>> det.score_batch(ReadingBatch(np.arange(3), np.zeros(3), np.zeros((3, 12)), f)).ratio[:, 0].tolist()
[0.6, 1.4, nan]
"""

from __future__ import annotations

import numpy as np

from actors.detectors.base import Detector, ReadingBatch, Scores, ratio_of
from ingest.settings import ParticleSizeSettings
from train.features import FEATURE_NAMES

_RATIO = FEATURE_NAMES.index("pm2_5_pm1_0_ratio")
_PM1 = FEATURE_NAMES.index("pm1_0_ugm3")


class ParticleSize(Detector):
    """PM2.5/PM1.0 against the coarse limit; group ``coarse`` (a veto, not fire evidence); stateless."""

    name = "particle_size"

    def __init__(self, settings: ParticleSizeSettings, capacity: int = 64) -> None:
        super().__init__(capacity=capacity)
        self.limit = np.array([settings.coarse_pm2_5_pm1_0_ratio])
        self.min_pm1 = settings.min_pm1_0_ugm3

    def score_batch(self, batch: ReadingBatch) -> Scores:
        ratio = batch.features[:, _RATIO].copy()
        ratio[~(batch.features[:, _PM1] >= self.min_pm1)] = np.nan
        observed = ratio[:, None]
        return Scores(("pm2_5_pm1_0_ratio",), ("coarse",), observed, self.limit, ratio_of(observed, self.limit))
