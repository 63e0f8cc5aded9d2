"""Broker-reset watching: noticing that the broker lost a partition's log, and starting over on the new one.

A broker that restarts with an empty log (the embedded default keeps nothing) shows
it in two ways: a partition's next offset lies beyond the partition's end, or the
group offset we committed is gone. Either way the partition continues from the new
log's beginning as a new log epoch (lake files are keyed by epoch, so nothing of
the old log is overwritten). Reachability of the broker is another matter:
:mod:`actors.broker_watch`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

from actors.partition_reader import PartitionReader
from actors.sinks import Sinks
from actors.state import PartitionState
from ingest.broker import ensure_topics
from ingest.settings import KafkaSettings

log = logging.getLogger(__name__)


class LogResetWatch:
    """Watches owned partitions for a lost log; ``checkpoint(states)`` keeps what the old log gave."""

    def __init__(self, bootstrap_servers: str, kafka: KafkaSettings, worker_id: str, reader: PartitionReader,
                 sinks: Sinks, grace_s: float, checkpoint: Callable[[list[PartitionState]], Any]) -> None:
        self.bootstrap_servers = bootstrap_servers
        self.kafka = kafka
        self.worker_id = worker_id
        self.reader = reader
        self.sinks = sinks
        self.grace_s = grace_s
        self._checkpoint = checkpoint
        self._beyond_end_since: dict[int, float] = {}
        self._next_committed_check = 0.0

    def forget(self, partition: int) -> None:
        """The partition was released."""
        self._beyond_end_since.pop(partition, None)

    def check_end(self, state: PartitionState, highwater: int, mono: float) -> bool:
        """A next offset beyond the partition's end for ``grace_s``: the broker lost its log. True if reset.

        The grace period is there because the reported high watermark can trail the
        real end by a few records for a moment.
        """
        if state.next_offset is None or state.next_offset <= highwater:
            self._beyond_end_since.pop(state.partition, None)
            return False
        since = self._beyond_end_since.setdefault(state.partition, mono)
        if mono - since < self.grace_s:
            return False
        self.reset(state, f"offset {state.next_offset} is beyond the partition's end {highwater}")
        return True

    def check_committed(self, states: Iterable[PartitionState], mono: float) -> int:
        """Offsets we committed that the broker no longer knows (checked every ``grace_s``); returns resets."""
        if mono < self._next_committed_check:
            return 0
        self._next_committed_check = mono + self.grace_s
        resets = 0
        for state in list(states):
            if not state.committed_to_kafka:
                continue
            committed = self.reader.committed(state.partition, timeout_s=5.0)
            if committed is None or committed < state.committed_to_kafka:
                self.reset(state, f"the group offset {state.committed_to_kafka} we committed is now {committed}")
                resets += 1
        return resets

    def reset(self, state: PartitionState, cause: str) -> None:
        p = state.partition
        log.warning("%s: partition %d: the broker lost its log (%s); reading the new log from its beginning "
                    "as epoch %d", self.worker_id, p, cause, state.epoch + 1)
        self._beyond_end_since.pop(p, None)
        ensure_topics(self.bootstrap_servers, self.kafka)
        try:
            self._checkpoint([state])  # keep what was consumed from the old log (lake + state)
        except Exception as err:  # the old log is gone; its outputs may be too
            log.warning("%s: partition %d: checkpoint before the reset failed: %s", self.worker_id, p, err)
        state.epoch += 1
        state.next_offset = None
        state.committed_to_kafka = None
        state.alerts_offset = state.dlq_offset = None
        state.suppress_alerts, state.suppress_dlq = set(), set()
        self.sinks.lake.drop(p)
        self.reader.seek_to_beginning(p)
