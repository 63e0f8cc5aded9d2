"""The one interface every detector has, and the per-sensor state arrays behind it.

A detector is a small class in the spirit of River's ``score_one`` /
``learn_one``, vectorised over a batch of readings of many sensors:

- :meth:`Detector.score_batch` scores readings against the state *before* them
  and changes nothing;
- :meth:`Detector.learn_batch` folds the readings into the per-sensor state.

Per-sensor state lives in :class:`SlotArrays`: one numpy array per quantity,
indexed by a sensor's slot (like :class:`train.features.FeatureState`), so a
batch costs a few array operations whatever the number of sensors. A detector
with ``sequential = True`` needs each sensor's readings in time order and gets
batches that hold at most one reading per sensor (the engine splits a polled
batch into such steps with :func:`steps`); the others score a whole batch at once.

A detector's opinion is a :class:`Scores`: for each thing it watches, the
observed value, the threshold and their *ratio* (>= 1 fires; NaN means no
opinion, e.g. during warm-up). Each column belongs to an evidence *group*
(``particles``, ``gas``, ``heat``, ``model``, ``critical`` ...) that fusion combines.

>>> arrays = SlotArrays({"count": ((), np.int64, 0), "last": ((2,), np.float64, np.nan)}, capacity=2)
>>> arrays.resize(4); arrays["count"][3] = 7
>>> arrays.export_slot(3)
{'count': 7, 'last': [nan, nan]}
>>> [rows.tolist() for rows in steps(np.array([5, 2, 5, 5]))]
[[0, 1], [2], [3]]
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np


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


class SlotArrays:
    """Named per-slot arrays: ``spec[name] = (shape of one slot, dtype, fill value of an empty slot)``."""

    def __init__(self, spec: dict[str, tuple[tuple[int, ...], Any, Any]], capacity: int = 64) -> None:
        self.spec = spec
        self.arrays: dict[str, np.ndarray] = {
            name: np.full((capacity, *shape), fill, dtype=dtype) for name, (shape, dtype, fill) in spec.items()}
        self.capacity = capacity

    def __getitem__(self, name: str) -> np.ndarray:
        return self.arrays[name]

    def resize(self, capacity: int) -> None:
        """Grow to ``capacity`` slots (new slots hold the fill values)."""
        if capacity <= self.capacity:
            return
        for name, (shape, dtype, fill) in self.spec.items():
            grown = np.full((capacity, *shape), fill, dtype=dtype)
            grown[: self.capacity] = self.arrays[name]
            self.arrays[name] = grown
        self.capacity = capacity

    def reset_slot(self, slot: int) -> None:
        for name, (_shape, _dtype, fill) in self.spec.items():
            self.arrays[name][slot] = fill

    def export_slot(self, slot: int) -> dict[str, Any]:
        """One slot as plain Python data (lists, floats, ints, bools)."""
        return {name: self.arrays[name][slot].tolist() for name in self.spec}

    def export_slots(self, slots: np.ndarray) -> dict[str, list]:
        """Many slots as plain Python data, one list per quantity (item i belongs to ``slots[i]``).

        One fancy index and one ``tolist`` per quantity: a partition's snapshot costs about
        1 ms per 1,000 sensors instead of 24 ms slot by slot (it runs on the stream's loop thread).
        """
        return {name: self.arrays[name][slots].tolist() for name in self.spec}

    def import_slots(self, slots: np.ndarray, data: dict[str, Any]) -> None:
        """Load what :meth:`export_slots` gave for the same number of slots."""
        missing = set(self.spec) - set(data)
        if missing:
            raise ValueError(f"detector state is missing {sorted(missing)}")
        for name, (shape, dtype, _fill) in self.spec.items():
            value = np.asarray(data[name], dtype=dtype)
            if value.shape != (len(slots), *shape):
                raise ValueError(f"detector state {name!r} has shape {value.shape}, expected {(len(slots), *shape)}")
            self.arrays[name][slots] = value

    def import_slot(self, slot: int, data: dict[str, Any]) -> None:
        missing = set(self.spec) - set(data)
        if missing:
            raise ValueError(f"detector state is missing {sorted(missing)}")
        for name, (shape, dtype, _fill) in self.spec.items():
            value = np.asarray(data[name], dtype=dtype)
            if value.shape != shape:
                raise ValueError(f"detector state {name!r} has shape {value.shape}, expected {shape}")
            self.arrays[name][slot] = value

    def nbytes_per_slot(self) -> int:
        return sum(a.itemsize * int(np.prod(a.shape[1:], dtype=np.int64)) for a in self.arrays.values())


class SlotStateOwner:
    """Per-sensor state kept in :class:`SlotArrays`, for the engine's slot table, snapshots and eviction."""

    state: SlotArrays

    def resize(self, capacity: int) -> None:
        self.state.resize(capacity)

    def reset_slot(self, slot: int) -> None:
        self.state.reset_slot(slot)

    def export_slot(self, slot: int) -> dict[str, Any]:
        return self.state.export_slot(slot)

    def import_slot(self, slot: int, data: dict[str, Any]) -> None:
        self.state.import_slot(slot, data)

    def export_slots(self, slots: np.ndarray) -> dict[str, list]:
        return self.state.export_slots(slots)

    def import_slots(self, slots: np.ndarray, data: dict[str, Any]) -> None:
        self.state.import_slots(slots, data)

    def nbytes_per_slot(self) -> int:
        return self.state.nbytes_per_slot()


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
