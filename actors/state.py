"""Per-partition state: the feature history and detection engine of the partition's sensors.

Sensors are keyed to partitions by the producer (key = sensor_id), so a sensor's
whole state lives in exactly one :class:`PartitionState`, and a partition moves
between workers as one snapshot. Idle sensors are evicted to the checkpoint
store and restored on their next reading, which keeps memory bounded by the
number of *active* sensors.
"""

from __future__ import annotations

import heapq
import logging
import sys
from typing import Any

import numpy as np

from actors.checkpoint import CheckpointStore
from train.features import FeatureState, compute_features

log = logging.getLogger(__name__)


def snapshot_features(state: FeatureState) -> dict[str, Any]:
    """The rows of live sensors only (slots are an in-memory detail and are not kept)."""
    sensors = list(state.slots)
    slots = np.fromiter((state.slots[s] for s in sensors), dtype=np.int64, count=len(sensors))
    return {
        "sensors": sensors,
        "history": state.history[slots].copy(),
        "last_timestamp": state.last_timestamp[slots].copy(),
        "ewma": state.ewma[slots].copy(),
        "count": state.count[slots].copy(),
    }


def restore_features(data: dict[str, Any]) -> FeatureState:
    sensors = data["sensors"]
    state = FeatureState(capacity=max(64, len(sensors)))
    slots = state.slots_for(sensors)
    state.history[slots] = data["history"]
    state.last_timestamp[slots] = data["last_timestamp"]
    state.ewma[slots] = data["ewma"]
    state.count[slots] = data["count"]
    return state


