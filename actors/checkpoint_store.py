"""The checkpoint store: atomic blobs (partition snapshots, evicted sensors) on any pyarrow filesystem.

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

import pickle
import uuid
from pathlib import Path
from typing import Any

import pyarrow.fs as pafs

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
