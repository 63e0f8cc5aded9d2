"""How the Kaggle sensor kit reports the air: the SGP30's and the SPS30's start-up, floors and steps.

:mod:`ingest.incidents` says what the air at a sensor is; this module says what
the chips print about it, which is where the real recordings differ most from
plain physics:

- **SGP30** (TVOC, eCO2, raw H2, raw ethanol). For its first 15 s after power-on
  it returns the fixed values 400 ppm eCO2 and 0 ppb TVOC (datasheet,
  "initialization phase"). Its outputs are relative to a clean-air baseline it
  keeps on chip, and floored: clean air reads exactly 0 ppb TVOC and 400 ppm
  eCO2, which is why about half the rows of the recordings sit on 400 ppm.
  While the hot plate settles after power-on the raw signals read several
  hundred ticks *below* their clean-air value (the Kaggle file's first row:
  raw H2 12306, raw ethanol 18520, against medians near 12900 and 19500) and
  climb back over a minute or so. All four outputs are integers.
- **SPS30** (PM1.0, PM2.5, NC0.5, NC1.0, NC2.5). Until its fan has spun up and
  the first measurement is ready it reports exactly 0 in every channel (the
  recordings' sessions start so); then mass in 0.01 ug/m3 and counts in
  0.01 / 0.001 #/cm3 steps (the rounding is :func:`ingest.incidents.saturate`'s).

:class:`PowerOn` holds one session's start-up (drawn per session by
:func:`draw_power_on`); :func:`report` applies it to a session's measured rows;
:func:`compensated_quiet_air` sets quiet latent air to what the SGP30's baseline
compensation makes of it.

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> rows = np.tile([20.0, 50.0, 30.0, 420.0, 12900, 19500, 939.0, 1.5, 1.6, 10.0, 1.7, 0.05], (40, 1))
>>> out = report(rows, np.arange(40.0), PowerOn(h2_drop=600, ethanol_drop=1000, sps30_zero_s=10))
>>> out[0, 2:6].tolist(), out[0, 7:].tolist()
([0.0, 400.0, 12300.0, 18500.0], [0.0, 0.0, 0.0, 0.0, 0.0])
>>> out[30, 2:4].tolist(), bool(out[30, 7] > 0)
([30.0, 420.0], True)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ingest.incidents import LATENT
from ingest.schema import MEASUREMENTS

# SGP30 datasheet: fixed 400 ppm / 0 ppb for the first 15 s after sgp30_iaq_init.
SGP30_INIT_S = 15.0
ECO2_FLOOR_PPM = 400.0
TVOC_FLOOR_PPB = 0.0
# Settling of the raw signals after power-on (an assumption: the recordings show the start value,
# not the curve): exponential with this time constant.
RAW_SETTLE_TAU_S = 40.0
# The first row of the recordings is this far below the medians of the raw signals.
_H2_DROP, _ETHANOL_DROP = (620.0, 80.0), (980.0, 150.0)
# SPS30: zeros until the first measurement after start-up (fan spin-up; 8-30 s to a stable reading).
_SPS30_ZERO_S = (5.0, 30.0)
# Quiet air as the SGP30 reports it: TVOC within a few ppb of the compensated baseline (rounds to 0
# mostly), the eCO2 equivalent this far below the 400 ppm floor, so the floor is read until H2 rises.
_QUIET_VOC_PPB = 0.3
_QUIET_ECO2_EXCESS = (-40.0, 15.0)

_M = {name: j for j, name in enumerate(MEASUREMENTS)}
_SPS30 = slice(_M["pm1_0_ugm3"], _M["nc2_5_per_cm3"] + 1)


@dataclass(frozen=True)
class PowerOn:
    """One session's start-up: how far the raw signals start below clean air, how long the SPS30 reads 0."""

    h2_drop: float
    ethanol_drop: float
    sps30_zero_s: float


def draw_power_on(rng: np.random.Generator) -> PowerOn:
    return PowerOn(h2_drop=max(0.0, rng.normal(*_H2_DROP)), ethanol_drop=max(0.0, rng.normal(*_ETHANOL_DROP)),
                   sps30_zero_s=float(rng.uniform(*_SPS30_ZERO_S)))


def report(values: np.ndarray, since_power_on_s: np.ndarray, power_on: PowerOn) -> np.ndarray:
    """Measured rows (``(n, 12)``, MEASUREMENTS order) of one session -> what the kit prints (in place).

    ``since_power_on_s[i]`` is row i's time since the session's power-on.
    """
    t = np.asarray(since_power_on_s, dtype=np.float64)
    settle = np.exp(-t / RAW_SETTLE_TAU_S)
    values[:, _M["raw_h2_ticks"]] = np.round(values[:, _M["raw_h2_ticks"]] - power_on.h2_drop * settle)
    values[:, _M["raw_ethanol_ticks"]] = np.round(values[:, _M["raw_ethanol_ticks"]] - power_on.ethanol_drop * settle)
    init = t < SGP30_INIT_S
    values[init, _M["tvoc_ppb"]] = TVOC_FLOOR_PPB
    values[init, _M["eco2_ppm"]] = ECO2_FLOOR_PPM
    values[t < power_on.sps30_zero_s, _SPS30] = 0.0
    return values


def compensated_quiet_air(rng: np.random.Generator, quiet: np.ndarray) -> np.ndarray:
    """Quiet latent air (rows of :data:`ingest.incidents.LATENT`) as the SGP30's baseline compensation sees it.

    The chip learns its clean-air baseline, so the volatile organics and the eCO2
    equivalent of the air it has been running in read as the floors; returns ``quiet``.
    """
    n = len(quiet)
    quiet[:, LATENT.index("voc_ppb")] = _QUIET_VOC_PPB * rng.random(n)
    quiet[:, LATENT.index("eco2_excess_ppm")] = rng.normal(*_QUIET_ECO2_EXCESS, n)
    return quiet


def floor_share(values: np.ndarray, floor: float) -> float:
    """Share of readings exactly at a sensor's floor (NaN-free input)."""
    values = np.asarray(values, dtype=np.float64)
    return float(np.mean(values == floor)) if len(values) else math.nan


__all__ = ["ECO2_FLOOR_PPM", "SGP30_INIT_S", "TVOC_FLOOR_PPB", "PowerOn", "compensated_quiet_air",
           "draw_power_on", "floor_share", "report"]
