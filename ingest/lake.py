"""The Parquet lake of accepted readings (plus optional feature columns), and its rejects beside it.

Layout, under a root that is a local path or any pyarrow filesystem URI
(``s3://bucket/lake``, ``gs://...``, ``file:///...``)::

    <root>/date=YYYY-MM-DD/<key>.parquet      accepted readings, partitioned by UTC date
    <root>/_rejects/<key>.parquet             rejected rows with their reasons

A file's name is its writer's key, so writing the same key again replaces the
same files: the stream writes ``p{partition:04d}-{first:012d}-{last:012d}``
(see :func:`stream_key`) per flush and the loader a key from the source file's
fingerprint, which makes reprocessing idempotent. Every file is written to a
hidden temporary name and renamed into place, so a reader never sees half a
file. Readers skip names starting with ``_`` or ``.``, so rejects and
temporaries never mix with readings.

>>> import tempfile, pandas as pd
>>> tmp = tempfile.TemporaryDirectory(); root = tmp.name
>>> frame = pd.DataFrame({"sensor_id": ["a", "b"], "timestamp": [1654733331.0, 1654819731.0],
...                       "temperature_c": [20.5, 21.0]})
>>> [p.split("/")[-2] for p in write_lake_file(root, stream_key(3, 0, 1), frame)]
['date=2022-06-09', 'date=2022-06-10']
>>> _ = write_lake_file(root, stream_key(3, 0, 1), frame)  # the same key again replaces, never duplicates
>>> read_lake(root)["sensor_id"].tolist(), len(read_lake(root, since=1654800000.0))
(['a', 'b'], 1)
>>> read_lake(root, until=1654800000.0)["sensor_id"].tolist(), read_lake(root, sensor_id="b")["sensor_id"].tolist()
(['a'], ['b'])
>>> tmp.cleanup()
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from ingest.schema import SENSOR_ID, TIMESTAMP

PARTITION = "date"
REJECTS_DIR = "_rejects"
REJECT_COLUMNS = ("source", "position", "reasons", "problems", "raw")
_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}")


class LakeError(ValueError):
    """A lake that cannot be written or read as asked; the message says which path and why."""


def stream_key(partition: int, first_offset: int, last_offset: int) -> str:
    """The key of a stream flush: the Kafka partition and the offsets it covers.

    >>> stream_key(3, 120, 4_000)
    'p0003-000000000120-000000004000'
    """
    return f"p{partition:04d}-{first_offset:012d}-{last_offset:012d}"


def filesystem(root: str | os.PathLike) -> tuple[pafs.FileSystem, str]:
    """A lake root (local path or pyarrow filesystem URI) -> (filesystem, path within it)."""
    root = str(root)
    if "://" in root:
        try:
            return pafs.FileSystem.from_uri(root)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, OSError) as err:
            raise LakeError(f"cannot open lake {root}: {err}") from None
    return pafs.LocalFileSystem(), os.path.abspath(root)


def write_lake_file(root: str | os.PathLike, key: str, frame: pd.DataFrame | pa.Table) -> list[str]:
    """Write ``frame`` (with ``sensor_id`` and ``timestamp`` in epoch seconds) under its UTC dates.

    One file ``date=YYYY-MM-DD/<key>.parquet`` per date the rows fall on,
    written atomically; returns their paths. Rewriting a key replaces its files.
    """
    _check_key(key)
    is_table = isinstance(frame, pa.Table)
    names = frame.column_names if is_table else list(frame.columns)
    for column in (SENSOR_ID, TIMESTAMP):
        if column not in names:
            raise LakeError(f"lake rows need a {column!r} column (got {names})")
    if PARTITION in names:
        raise LakeError(f"{PARTITION!r} is the lake's partition column; do not pass it in the rows")
    # Checked before any conversion to Arrow, which would fail on a mixed column with its own error.
    raw_stamps = frame.column(TIMESTAMP).to_pandas() if is_table else frame[TIMESTAMP]
    stamps = pd.to_numeric(raw_stamps, errors="coerce").to_numpy(dtype=np.float64)
    if len(stamps) and not np.isfinite(stamps).all():
        raise LakeError("lake rows need a finite epoch-seconds timestamp on every row (validate them first)")
    # Arrow all the way: the stream hands over an Arrow table built from its arrays, and a
    # DataFrame round trip would hold the GIL the stream's loop needs (about 30 ms per 50,000 rows).
    table = frame if is_table else pa.Table.from_pandas(frame, preserve_index=False)
    fs, base = filesystem(root)
    days = (stamps // 86_400).astype(np.int64)
    unique_days = np.unique(days)
    written = []
    for day in unique_days:
        part = table if len(unique_days) == 1 else table.take(np.flatnonzero(days == day))
        date = datetime.fromtimestamp(int(day) * 86_400, UTC).strftime("%Y-%m-%d")
        written.append(_write_atomic(fs, f"{base}/{PARTITION}={date}", f"{key}.parquet", part))
    return written


def read_lake(root: str | os.PathLike, columns: Sequence[str] | None = None, since: float | datetime | None = None,
              until: float | None = None, sensor_id: str | None = None) -> pd.DataFrame:
    """Readings of the lake in time order; ``since`` keeps readings at or after that time, ``until`` those
    before it, ``sensor_id`` one sensor's (the operator console's plot around an incident).

    Files written with and without feature columns read together (missing
    columns are null). ``columns`` selects columns; ``date`` (the partition) is
    included only when asked for.
    """
    fs, base = filesystem(root)
    info = fs.get_file_info(base)
    if info.type == pafs.FileType.NotFound:
        raise LakeError(f"lake {root} does not exist")
    dataset = ds.dataset(base, filesystem=fs, format="parquet", partitioning="hive",
                         exclude_invalid_files=False)
    if not dataset.files:
        return pd.DataFrame({c: [] for c in (columns or (SENSOR_ID, TIMESTAMP))})
    try:
        schema = pa.unify_schemas([f.physical_schema for f in dataset.get_fragments()])
    except (pa.ArrowInvalid, pa.ArrowTypeError) as err:
        raise LakeError(f"lake {root} holds files whose columns disagree in type: {err}") from None
    schema = schema.append(pa.field(PARTITION, pa.string()))
    dataset = ds.dataset(base, filesystem=fs, format="parquet", schema=schema, partitioning="hive")
    wanted = list(columns) if columns is not None else [n for n in schema.names if n != PARTITION]
    unknown = [c for c in wanted if c not in schema.names]
    if unknown:
        raise LakeError(f"lake {root} has no columns {unknown} (it has {schema.names})")
    condition = None
    if since is not None:
        seconds = since.timestamp() if isinstance(since, datetime) else float(since)
        first_day = datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%d")
        condition = (ds.field(PARTITION) >= first_day) & (ds.field(TIMESTAMP) >= seconds)
    if until is not None:
        last_day = datetime.fromtimestamp(float(until), UTC).strftime("%Y-%m-%d")
        before = (ds.field(PARTITION) <= last_day) & (ds.field(TIMESTAMP) < float(until))
        condition = before if condition is None else condition & before
    if sensor_id is not None:
        one = ds.field(SENSOR_ID) == sensor_id
        condition = one if condition is None else condition & one
    read = list(dict.fromkeys([*wanted, TIMESTAMP]))
    table = dataset.to_table(columns=read, filter=condition)
    frame = table.to_pandas()
    frame = frame.sort_values(TIMESTAMP, kind="stable", ignore_index=True)
    return frame[wanted]


def write_rejects(root: str | os.PathLike, key: str, rejects: pd.DataFrame) -> str | None:
    """Write rejected rows (columns :data:`REJECT_COLUMNS`) to ``<root>/_rejects/<key>.parquet``.

    ``source`` names where the rows came from, ``position`` is the row or offset
    in it, ``reasons`` the distinct reasons joined by commas, ``problems`` the
    JSON list of problems and ``raw`` the original bytes. Nothing is written for
    an empty frame (and an earlier file of the key is removed, so reruns agree).
    """
    _check_key(key)
    missing = [c for c in REJECT_COLUMNS if c not in rejects.columns]
    if missing:
        raise LakeError(f"rejects need columns {missing}")
    fs, base = filesystem(root)
    if rejects.empty:
        target = f"{base}/{REJECTS_DIR}/{key}.parquet"
        if fs.get_file_info(target).type == pafs.FileType.File:
            fs.delete_file(target)
        return None
    return _write_atomic(fs, f"{base}/{REJECTS_DIR}", f"{key}.parquet",
                         pa.Table.from_pandas(rejects[list(REJECT_COLUMNS)], preserve_index=False))


def read_rejects(root: str | os.PathLike) -> pd.DataFrame:
    """Every rejected row beside the lake (empty if there are none)."""
    fs, base = filesystem(root)
    where = f"{base}/{REJECTS_DIR}"
    if fs.get_file_info(where).type == pafs.FileType.NotFound:
        return pd.DataFrame({c: [] for c in REJECT_COLUMNS})
    return ds.dataset(where, filesystem=fs, format="parquet").to_table().to_pandas()


def _check_key(key: str) -> None:
    if not _KEY.fullmatch(key):
        raise LakeError(f"lake key {key!r} must be 1..200 characters of A-Z a-z 0-9 . _ - (no slashes)")


def _write_atomic(fs: pafs.FileSystem, directory: str, name: str, table: pa.Table) -> str:
    """Write a Parquet file under a hidden temporary name, then rename it into place."""
    fs.create_dir(directory, recursive=True)
    final = f"{directory}/{name}"
    temp = f"{directory}/.{name}.{uuid.uuid4().hex}.tmp"
    try:
        pq.write_table(table, temp, filesystem=fs)
        fs.move(temp, final)
    except BaseException:
        if fs.get_file_info(temp).type == pafs.FileType.File:
            fs.delete_file(temp)
        raise
    return final
