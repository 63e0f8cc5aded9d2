"""Checkpoints: the per-partition snapshot store and the one ordered commit.

The store is a local directory by default or any pyarrow filesystem URI
(``s3://bucket/prefix``, ``gs://...``, ``file:///...``) on a cluster, so a
partition can be restored on whichever node its new owner lands. Layout::

    <root>/<topic>/partition-0003/state.ckpt              snapshot + next offset
    <root>/<topic>/partition-0003/evicted/<sensor_id>.bin  state of an idle sensor

Writes go to a temporary name first and are renamed into place: a reader sees
the previous snapshot or the new one, never half a file (on object stores,
where a rename is a copy, an object still appears whole).
"""

from __future__ import annotations

import logging
import pickle
import time
import uuid
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow.fs as pafs

if TYPE_CHECKING:
    from actors.partition_reader import PartitionReader
    from actors.sinks import LakeBatch, Sinks
    from actors.state import PartitionState

log = logging.getLogger(__name__)

SNAPSHOT_FORMAT = 1


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be written or read; the message names the path."""


class CheckpointStore:
    """Atomic blobs under a root directory on any pyarrow filesystem."""

    def __init__(self, uri: str) -> None:
        if "://" in uri:
            self.fs, root = pafs.FileSystem.from_uri(uri)
        else:
            # Relative local paths are resolved once, here, so that every process agrees.
            self.fs, root = pafs.LocalFileSystem(), str(Path(uri).resolve())
        self.root = root.rstrip("/")
        self.uri = uri

    def path(self, *parts: str) -> str:
        return "/".join((self.root, *parts))

    def write(self, path: str, data: bytes) -> None:
        parent = path.rsplit("/", 1)[0]
        tmp = f"{path}.tmp-{uuid.uuid4().hex[:12]}"
        try:
            self.fs.create_dir(parent, recursive=True)
            with self.fs.open_output_stream(tmp) as out:
                out.write(data)
            self.fs.move(tmp, path)
        except OSError as err:
            raise CheckpointError(f"cannot write {path}: {err}") from None

    def read(self, path: str) -> bytes | None:
        try:
            with self.fs.open_input_stream(path) as stream:
                return stream.read()
        except FileNotFoundError:
            return None
        except OSError as err:
            if self.fs.get_file_info(path).type == pafs.FileType.NotFound:
                return None
            raise CheckpointError(f"cannot read {path}: {err}") from None

    def delete(self, path: str) -> None:
        try:
            self.fs.delete_file(path)
        except FileNotFoundError:
            pass
        except OSError as err:
            if self.fs.get_file_info(path).type != pafs.FileType.NotFound:
                raise CheckpointError(f"cannot delete {path}: {err}") from None

    # Per-partition names -------------------------------------------------

    def snapshot_path(self, topic: str, partition: int) -> str:
        return self.path(topic, f"partition-{partition:04d}", "state.ckpt")

    def evicted_path(self, topic: str, partition: int, sensor_id: str) -> str:
        return self.path(topic, f"partition-{partition:04d}", "evicted", f"{sensor_id}.bin")

    def save_snapshot(self, topic: str, partition: int, snapshot: dict[str, Any]) -> None:
        self.write(self.snapshot_path(topic, partition),
                   pickle.dumps({"format": SNAPSHOT_FORMAT, **snapshot}, protocol=5))

    def load_snapshot(self, topic: str, partition: int) -> dict[str, Any] | None:
        path = self.snapshot_path(topic, partition)
        raw = self.read(path)
        if raw is None:
            return None
        # Snapshots are written only by our workers into a store the operator controls.
        snapshot = pickle.loads(raw)
        if snapshot.get("format") != SNAPSHOT_FORMAT:
            raise CheckpointError(f"{path}: snapshot format {snapshot.get('format')} is not {SNAPSHOT_FORMAT}")
        return snapshot

    def save_evicted(self, topic: str, partition: int, sensor_id: str, data: dict[str, Any]) -> None:
        self.write(self.evicted_path(topic, partition, sensor_id), pickle.dumps(data, protocol=5))

    def load_evicted(self, topic: str, partition: int, sensor_id: str) -> dict[str, Any] | None:
        raw = self.read(self.evicted_path(topic, partition, sensor_id))
        return None if raw is None else pickle.loads(raw)


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