class PartitionState:
    """Everything a partition's owner keeps between batches, and the offsets it has reached.

    ``next_offset`` is the next input offset to read (None until the first record
    when starting from the beginning); ``epoch`` counts broker log resets so that
    lake keys from a new log never overwrite those of the old one.
    """

    def __init__(self, topic: str, partition: int, engine: Any | None, *, features: FeatureState | None = None,
                 next_offset: int | None = None, epoch: int = 0, alerts_offset: int | None = None,
                 dlq_offset: int | None = None, last_seen: dict[str, float] | None = None,
                 evicted: set[str] | None = None) -> None:
        self.topic = topic
        self.partition = partition
        self.engine = engine
        self.features = features if features is not None else FeatureState()
        self.next_offset = next_offset
        self.epoch = epoch
        # Next offsets of our alerts partition and of the DLQ when the snapshot was taken:
        # a new owner scans from there for outputs already written, and does not repeat them.
        self.alerts_offset = alerts_offset
        self.dlq_offset = dlq_offset
        self.last_seen: dict[str, float] = last_seen or {}
        self.evicted: set[str] = evicted or set()
        # Sensors restored from the store since the last snapshot: their evicted blobs are
        # deleted only once a snapshot that contains them is durable.
        self._restored: set[str] = set()
        self.committed_to_kafka: int | None = None
        self.suppress_alerts: set[tuple[str, str]] = set()
        self.suppress_dlq: set[int] = set()
        self.messages_since_checkpoint = 0
        # Changed since the last snapshot (a checkpoint skips partitions that did not change).
        self.dirty = False

    # Processing ----------------------------------------------------------

    def process(self, sensor_ids: list[str], timestamps: np.ndarray, values: np.ndarray,
                arrival_times: np.ndarray, now: float, store: CheckpointStore) -> tuple[np.ndarray, list]:
        """Features of the accepted readings of one batch, and the engine's alerts."""
        if self.evicted:  # an evicted sensor has no slot until it is restored
            for sensor_id in self.evicted.intersection(sensor_ids):
                self._restore_sensor(sensor_id, store)
        features = compute_features(self.features, sensor_ids, timestamps, values)
        alerts = (self.engine.process(sensor_ids, timestamps, values, features, arrival_times)
                  if self.engine is not None else [])
        self.last_seen.update(dict.fromkeys(sensor_ids, now))
        self.dirty = True
        return features, alerts

    def tick(self, now: float) -> list:
        alerts = self.engine.tick(now) if self.engine is not None else []
        if alerts:
            self.dirty = True
        return alerts

    # Bounded state ----------------------------------------------------------

    def evict_idle(self, now: float, idle_s: float, store: CheckpointStore, limit: int | None = None) -> int:
        """Move sensors unseen for ``idle_s`` (wall clock) to the store; returns how many.

        At most ``limit`` of them, the longest idle first: each is a file write on the loop
        thread, so the caller spreads a mass eviction over several calls.
        """
        idle = [s for s, seen in self.last_seen.items() if now - seen >= idle_s]
        if limit is not None and len(idle) > limit:
            idle = heapq.nsmallest(limit, idle, key=self.last_seen.__getitem__)
        for sensor_id in idle:
            data: dict[str, Any] = {"features": self.features.evict(sensor_id)}
            if self.engine is not None:
                data["engine"] = self.engine.export_sensor(sensor_id)
                self.engine.evict(sensor_id)
            store.save_evicted(self.topic, self.partition, sensor_id, data)
            del self.last_seen[sensor_id]
            self.evicted.add(sensor_id)
            self._restored.discard(sensor_id)
        if idle:
            self.dirty = True
        return len(idle)

    def _restore_sensor(self, sensor_id: str, store: CheckpointStore) -> None:
        data = store.load_evicted(self.topic, self.partition, sensor_id)
        self.evicted.discard(sensor_id)
        if data is None:
            log.warning("partition %d: evicted state of sensor %s is missing from the store; starting it fresh",
                        self.partition, sensor_id)
            return
        self.features.restore(sensor_id, data["features"])
        if self.engine is not None and data.get("engine") is not None:
            self.engine.import_sensor(sensor_id, data["engine"])
        self._restored.add(sensor_id)

    def sensors(self) -> int:
        return len(self.features)

    def nbytes_per_sensor(self) -> int:
        """Bytes of in-memory state per sensor: feature arrays plus the engine's own estimate."""
        engine = self.engine.nbytes_per_sensor() if self.engine is not None else 0
        # last_seen: one dict entry (key shared with the slots dict) and a float.
        return self.features.nbytes_per_sensor() + int(engine) + sys.getsizeof(0.0) + 8

    # Snapshots ----------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        return {
            "topic": self.topic,
            "partition": self.partition,
            "next_offset": self.next_offset,
            "epoch": self.epoch,
            "alerts_offset": self.alerts_offset,
            "dlq_offset": self.dlq_offset,
            "features": snapshot_features(self.features),
            "engine": self.engine.snapshot() if self.engine is not None else None,
            "last_seen": dict(self.last_seen),
            "evicted": sorted(self.evicted),
        }

    def take_restored(self) -> set[str]:
        """Sensors restored from the store since the last capture (their blobs go once it is durable)."""
        restored, self._restored = self._restored, set()
        return restored

    def restore_restored(self, restored: set[str]) -> None:
        self._restored |= restored

    def after_snapshot(self, store: CheckpointStore, restored: set[str]) -> None:
        """A snapshot holding ``restored`` is durable: their evicted blobs are no longer needed.

        A sensor evicted again since then has a fresh blob, which is kept.
        """
        for sensor_id in restored:
            if sensor_id not in self.evicted:
                store.delete(store.evicted_path(self.topic, self.partition, sensor_id))

    def note_output_offsets(self, sinks: Any) -> None:
        self.alerts_offset = sinks.alerts_end(self.partition, self.alerts_offset)
        self.dlq_offset = sinks.dlq_end(self.dlq_offset)

    @classmethod
    def from_snapshot(cls, snapshot: dict[str, Any], engine_factory: Any,
                      restored_at: float | None = None) -> PartitionState:
        """``engine_factory(engine_snapshot_or_None)`` builds the engine (None: no detection).

        With ``restored_at`` (wall clock), every sensor counts as seen then: time the partition
        had no owner is not idleness, and after a long stop every sensor would otherwise be
        evicted at once and restored again by its next reading.
        """
        last_seen = dict(snapshot.get("last_seen", {}))
        if restored_at is not None:
            last_seen = {sensor: max(seen, restored_at) for sensor, seen in last_seen.items()}
        return cls(
            snapshot["topic"], snapshot["partition"], engine_factory(snapshot.get("engine")),
            features=restore_features(snapshot["features"]),
            next_offset=snapshot["next_offset"], epoch=snapshot["epoch"],
            alerts_offset=snapshot.get("alerts_offset"), dlq_offset=snapshot.get("dlq_offset"),
            last_seen=last_seen, evicted=set(snapshot.get("evicted", ())),
        )
