"""Sensor physics: what the Kaggle sensor kit measures in quiet air and during incidents.

The one model of sensor physics, used by the fleet simulator
(:mod:`ingest.simulator`) and by the Kaggle-format file generator
(:func:`ingest.kaggle_generator.write_kaggle_csv`).

The air around a sensor is described by a few latent quantities (temperature,
humidity, pressure, volatile organics, hydrogen- and ethanol-like gases, and the
mass of suspended particles); :func:`measure` turns them into the 12 readings
of the kit, with noise and the sensors' saturation. An incident adds to the
latent quantities a :class:`Signature` scaled by its intensity curve, so that
its signals rise together:

- **smouldering** fire: slow (minutes) rise of TVOC, ethanol/H2 gases and small
  particles, little heat;
- **flaming** fire: fast (tens of seconds) rise of particles and temperature,
  humidity falls;
- **nuisance** (cooking, steam): a humidity and large-particle bump with a
  little ethanol, a good detector should not page on it;
- **candle** and **gas** fires exist for the Kaggle sessions (a candle is weak,
  a gas flame is hot with few particles).

The SGP30's raw H2 and ethanol signals are log-resistances that *fall* as the
gas concentration rises, so a rise of those gases shows as falling ticks.
Peak sizes are log-normal per incident, which gives the heavy tails of the
Kaggle data (particle counts and TVOC spike by orders of magnitude).

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> base = draw_baselines(rng, ["indoor"] * 3)
>>> idx = np.arange(3)
>>> quiet = base.measure(rng, idx, base.latent(idx))
>>> fire = base.latent(idx) + effect(IncidentKind.FLAMING, np.ones(3), np.full(3, 3.0))
>>> bool((base.measure(rng, idx, fire)[:, 7] > 10 * quiet[:, 7]).all())  # PM1.0 rises by orders of magnitude
True
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

import numpy as np

from ingest.schema import FIELDS, MEASUREMENTS

# Latent quantities of the air at a sensor (columns of a latent matrix).
LATENT: tuple[str, ...] = (
    "temperature_c", "humidity_pct", "pressure_hpa", "voc_ppb", "h2_gas", "ethanol_gas",
    "eco2_excess_ppm", "particle_mass", "coarse_share",
)
_L = {name: j for j, name in enumerate(LATENT)}
_M = {name: j for j, name in enumerate(MEASUREMENTS)}

# Particle number per unit of PM1.0 mass, for fine (smoke) and coarse (steam, dust) particles.
# Ratios follow the Kaggle means: PM2.5 ~1.8x PM1.0 in smoke, NC0.5 ~4.9x, NC1.0 ~2x, NC2.5 ~0.8x.
_FINE = np.array([1.0, 1.25, 6.5, 1.3, 0.25])
_COARSE = np.array([1.0, 3.0, 2.5, 2.6, 1.6])
# Largest fall of the SGP30 raw signals below clean air (the Kaggle data's minimum is about this far down).
_H2_SPAN, _ETHANOL_SPAN = 2_300.0, 4_400.0


class IncidentKind(StrEnum):
    SMOULDERING = "smouldering"
    FLAMING = "flaming"
    NUISANCE = "nuisance"
    CANDLE = "candle"
    GAS = "gas"


@dataclass(frozen=True)
class Signature:
    """How an incident changes the air at full intensity (median incident), and how fast."""

    is_fire: bool
    temperature_c: float
    humidity_pct: float
    voc_ppb: float
    h2_gas: float  # 1.0 is a strong exposure; ticks saturate above a few
    ethanol_gas: float
    eco2_excess_ppm: float
    particle_mass: float  # ug/m3 of PM1.0
    coarse_share: float  # 0 = fine smoke, 1 = coarse droplets
    rise_share: float  # share of the duration spent rising
    rise_power: float  # >1 rises slowly then fast (smouldering), 1 is linear
    decay_share: float  # share of the duration spent decaying at the end
    duration_s: tuple[float, float]  # range of durations in the simulator
    spread: float  # log-normal sigma of the incident's size (heavy tails)


SIGNATURES: dict[IncidentKind, Signature] = {
    IncidentKind.SMOULDERING: Signature(True, 2.0, -2.0, 1_500.0, 0.06, 0.12, 150.0, 50.0, 0.1,
                                        0.7, 2.0, 0.1, (300.0, 1_200.0), 2.0),
    IncidentKind.FLAMING: Signature(True, 14.0, -8.0, 600.0, 0.06, 0.05, 400.0, 200.0, 0.2,
                                    0.15, 1.0, 0.2, (180.0, 600.0), 2.0),
    IncidentKind.NUISANCE: Signature(False, 2.5, 18.0, 150.0, 0.01, 0.06, 30.0, 15.0, 0.9,
                                     0.2, 1.0, 0.5, (120.0, 600.0), 0.8),
    IncidentKind.CANDLE: Signature(True, 0.5, -0.5, 700.0, 0.03, 0.08, 60.0, 1.5, 0.1,
                                   0.05, 1.0, 0.05, (600.0, 1_800.0), 1.0),
    IncidentKind.GAS: Signature(True, 7.0, -3.0, 500.0, 0.08, 0.03, 250.0, 2.0, 0.1,
                                0.1, 1.0, 0.1, (300.0, 1_200.0), 1.2),
}
_KIND_ORDER: tuple[IncidentKind, ...] = tuple(IncidentKind)
_SIG = np.array([[s.temperature_c, s.humidity_pct, 0.0, s.voc_ppb, s.h2_gas, s.ethanol_gas,
                  s.eco2_excess_ppm, s.particle_mass, s.coarse_share] for s in SIGNATURES.values()])
_SHAPE = np.array([[s.rise_share, s.rise_power, s.decay_share] for s in SIGNATURES.values()])


def kind_code(kind: IncidentKind | str) -> int:
    """Small integer of a kind, for vectorised arrays of incidents."""
    return _KIND_ORDER.index(IncidentKind(kind))


def kind_of(code: int) -> IncidentKind:
    return _KIND_ORDER[code]


@dataclass(frozen=True)
class Environment:
    """Quiet air of a place, as means and between-sensor spreads of the latent quantities."""

    temperature_c: tuple[float, float]
    humidity_pct: tuple[float, float]
    voc_ppb: float  # median; log-normal across sensors
    particle_mass: float  # median PM1.0 ug/m3; log-normal across sensors


ENVIRONMENTS: dict[str, Environment] = {
    "indoor": Environment((22.0, 3.0), (46.0, 7.0), 120.0, 1.0),
    "outdoor": Environment((-2.0, 12.0), (55.0, 10.0), 20.0, 2.0),
}
PRESSURE_HPA = (938.6, 1.0)  # the Kaggle recordings' site; sensors differ by altitude and calibration


@dataclass
class Baselines:
    """Per-sensor quiet air (latent) and per-sensor SGP30 calibration (raw ticks at clean air)."""

    quiet: np.ndarray  # (n, len(LATENT))
    h2_clean_ticks: np.ndarray  # (n,)
    ethanol_clean_ticks: np.ndarray  # (n,)

    def __len__(self) -> int:
        return len(self.quiet)

    def latent(self, idx: np.ndarray) -> np.ndarray:
        """The quiet latent air of sensors ``idx`` (a copy; callers add drift and incidents)."""
        return self.quiet[idx]

    def measure(self, rng: np.random.Generator, idx: np.ndarray, latent: np.ndarray) -> np.ndarray:
        """Readings of sensors ``idx`` in air ``latent`` (see :func:`measure`)."""
        return measure(rng, latent, self.h2_clean_ticks[idx], self.ethanol_clean_ticks[idx])


def draw_baselines(rng: np.random.Generator, environments: list[str]) -> Baselines:
    """One baseline per sensor; ``environments[i]`` names the place of sensor i (see ENVIRONMENTS)."""
    n = len(environments)
    quiet = np.zeros((n, len(LATENT)))
    for name, env in ENVIRONMENTS.items():
        sel = np.array([e == name for e in environments], dtype=bool)
        k = int(sel.sum())
        if not k:
            continue
        quiet[sel, _L["temperature_c"]] = rng.normal(*env.temperature_c, k)
        quiet[sel, _L["humidity_pct"]] = np.clip(rng.normal(*env.humidity_pct, k), 15.0, 85.0)
        quiet[sel, _L["voc_ppb"]] = env.voc_ppb * rng.lognormal(0.0, 0.8, k)
        quiet[sel, _L["particle_mass"]] = env.particle_mass * rng.lognormal(0.0, 0.6, k)
    unknown = set(environments) - ENVIRONMENTS.keys()
    if unknown:
        raise ValueError(f"unknown environments {sorted(unknown)}; known: {sorted(ENVIRONMENTS)}")
    quiet[:, _L["pressure_hpa"]] = rng.normal(*PRESSURE_HPA, n)
    quiet[:, _L["eco2_excess_ppm"]] = rng.exponential(5.0, n)
    quiet[:, _L["coarse_share"]] = rng.uniform(0.1, 0.4, n)
    return Baselines(quiet, rng.normal(13_000.0, 120.0, n), rng.normal(19_950.0, 250.0, n))


def intensity(codes: np.ndarray, elapsed_s: np.ndarray, duration_s: np.ndarray) -> np.ndarray:
    """Intensity 0..1 of incidents of kinds ``codes`` at ``elapsed_s`` into their ``duration_s``."""
    rise, power, decay = _SHAPE[codes].T
    frac = np.clip(elapsed_s / duration_s, 0.0, 1.0)
    up = np.clip(frac / rise, 0.0, 1.0) ** power
    down = 1.0 - np.clip((frac - (1.0 - decay)) / decay, 0.0, 1.0)
    active = (elapsed_s >= 0) & (elapsed_s <= duration_s)
    return np.where(active, up * down, 0.0)


def effect(kind: IncidentKind | np.ndarray, level: np.ndarray, size: np.ndarray) -> np.ndarray:
    """Latent deltas of incidents: ``kind`` (one kind or an array of codes) at intensity ``level`` x ``size``.

    ``size`` is the incident's own multiplier (log-normal, median 1). The coarse
    share is not additive: it is blended toward the incident's by its intensity.
    """
    codes = np.full(len(level), kind_code(kind)) if isinstance(kind, str) else kind
    scale = (level * size)[:, None]
    delta = _SIG[codes] * scale
    # Heat and humidity follow the intensity but neither the size nor the flicker of the smoke plume
    # (the room mixes them), so they stay within what a room fire does to a nearby sensor.
    steady = np.minimum(level, 1.5)[:, None]
    delta[:, :_L["pressure_hpa"]] = _SIG[codes, :_L["pressure_hpa"]] * steady
    delta[:, _L["coarse_share"]] = 0.0
    return delta


def blend_coarse(latent: np.ndarray, codes: np.ndarray, level: np.ndarray, size: np.ndarray) -> None:
    """Move the coarse share of incidents' air toward their kind's (in place)."""
    mass = latent[:, _L["particle_mass"]]
    added = _SIG[codes, _L["particle_mass"]] * level * size
    w = np.where(mass > 0, added / np.maximum(mass, 1e-9), 0.0)
    share = latent[:, _L["coarse_share"]]
    share += np.clip(w, 0, 1) * (_SIG[codes, _L["coarse_share"]] - share)


def measure(rng: np.random.Generator, latent: np.ndarray, h2_clean_ticks: np.ndarray | float = 13_000.0,
            ethanol_clean_ticks: np.ndarray | float = 19_950.0) -> np.ndarray:
    """Latent air -> readings; the SGP30 raw signals start from each sensor's clean-air ticks.

    Returns an ``(m, 12)`` matrix in :data:`ingest.schema.MEASUREMENTS` order,
    rounded to each sensor's resolution and saturated at the sensor's limits.
    """
    m = len(latent)
    out = np.empty((m, len(MEASUREMENTS)))
    temp = latent[:, _L["temperature_c"]]
    out[:, _M["temperature_c"]] = temp + rng.normal(0.0, 0.05, m)
    out[:, _M["humidity_pct"]] = latent[:, _L["humidity_pct"]] + rng.normal(0.0, 0.25, m)
    out[:, _M["pressure_hpa"]] = latent[:, _L["pressure_hpa"]] + rng.normal(0.0, 0.02, m)
    out[:, _M["tvoc_ppb"]] = latent[:, _L["voc_ppb"]] * rng.lognormal(0.0, 0.08, m)
    out[:, _M["eco2_ppm"]] = 400.0 + latent[:, _L["eco2_excess_ppm"]] * rng.lognormal(0.0, 0.05, m)
    # SGP30 raw signal: ticks fall with the gas exposure and saturate (a log-resistance).
    h2 = h2_clean_ticks - _H2_SPAN * (1.0 - np.exp(-np.maximum(latent[:, _L["h2_gas"]], 0.0)))
    ethanol = ethanol_clean_ticks - _ETHANOL_SPAN * (1.0 - np.exp(-np.maximum(latent[:, _L["ethanol_gas"]], 0.0)))
    out[:, _M["raw_h2_ticks"]] = h2 + rng.normal(0.0, 4.0, m)
    out[:, _M["raw_ethanol_ticks"]] = ethanol + rng.normal(0.0, 8.0, m)
    mass = latent[:, _L["particle_mass"]] * rng.lognormal(0.0, 0.1, m)
    coarse = np.clip(latent[:, _L["coarse_share"]], 0.0, 1.0)[:, None]
    particles = mass[:, None] * ((1.0 - coarse) * _FINE + coarse * _COARSE)
    first = _M["pm1_0_ugm3"]
    out[:, first:first + 5] = particles
    return saturate(out)


_RESOLUTION = np.array([
    {"temperature_c": 0.001, "humidity_pct": 0.01, "tvoc_ppb": 1.0, "eco2_ppm": 1.0,
     "raw_h2_ticks": 1.0, "raw_ethanol_ticks": 1.0, "pressure_hpa": 0.001, "pm1_0_ugm3": 0.01,
     "pm2_5_ugm3": 0.01, "nc0_5_per_cm3": 0.01, "nc1_0_per_cm3": 0.001, "nc2_5_per_cm3": 0.001}[name]
    for name in MEASUREMENTS
])
# Where the devices saturate: a reading never leaves its schema range, as on the real kit.
_LOW = np.array([max(f.low, 0.0) if f.name != "temperature_c" else f.low for f in FIELDS])
_HIGH = np.array([min(f.high, 65_535.0) for f in FIELDS])


def saturate(values: np.ndarray) -> np.ndarray:
    """Round to each sensor's resolution and clip at its limits (in place; returns ``values``)."""
    np.clip(values, _LOW, _HIGH, out=values)
    np.round(values / _RESOLUTION, 0, out=values)
    values *= _RESOLUTION
    return values
