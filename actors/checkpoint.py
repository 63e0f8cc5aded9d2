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
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow.fs as pafs
from kafka import KafkaConsumer, TopicPartition
from kafka.structs import OffsetAndMetadata

if TYPE_CHECKING:
    from actors.sinks import Sinks
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


class Checkpointer:
    """Makes a partition's progress durable; :meth:`commit` is the only way to do it."""

    def __init__(self, store: CheckpointStore, sinks: Sinks, consumer: KafkaConsumer, topic: str,
                 commit_timeout_ms: int = 10_000) -> None:
        self.store = store
        self.sinks = sinks
        self.consumer = consumer
        self.topic = topic
        self.commit_timeout_ms = commit_timeout_ms

    def commit(self, states: Iterable[PartitionState]) -> float:
        """Checkpoint ``states``; returns the seconds it took. The steps run in this order:

        1. Flush the sinks: each partition's buffered lake rows become one Parquet file
           keyed by (log epoch, partition, first offset) — a replay from the previous
           checkpoint rewrites the same key — and the alert/DLQ producer is flushed,
           so everything the snapshot covers has been delivered.
        2. Write each partition's per-sensor state together with its next offset (and
           the output offsets used to suppress replayed alerts) atomically: temp file
           + rename. From here a restart resumes at the new offset.
        3. Commit the next offsets to Kafka under the group id, so standard lag tools
           see our progress. Kafka's copy is informational: if this step fails the
           snapshot still rules, and the next checkpoint commits again.

        Partitions with nothing new since their last snapshot are skipped. A failure
        in step 1 or 2 raises before anything later runs: the previous snapshot stays
        in force and the input is replayed from it.
        """
        started = time.perf_counter()
        states = [s for s in states if s.next_offset is not None and s.dirty]
        if not states:
            return 0.0
        # 1. sinks
        for state in states:
            self.sinks.lake.flush(state)
        self.sinks.flush_producer()
        for state in states:
            state.note_output_offsets(self.sinks)
        # 2. state + next offset, atomically per partition
        for state in states:
            self.store.save_snapshot(self.topic, state.partition, state.snapshot())
            state.after_snapshot(self.store)
        # 3. Kafka offsets (for lag tools)
        offsets = {TopicPartition(self.topic, s.partition): OffsetAndMetadata(s.next_offset, "", -1)
                   for s in states}
        try:
            self.consumer.commit(offsets, timeout_ms=self.commit_timeout_ms)
            for state in states:
                state.committed_to_kafka = state.next_offset
        except Exception as err:  # informational copy; the snapshot is authoritative
            log.warning("checkpoint: offsets saved but not committed to Kafka (%s); retried next checkpoint",
                        err)
        return time.perf_counter() - started
