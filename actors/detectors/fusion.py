"""Fusion: from detectors' scores to incidents, with hysteresis, so one incident pages once.

Two steps:

1. :func:`fire_evidence` decides per reading whether it is *anomalous* for the
   ``fire`` kind. Detectors' columns are grouped into independent channels —
   smoke ``particles``, combustion ``gas``, ``heat`` and the ``model`` — and a
   reading is anomalous when a ``critical`` level is crossed, or when at least
   ``min_channels`` channels fire together. Cooking and steam raise particles
   (and a little humidity-borne ethanol) but neither combustion gases nor heat,
   so they stay one channel; and while humidity is rising (the
   ``humidity`` channel), particles do not count at all (``steam_veto``) —
   fires dry the air. Once a sensor is raised, every relative threshold
   (z-scores, rates, the model) is relaxed to ``hold_ratio`` of itself and
   every absolute level (C, ug/m3) to ``threshold_hold_ratio`` of itself, so an
   incident that flickers around a threshold does not clear and re-raise. Coarse particles (``coarse``, from
   :mod:`~actors.detectors.particle_size`) are steam or cooking, not smoke:
   they do not count as the particle channel either. Vetoes are never relaxed.
2. :class:`HysteresisFusion` keeps, per sensor, the last ``n`` anomalous flags
   as bits: it raises after ``k`` of the last ``n`` readings are anomalous and
   clears after ``m`` consecutive normal readings. An incident is identified by
   the event time of its first anomalous reading, so a replay of the same input
   gives the same alert ids.

>>> import numpy as np
>>> fusion = HysteresisFusion(k=2, n=3, m=2)
>>> flags = [True, False, True, True, False, False, False]
>>> events = [fusion.update(np.array([0]), np.array([float(t)]), np.array([f])) for t, f in enumerate(flags)]
>>> [(r.tolist(), c.tolist()) for r, c in events]
[([], []), ([], []), ([0], []), ([], []), ([], []), ([], [0]), ([], [])]
>>> fusion.state["incident_start"][0]  # the raise at t=2 counted the anomalous reading at t=0
np.float64(0.0)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from actors.detectors.base import Scores
from ingest.settings import FusionSettings
from train.slot_table import SlotArrays, SlotStateOwner

FIRE_CHANNELS: tuple[str, ...] = ("particles", "gas", "heat", "model")
CRITICAL = "critical"
STEAM = "humidity"
COARSE = "coarse"
VETOES = frozenset({STEAM, COARSE})


@dataclass
class FireEvidence:
    """Per row: anomalous or not, the number of channels that fired, criticality and the strongest ratio."""

    anomalous: np.ndarray  # (n,) bool
    channels: np.ndarray  # (n,) int
    critical: np.ndarray  # (n,) bool
    vetoed: np.ndarray  # (n,) bool: particles fired but humidity was rising
    strength: np.ndarray  # (n,) float: largest ratio among fire groups (0 if none)


def fire_evidence(scores: list[Scores], raised: np.ndarray, settings: FusionSettings) -> FireEvidence:
    """Combine detectors' scores of the same rows into fire evidence (see the module docstring)."""
    n = len(raised)
    relative = np.where(raised, settings.hold_ratio, 1.0)[:, None]
    absolute = np.where(raised, settings.threshold_hold_ratio, 1.0)[:, None]
    hit: dict[str, np.ndarray] = {}
    strength = np.zeros(n)
    for s in scores:
        ratio = np.nan_to_num(s.ratio, nan=0.0)
        fired = ratio >= (absolute if s.absolute else relative)
        for j, group in enumerate(s.groups):
            # Vetoes are never relaxed: relaxing them would veto more while an incident is raised.
            column = ratio[:, j] >= 1.0 if group in VETOES else fired[:, j]
            hit[group] = hit.get(group, np.zeros(n, dtype=bool)) | column
            if group in FIRE_CHANNELS or group == CRITICAL:
                strength = np.maximum(strength, ratio[:, j])
    none = np.zeros(n, dtype=bool)
    particles = hit.get("particles", none)
    steam = hit.get(STEAM, none) if settings.steam_veto else none
    vetoed = particles & (steam | hit.get(COARSE, none))
    channels = sum((hit.get(g, none) for g in FIRE_CHANNELS), start=np.zeros(n, dtype=np.int64))
    channels = channels - vetoed
    critical = hit.get(CRITICAL, none)
    # Steam: rising humidity with particles; the gas and heat channels must then both speak.
    needed = settings.min_channels + steam
    anomalous = critical | (channels >= needed)
    return FireEvidence(anomalous, channels, critical, vetoed, strength)


class HysteresisFusion(SlotStateOwner):
    """k-of-n raise, m-normal clear, per sensor slot; :meth:`update` takes one reading per slot."""

    def __init__(self, k: int, n: int, m: int, capacity: int = 64) -> None:
        if not 1 <= k <= n <= 32 or m < 1:
            raise ValueError(f"need 1 <= k <= n <= 32 and m >= 1, got k={k} n={n} m={m}")
        self.k, self.n, self.m = k, n, m
        self.mask = np.uint32((1 << n) - 1)
        self.state = SlotArrays({
            "bits": ((), np.uint32, 0),  # last n anomalous flags, newest in bit 0
            "raised": ((), np.bool_, False),
            "normal_run": ((), np.int64, 0),  # consecutive normal readings while raised
            "streak_start": ((), np.float64, np.nan),  # first anomalous reading since the window was clean
            "incident_start": ((), np.float64, np.nan),  # of the raised incident: its identity
            "raised_at": ((), np.float64, np.nan),
            "peak": ((), np.float64, 0.0),
        }, capacity)

    @classmethod
    def from_settings(cls, settings: FusionSettings, capacity: int = 64) -> HysteresisFusion:
        return cls(settings.raise_k, settings.raise_n, settings.clear_m, capacity)

    def raised(self, slots: np.ndarray) -> np.ndarray:
        return self.state["raised"][slots]

    def update(self, slots: np.ndarray, timestamps: np.ndarray, anomalous: np.ndarray,
               score: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Fold one reading per slot in; returns (rows that raised, rows that cleared)."""
        st = self.state
        bits = st["bits"][slots]
        was_clean = bits == 0
        bits = ((bits << np.uint32(1)) | anomalous.astype(np.uint32)) & self.mask
        st["bits"][slots] = bits
        starting = anomalous & was_clean
        st["streak_start"][slots[starting]] = timestamps[starting]
        raised = st["raised"][slots]
        normal_run = np.where(anomalous, 0, st["normal_run"][slots] + 1)
        st["normal_run"][slots] = np.where(raised, normal_run, 0)
        if score is not None:
            st["peak"][slots] = np.where(raised, np.maximum(st["peak"][slots], score), st["peak"][slots])
        raise_rows = np.flatnonzero(~raised & (np.bitwise_count(bits) >= self.k))
        clear_rows = np.flatnonzero(raised & (normal_run >= self.m))
        if len(raise_rows):
            s = slots[raise_rows]
            st["raised"][s] = True
            st["incident_start"][s] = st["streak_start"][s]
            st["raised_at"][s] = timestamps[raise_rows]
            st["normal_run"][s] = 0
            st["peak"][s] = 0.0 if score is None else score[raise_rows]
        if len(clear_rows):
            s = slots[clear_rows]
            st["raised"][s] = False
            st["bits"][s] = 0
            st["normal_run"][s] = 0
        return raise_rows, clear_rows

    # Per-sensor state, like a detector's.
