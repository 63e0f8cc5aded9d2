"""Partition ownership: which partitions a worker holds, and how each is restored when acquired.

A partition comes with its state: the last snapshot if there is one, else the
offset committed to Kafka, else the beginning of the log. Releasing a partition
checkpoints it first, so the next owner resumes where this one stopped. After a
failed loop iteration every owned partition is rebuilt from its snapshot
(:meth:`PartitionOwnership.recover`): the failed batch may have half-updated the
state and moved the consumer past unprocessed records.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from actors.checkpoint import Checkpointer
from actors.checkpoint_store import CheckpointStore
from actors.detection import DetectionEngine
from actors.partition_reader import PartitionReader
from actors.sinks import Sinks, alert_identity, dead_letter_source, scan_written
from actors.state import PartitionState
from ingest.settings import Settings
from train.model_watch import ModelWatch

log = logging.getLogger(__name__)


def engine_factory(settings: Settings, model: Any | None) -> Callable[[dict[str, Any] | None], Any]:
    """Builds a partition's detection engine, fresh or from its snapshot."""
    def make(snapshot: dict[str, Any] | None) -> Any:
        if snapshot is None:
            return DetectionEngine(settings.detection, model=model)
        return DetectionEngine.restore(settings.detection, snapshot, model)

    return make


class PartitionOwnership:
    """The owned partitions' states; ``checkpoint(states)`` is the loop's checkpoint (it keeps the counts)."""

    def __init__(self, settings: Settings, bootstrap_servers: str, worker_id: str, reader: PartitionReader,
                 store: CheckpointStore, sinks: Sinks, checkpointer: Checkpointer, model_watch: ModelWatch,
                 checkpoint: Callable[[list[PartitionState]], Any],
                 on_release: Callable[[int], None] = lambda _partition: None) -> None:
        self.settings = settings
        self.bootstrap_servers = bootstrap_servers
        self.worker_id = worker_id
        self.topic = settings.kafka.topic
        self.reader = reader
        self.store = store
        self.sinks = sinks
        self.checkpointer = checkpointer
        self.model_watch = model_watch
        self._checkpoint = checkpoint
        self._on_release = on_release
        self.states: dict[int, PartitionState] = {}
        self.owned: list[int] = []  # what recovery restores, even after a half-done set_partitions
        self.needs_recovery = False

    def set_partitions(self, partitions: list[int]) -> list[int]:
        """Own exactly ``partitions``: checkpoint and release the others, restore the new ones."""
        wanted = set(partitions)
        self.owned = sorted(wanted)
        try:
            return self._set_partitions(wanted)
        except Exception:
            self.needs_recovery = True
            raise

    def _set_partitions(self, wanted: set[int]) -> list[int]:
        released = [p for p in self.states if p not in wanted]
        if released:
            self._checkpoint([self.states[p] for p in released])
            for p in released:
                self.sinks.lake.drop(p)
                del self.states[p]
                self._on_release(p)
        acquired = sorted(wanted - set(self.states))
        for p in acquired:
            self.states[p] = self._restore(p)
        # assign() replaces the assignment and forgets positions: set all of them again.
        self.reader.assign({p: state.next_offset for p, state in self.states.items()})
        if released or acquired:
            log.info("%s: owns partitions %s (released %s, acquired %s)", self.worker_id, sorted(self.states),
                     released, acquired)
        return sorted(self.states)

    def _restore(self, partition: int) -> PartitionState:
        """Snapshot if there is one; else the offset committed to Kafka; else the beginning."""
        make_engine = engine_factory(self.settings, self.model_watch.model)
        snapshot = self.store.load_snapshot(self.topic, partition)
        if snapshot is not None:
            state = PartitionState.from_snapshot(snapshot, make_engine, restored_at=time.time())
            source = f"snapshot at offset {state.next_offset}"
        else:
            committed = self.reader.committed(partition, timeout_s=5.0)
            state = PartitionState(self.topic, partition, make_engine(None), next_offset=committed)
            source = f"committed offset {committed}" if committed is not None else "the beginning"
        if state.next_offset is not None:
            self.sinks.lake.remove_orphans(state.epoch, partition, state.next_offset)
            self.sinks.lake.begin(partition, state.next_offset)
        # Outputs a previous owner wrote after its last snapshot are not sent again.
        kafka = self.settings.kafka
        state.suppress_alerts = scan_written(
            self.bootstrap_servers, kafka.alerts_topic, self.sinks.alert_partition(partition),
            state.alerts_offset, alert_identity, security=kafka.security)
        state.suppress_dlq = scan_written(
            self.bootstrap_servers, kafka.dlq_topic, 0, state.dlq_offset,
            dead_letter_source(self.topic, partition), security=kafka.security)
        log.info("%s: partition %d restored from %s (%d sensors)", self.worker_id, partition, source,
                 state.sensors())
        return state

    def recover(self) -> None:
        """Rebuild every owned partition from its snapshot and seek back to its offset."""
        partitions = list(self.owned)
        try:
            self.checkpointer.finish(block=True)
        except Exception as err:  # the in-flight checkpoint is lost; the previous snapshot rules
            log.warning("%s: checkpoint in flight failed during recovery: %s", self.worker_id, err)
        for p in set(partitions) | set(self.states):
            self.sinks.lake.drop(p)
        self.states.clear()
        self.set_partitions(partitions)
        self.needs_recovery = False
