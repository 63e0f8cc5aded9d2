"""Sensor ids to rows ("slots") of column-wise state arrays.

Per-sensor state (the feature history here, the detectors' state in ``actors``) lives in
numpy arrays with one row per sensor, so that a batch is read and written with vectorised
gathers and scatters instead of a Python object per sensor. The table hands out rows,
reuses those of evicted sensors, and asks its owner to grow the arrays when they are full
(doubling, so appends stay amortised O(1)).

>>> grown = []
>>> table = SlotTable(capacity=2, grow=grown.append)
>>> table.lookup(["a", "b", "a", "c"]).tolist()
[0, 1, 0, 2]
>>> grown
[4]
>>> table.release("b")
1
>>> table.lookup(["d"]).tolist()
[1]
>>> table.ids[:3]
['a', 'd', 'c']
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np


class SlotTable:
    """Slot of each known sensor; ``grow(new_capacity)`` is called before a slot beyond the arrays is used."""

    def __init__(self, capacity: int, grow: Callable[[int], None]) -> None:
        self.slots: dict[str, int] = {}
        self.ids: list[str | None] = [None] * capacity  # slot -> sensor id (None: free)
        self.capacity = capacity
        self._free: list[int] = []
        self._grow = grow

    def __len__(self) -> int:
        return len(self.slots)

    def lookup(self, sensor_ids: Sequence[str]) -> np.ndarray:
        """Slot of each sensor, allocating slots for new ones."""
        slots = list(map(self.slots.get, sensor_ids))  # one C-level pass; new sensors come back None
        if None in slots:
            for i, slot in enumerate(slots):
                if slot is None:
                    slots[i] = self.slot(sensor_ids[i])  # a new sensor, or one seen earlier in this batch
        return np.array(slots, dtype=np.int64)

    def slot(self, sensor_id: str) -> int:
        """The sensor's slot, allocated if it has none."""
        slot = self.slots.get(sensor_id)
        return self._allocate(sensor_id) if slot is None else slot

    def _allocate(self, sensor_id: str) -> int:
        """A slot for a sensor not in the table: a freed one if any, else the next, growing if needed."""
        if self._free:
            slot = self._free.pop()
        else:
            slot = len(self.slots)
            if slot >= self.capacity:
                self.capacity *= 2
                self._grow(self.capacity)
                self.ids.extend([None] * (self.capacity - len(self.ids)))
        self.slots[sensor_id] = slot
        self.ids[slot] = sensor_id
        return slot

    def release(self, sensor_id: str) -> int:
        """Forget a sensor; its slot (returned, for the owner to reset) goes to the next new sensor."""
        slot = self.slots.pop(sensor_id)
        self.ids[slot] = None
        self._free.append(slot)
        return slot
