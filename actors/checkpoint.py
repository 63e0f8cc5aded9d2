"""The checkpoint: the one ordered commit that makes partitions' progress durable.

:meth:`Checkpointer.commit` lists its steps; the blobs it writes go to the
:class:`~actors.checkpoint_store.CheckpointStore`.
"""

from __future__ import annotations

import logging
import pickle
import time
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING

from actors.checkpoint_store import SNAPSHOT_FORMAT, CheckpointError, CheckpointStore

if TYPE_CHECKING:
    from actors.partition_reader import PartitionReader
    from actors.sinks import LakeBatch, Sinks
    from actors.state import PartitionState

log = logging.getLogger(__name__)


@dataclass
class _Captured:
    """What one checkpoint covers for one partition, captured on the loop thread."""

    state: PartitionState
    next_offset: int
    epoch: int
    snapshot: bytes
    lake: LakeBatch
    restored: set[str]


class Checkpointer:
    """Makes partitions' progress durable; :meth:`commit` is the only way to do it.

    The slow part (Parquet and snapshot writes, the producer flush) runs on one
    writer thread so the loop keeps polling meanwhile (measured: a synchronous
    checkpoint stalled the loop 80-260 ms, the whole latency budget); the Kafka
    commit is issued back on the loop thread, which owns the reader, and is not
    waited for (its answer comes through the reader's next poll).
    """

    def __init__(self, store: CheckpointStore, sinks: Sinks, reader: PartitionReader) -> None:
        self.store = store
        self.sinks = sinks
        self.reader = reader
        self.topic = reader.topic
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="checkpoint")
        self._inflight: tuple[Future, list[_Captured], float] | None = None
        self.last_duration_s: float | None = None
        self.last_error: str | None = None

    def commit(self, states: Iterable[PartitionState], *, wait: bool = True) -> bool:
        """Checkpoint ``states``; returns False if there was nothing to do. The steps, in order:

        0. (loop thread) Capture what the checkpoint covers: each partition's next
           offset, its pickled state, its buffered lake rows, and the output offsets
           already known delivered (lower bounds for the successor's duplicate scan).
        1. (writer thread) Flush the sinks: each partition's lake rows become one
           Parquet file keyed by (log epoch, partition, first offset) — a replay from
           the previous checkpoint rewrites the same key — then the alert/DLQ
           producer is flushed, so all output the snapshot covers is delivered.
        2. (writer thread) Write each partition's state together with its next offset
           atomically: temp file + rename. From here a restart resumes at the new offset.
        3. (loop thread, in :meth:`finish`) Commit the next offsets to Kafka under the
           group id, so standard lag tools see our progress. Kafka's copy is
           informational: if it fails the snapshot still rules. The commit is sent
           without waiting; ``state.committed_to_kafka`` (what the broker-reset check
           compares against) moves only once the broker confirmed it.

        A failure in step 1 or 2 stops that checkpoint before anything later runs:
        the previous snapshot stays in force and the lake rows go back to the buffer.
        At most one checkpoint is in flight; ``wait=True`` (release, shutdown) returns
        once step 3 is sent (closing the reader waits for commits in flight).
        Partitions with nothing new since their last snapshot are skipped.
        """
        self.finish(block=True)
        states = [s for s in states if s.next_offset is not None and s.dirty]
        if not states:
            return False
        started = time.perf_counter()
        captured = []
        for state in states:
            state.note_output_offsets(self.sinks)
            captured.append(_Captured(
                state, state.next_offset, state.epoch, pickle.dumps({"format": SNAPSHOT_FORMAT, **state.snapshot()},
                                                                    protocol=5),
                self.sinks.lake.take(state.partition, state.next_offset), state.take_restored()))
            state.messages_since_checkpoint = 0
            state.dirty = False
        future = self._writer.submit(self._write, captured)
        self._inflight = (future, captured, started)
        if wait:
            self.finish(block=True)
            if self.last_error:
                raise CheckpointError(self.last_error)
        return True

    def _write(self, captured: list[_Captured]) -> None:
        for c in captured:
            self.sinks.lake.write(c.lake, c.epoch)
        self.sinks.flush_producer()
        for c in captured:
            self.store.write(self.store.snapshot_path(self.topic, c.state.partition), c.snapshot)

    def finish(self, block: bool = False) -> float | None:
        """Complete the checkpoint in flight (step 3) if its writes are done; returns its duration."""
        if self._inflight is None:
            return None
        future, captured, started = self._inflight
        if not block and not future.done():
            return None
        self._inflight = None
        try:
            future.result()
        except Exception as err:
            self.last_error = f"{type(err).__name__}: {err}"
            log.error("checkpoint failed, the previous snapshot stays in force: %s", self.last_error)
            for c in captured:
                self.sinks.lake.put_back(c.lake)
                c.state.restore_restored(c.restored)
                c.state.dirty = True
            return None
        self.last_error = None
        for c in captured:
            c.state.after_snapshot(self.store, c.restored)
        self.reader.commit({c.state.partition: c.next_offset for c in captured},
                           lambda _offsets, error: self._committed(captured, error))
        self.last_duration_s = time.perf_counter() - started
        return self.last_duration_s

    @staticmethod
    def _committed(captured: list[_Captured], error: str | None) -> None:
        """The broker's answer to step 3, on the loop thread (from the reader's poll)."""
        if error is not None:  # informational copy; the snapshot is authoritative
            log.warning("checkpoint: offsets saved but not committed to Kafka (%s); retried next checkpoint", error)
            return
        for c in captured:
            # A late answer for a log the broker has since lost (reset: new epoch) must not count.
            if c.state.epoch == c.epoch:
                c.state.committed_to_kafka = max(c.next_offset, c.state.committed_to_kafka or 0)

    def close(self) -> None:
        self.finish(block=True)
        self._writer.shutdown(wait=True)
