"""Per-partition state: the detection engine of the partition's sensors and the offsets reached.

Sensors are keyed to partitions by the producer (key = sensor_id), so a sensor's
whole state (feature history, detectors, fusion: all in the engine, one slot per
sensor) lives in exactly one :class:`PartitionState`, and a partition moves
between workers as one snapshot. Idle sensors are evicted to the checkpoint
store and restored on their next reading, which keeps memory bounded by the
number of *active* sensors.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from actors.checkpoint_store import CheckpointStore
from actors.detection import DetectionEngine

log = logging.getLogger(__name__)


class PartitionState:
    """Everything a partition's owner keeps between batches, and the offsets it has reached.

    ``next_offset`` is the next input offset to read (None until the first record
    when starting from the beginning); ``epoch`` counts broker log resets so that
    lake keys from a new log never overwrite those of the old one.
    """

    def __init__(self, topic: str, partition: int, engine: DetectionEngine, *, next_offset: int | None = None,
                 epoch: int = 0, alerts_offset: int | None = None, dlq_offset: int | None = None,
                 evicted: set[str] | None = None, restored_at: float = -np.inf) -> None:
        self.topic = topic
        self.partition = partition
        self.engine = engine
        self.next_offset = next_offset
        self.epoch = epoch
        # Next offsets of our alerts partition and of the DLQ when the snapshot was taken:
        # a new owner scans from there for outputs already written, and does not repeat them.
        self.alerts_offset = alerts_offset
        self.dlq_offset = dlq_offset
        self.evicted: set[str] = evicted or set()
        # Wall clock when this owner restored the partition: no sensor counts as idle from
        # before it (time the partition had no owner is not idleness).
        self.restored_at = restored_at
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
                arrival_times: np.ndarray, store: CheckpointStore) -> tuple[np.ndarray, list]:
        """Features of the accepted readings of one batch, and the engine's alerts."""
        if self.evicted:  # an evicted sensor has no slot until it is restored
            for sensor_id in self.evicted.intersection(sensor_ids):
                self._restore_sensor(sensor_id, store)
        self.dirty = True
        return self.engine.process(sensor_ids, timestamps, values, arrival_times)

    def tick(self, now: float) -> list:
        alerts = self.engine.tick(now)
        if alerts:
            self.dirty = True
        return alerts

    # Bounded state ----------------------------------------------------------

    def evict_idle(self, now: float, idle_s: float, store: CheckpointStore, limit: int | None = None) -> int:
        """Move sensors unheard for ``idle_s`` (wall clock) to the store; returns how many.

        At most ``limit`` of them, the longest idle first: each is a file write on the loop
        thread, so the caller spreads a mass eviction over several calls.
        """
        idle = self.engine.idle_sensors(now, idle_s, heard_since=self.restored_at, limit=limit)
        for sensor_id in idle:
            store.save_evicted(self.topic, self.partition, sensor_id, self.engine.evict(sensor_id))
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
        if "engine" in data:  # evicted before the feature history joined the engine: two parts
            self.engine.import_sensor(sensor_id, {**data["engine"], "features": _legacy_features(data["features"])})
        else:
            self.engine.import_sensor(sensor_id, data)
        self._restored.add(sensor_id)

    def sensors(self) -> int:
        return len(self.engine)

    def nbytes_per_sensor(self) -> int:
        """Bytes of in-memory state per sensor: the engine's own estimate (feature history included)."""
        return int(self.engine.nbytes_per_sensor())

    # Snapshots ----------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        return {
            "topic": self.topic,
            "partition": self.partition,
            "next_offset": self.next_offset,
            "epoch": self.epoch,
            "alerts_offset": self.alerts_offset,
            "dlq_offset": self.dlq_offset,
            "engine": self.engine.snapshot(),
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
                      restored_at: float = -np.inf) -> PartitionState:
        """``engine_factory(engine_snapshot_or_None)`` builds the engine.

        With ``restored_at`` (wall clock), every sensor counts as heard then: time the partition
        had no owner is not idleness, and after a long stop every sensor would otherwise be
        evicted at once and restored again by its next reading.
        """
        engine = engine_factory(snapshot.get("engine"))
        if "features" in snapshot:  # written before the feature history joined the engine
            legacy = snapshot["features"]
            engine.import_feature_history(legacy["sensors"], _legacy_features(legacy))
        return cls(
            snapshot["topic"], snapshot["partition"], engine,
            next_offset=snapshot["next_offset"], epoch=snapshot["epoch"],
            alerts_offset=snapshot.get("alerts_offset"), dlq_offset=snapshot.get("dlq_offset"),
            evicted=set(snapshot.get("evicted", ())), restored_at=restored_at,
        )


def _legacy_features(data: dict[str, Any]) -> dict[str, Any]:
    """The feature-history quantities of a checkpoint written before they joined the engine."""
    return {name: data[name] for name in ("history", "last_timestamp", "ewma", "count")}
