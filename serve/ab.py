"""A/B assignment: which model variant scores a reading.

Assignment is sticky per ``sensor_id``: a stable hash (BLAKE2b, not Python's
salted ``hash``) maps each sensor to a point in [0, 1), and the cumulative
weights cut that interval into one slice per variant. Every replica and every
restart therefore sends a sensor to the same variant, so a sensor's alerts do
not flip between models from one reading to the next. Readings without a
``sensor_id`` cannot be sticky and are assigned at random with the same weights.

>>> split = ABSplit(["a", "b"], [0.75, 0.25])
>>> first = split.assign(["sensor-1", "sensor-2"]).tolist()
>>> again = ABSplit(["a", "b"], [3, 1]).assign(["sensor-1", "sensor-2"]).tolist()  # another replica
>>> first == again == split.assign(["sensor-1", "sensor-2"]).tolist()
True
>>> ABSplit(["only"], [1.0]).assign(["x", None]).tolist()
[0, 0]
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np

_SCALE = float(2**64)


def sticky_point(sensor_id: str) -> float:
    """A sensor's fixed point in [0, 1)."""
    digest = hashlib.blake2b(sensor_id.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") / _SCALE


class ABSplit:
    """Weighted, sticky split of readings between named variants."""

    def __init__(self, names: Sequence[str], weights: Sequence[float], seed: int | None = None) -> None:
        if len(names) != len(weights) or not names:
            raise ValueError("one weight per variant, at least one variant")
        if len(set(names)) != len(names):
            raise ValueError(f"variant names must be unique: {list(names)}")
        w = np.asarray(weights, dtype=np.float64)
        if not np.all(np.isfinite(w)) or np.any(w <= 0):
            raise ValueError(f"weights must be positive: {list(weights)}")
        self.names = list(names)
        self.shares = w / w.sum()
        # Right edges of each variant's slice; the last is forced to 1 against rounding.
        self._edges = np.cumsum(self.shares)
        self._edges[-1] = 1.0
        self._rng = np.random.default_rng(seed)
        self._cache: dict[str, float] = {}

    def assign(self, sensor_ids: Sequence[str | None]) -> np.ndarray:
        """Index of the variant of each reading."""
        n = len(sensor_ids)
        if len(self.names) == 1:
            return np.zeros(n, dtype=np.int64)
        points = np.empty(n)
        cache = self._cache
        for i, sid in enumerate(sensor_ids):
            if sid is None:
                points[i] = self._rng.random()
                continue
            point = cache.get(sid)
            if point is None:
                point = sticky_point(sid)
                if len(cache) < 100_000:  # bounded: a fleet is large but finite
                    cache[sid] = point
            points[i] = point
        return np.searchsorted(self._edges, points, side="right").clip(max=len(self.names) - 1)
