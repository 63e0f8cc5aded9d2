"""The one interface every detector has, and the per-sensor state arrays behind it.

A detector is a small class in the spirit of River's ``score_one`` /
``learn_one``, vectorised over a batch of readings of many sensors:

- :meth:`Detector.score_batch` scores readings against the state *before* them
  and changes nothing;
- :meth:`Detector.learn_batch` folds the readings into the per-sensor state.

Per-sensor state lives in :class:`train.slot_table.SlotArrays`: one numpy array
per quantity, indexed by a sensor's slot (like the feature history), so a
batch costs a few array operations whatever the number of sensors. A detector
with ``sequential = True`` needs each sensor's readings in time order and gets
batches that hold at most one reading per sensor (the engine splits a polled
batch into such steps with :func:`steps`); the others score a whole batch at once.

A detector's opinion is a :class:`Scores`: for each thing it watches, the
observed value, the threshold and their *ratio* (>= 1 fires; NaN means no
opinion, e.g. during warm-up). Each column belongs to an evidence *group*
(``particles``, ``gas``, ``heat``, ``model``, ``critical`` ...) that fusion combines.

>>> [rows.tolist() for rows in steps(np.array([5, 2, 5, 5]))]
[[0, 1], [2], [3]]
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from train.slot_table import SlotArrays, SlotStateOwner


@dataclass
class ReadingBatch:
    """Readings handed to detectors: ``slots[i]`` is the sensor slot of row i.

    ``values`` follow :data:`ingest.schema.MEASUREMENTS`, ``features``
    :data:`train.features.FEATURE_NAMES`; ``timestamps`` are event times (epoch s).
    """

    slots: np.ndarray
    timestamps: np.ndarray
    values: np.ndarray
    features: np.ndarray
    arrivals: np.ndarray | None = None  # ingest (wall-clock) times; only the silent detector needs them

    def __len__(self) -> int:
        return len(self.slots)

    def take(self, rows: np.ndarray) -> ReadingBatch:
        return ReadingBatch(self.slots[rows], self.timestamps[rows], self.values[rows], self.features[rows],
                            None if self.arrivals is None else self.arrivals[rows])


@dataclass
class Scores:
    """A detector's opinion of each row: ``ratio[i, j] = observed[i, j] / threshold[j]`` (>= 1 fires)."""

    names: tuple[str, ...]  # what column j watches, e.g. "pm2_5_ugm3"
    groups: tuple[str, ...]  # evidence group of column j, for fusion
    observed: np.ndarray  # (n, len(names)); NaN = no opinion
    threshold: np.ndarray  # (len(names),)
    ratio: np.ndarray  # (n, len(names)); NaN = no opinion
    # Absolute levels (a temperature in C) get a narrow hysteresis band; relative scores a wide one.
    absolute: bool = False

    def take(self, rows: np.ndarray) -> Scores:
        return Scores(self.names, self.groups, self.observed[rows], self.threshold, self.ratio[rows], self.absolute)


class Detector(SlotStateOwner, ABC):
    """One idea of what is abnormal about a reading; see the module docstring."""

    name: str = "detector"
    # True: score/learn need each sensor's readings in time order, one per sensor per call.
    sequential: bool = False

    def __init__(self, state: dict[str, tuple[tuple[int, ...], Any, Any]] | None = None,
                 capacity: int = 64) -> None:
        self.state = SlotArrays(state or {}, capacity)

    @abstractmethod
    def score_batch(self, batch: ReadingBatch) -> Scores:
        """Score each row against the state before it; must not change state."""

    def learn_batch(self, batch: ReadingBatch, scores: Scores) -> None:
        """Fold the rows into the per-sensor state (``scores`` are this detector's own for the rows)."""


def ratio_of(observed: np.ndarray, threshold: np.ndarray) -> np.ndarray:
    """observed / threshold, NaN where observed is NaN (no opinion)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return observed / threshold


def steps(slots: np.ndarray) -> Iterator[np.ndarray]:
    """Row indices in steps that hold each slot at most once, keeping each slot's rows in order.

    Step s holds the s-th reading of every sensor that has one, so sequential
    detectors update each sensor once per step, vectorised across sensors.
    """
    n = len(slots)
    if n == 0:
        return
    order = np.argsort(slots, kind="stable")
    sorted_slots = slots[order]
    starts = np.flatnonzero(np.r_[True, sorted_slots[1:] != sorted_slots[:-1]])
    seg_len = np.diff(np.r_[starts, n])
    pos = np.empty(n, dtype=np.int64)
    pos[order] = np.arange(n) - np.repeat(starts, seg_len)
    if seg_len.max() == 1:
        yield np.arange(n)
        return
    by_step = np.argsort(pos, kind="stable")
    bounds = np.searchsorted(pos[by_step], np.arange(seg_len.max() + 1))
    for s in range(seg_len.max()):
        yield by_step[bounds[s]: bounds[s + 1]]
