"""Where a worker's output goes: alerts and rejected input to Kafka, accepted readings to the lake.

Every output is keyed so that reprocessing after a crash is idempotent:

- alerts: key = sensor_id, ``alert_id`` deterministic; a new owner also scans the
  alerts written since the last snapshot and does not send them again;
- dead letters: key = ``<topic>/<partition>/<offset>`` of the source record (and
  the same three as headers), likewise suppressed when already written;
- lake: one Parquet file per (log epoch, partition, first offset) written at
  checkpoint time, so a replay from the previous checkpoint rewrites the same key
  (``ingest.lake`` writes it atomically, split by date).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.fs as pafs
from kafka import TopicPartition

from ingest import kafka_clients
from ingest.broker import BrokerError
from ingest.lake import filesystem as lake_filesystem
from ingest.lake import write_lake_file
from ingest.settings import KafkaSecuritySettings
from ingest.validation import Problem, dead_letter_headers
from train.features import FEATURE_NAMES

log = logging.getLogger(__name__)


class SinkError(RuntimeError):
    """Output that could not be delivered; the checkpoint must not advance past it."""


@dataclass
class LakeBatch:
    """Rows of one partition taken from the buffer for one file: offsets from ``start`` on."""

    partition: int
    start: int
    parts: list[dict[str, Any]]


class LakeSink:
    """Buffers accepted readings with their features per partition until the next checkpoint."""

    def __init__(self, root: str, topic: str) -> None:
        self.root = root
        self.topic = topic
        self._parts: dict[int, list[dict[str, Any]]] = {}
        self._start: dict[int, int] = {}

    def begin(self, partition: int, start_offset: int) -> None:
        """Input offset from which the next file counts (the last checkpoint's offset)."""
        self._start[partition] = start_offset
        self._parts[partition] = []

    def add(self, partition: int, offsets: np.ndarray, sensor_ids: list[str], timestamps: np.ndarray,
            arrival_times: np.ndarray, features: np.ndarray, processed_at: float) -> None:
        if len(offsets):
            self._parts.setdefault(partition, []).append({
                "offsets": offsets, "sensor_ids": sensor_ids, "timestamps": timestamps,
                "arrival": arrival_times, "features": features, "processed_at": processed_at})
            self._start.setdefault(partition, int(offsets[0]))

    def drop(self, partition: int) -> None:
        self._parts.pop(partition, None)
        self._start.pop(partition, None)

    def pending_rows(self, partition: int) -> int:
        return sum(len(p["offsets"]) for p in self._parts.get(partition, ()))

    def key_prefix(self, epoch: int, partition: int) -> str:
        return f"{self.topic}-e{epoch:03d}-p{partition:04d}-o"

    def key(self, epoch: int, partition: int, start: int) -> str:
        # The first offset only (not the last): a replay from the same checkpoint may cut its
        # first flush at another offset, and must still replace the file of the lost attempt.
        return f"{self.key_prefix(epoch, partition)}{start:012d}"

    def remove_orphans(self, epoch: int, partition: int, from_offset: int, recent_days: int = 3) -> list[str]:
        """Delete files of this partition that start at or after ``from_offset``.

        Such files were flushed by a checkpoint whose snapshot never became durable
        (the owner died between steps 1 and 2). The replay rewrites the first one
        under the same key, but if that flush spanned two dates the part on the
        other date would survive beside a new key: remove them all first. Only the
        latest ``recent_days`` date directories are searched (a lost checkpoint is seconds old).
        """
        fs, base = lake_filesystem(self.root)
        if fs.get_file_info(base).type == pafs.FileType.NotFound:
            return []
        days = sorted(i.path for i in fs.get_file_info(pafs.FileSelector(base))
                      if i.type == pafs.FileType.Directory and i.base_name.startswith("date="))
        prefix = self.key_prefix(epoch, partition)
        removed = []
        for day in days[-recent_days:]:
            for info in fs.get_file_info(pafs.FileSelector(day)):
                name = info.base_name
                if name.startswith(prefix) and name.endswith(".parquet"):
                    first = name[len(prefix):-len(".parquet")]
                    if first.isdigit() and int(first) >= from_offset:
                        fs.delete_file(info.path)
                        removed.append(info.path)
        if removed:
            log.warning("lake: removed %d file(s) of partition %d flushed by a checkpoint that never completed",
                        len(removed), partition)
        return removed

    def take(self, partition: int, next_offset: int) -> LakeBatch:
        """Hand over the partition's buffered rows (up to ``next_offset``) and start a new buffer there."""
        batch = LakeBatch(partition, self._start.get(partition, next_offset), self._parts.get(partition, []))
        self.begin(partition, next_offset)
        return batch

    def put_back(self, batch: LakeBatch) -> None:
        """A write that failed: its rows go back in front of the buffer, under their old start offset."""
        self._parts[batch.partition] = batch.parts + self._parts.get(batch.partition, [])
        self._start[batch.partition] = batch.start

    def write(self, batch: LakeBatch, epoch: int) -> str | None:
        """Write one taken batch as one file (thread-safe: touches nothing of the buffer); returns its key."""
        if not batch.parts:
            return None
        key = self.key(epoch, batch.partition, batch.start)
        write_lake_file(self.root, key, self.table(batch.partition, epoch, batch.parts))
        return key

    def table(self, partition: int, epoch: int, parts: list[dict[str, Any]]) -> pa.Table:
        """The lake rows of ``parts``, as an Arrow table built straight from the buffered arrays."""
        offsets = np.concatenate([p["offsets"] for p in parts])
        n = len(offsets)
        features = np.vstack([p["features"] for p in parts])
        columns: dict[str, Any] = {
            # large_string, as pandas 3 strings become: files written before and after read together.
            "sensor_id": pa.array([s for p in parts for s in p["sensor_ids"]], pa.large_string()),
            "timestamp": np.concatenate([p["timestamps"] for p in parts]),  # epoch seconds, as the lake wants
            "kafka_topic": pa.array([self.topic], pa.large_string()).take(np.zeros(n, dtype=np.int64)),
            "kafka_partition": np.full(n, partition, dtype=np.int32),
            "kafka_offset": offsets.astype(np.int64),
            "log_epoch": np.full(n, epoch, dtype=np.int32),
            "arrival_time": np.concatenate([p["arrival"] for p in parts]),
            # When detection had run on the row: processed_at - arrival_time is the stream's latency.
            "processed_at": np.concatenate([np.full(len(p["offsets"]), p["processed_at"]) for p in parts]),
        }
        by_feature = np.ascontiguousarray(features.T)  # one transposing copy, not one strided copy per column
        for j, name in enumerate(FEATURE_NAMES):
            columns[name] = by_feature[j]
        return pa.table(columns)


class Sinks:
    """The worker's producer (alerts + dead letters) and its lake sink."""

    def __init__(self, bootstrap_servers: str, topic: str, alerts_topic: str, dlq_topic: str, lake_root: str,
                 client_id: str, security: KafkaSecuritySettings | None = None) -> None:
        self.topic = topic
        self.alerts_topic = alerts_topic
        self.dlq_topic = dlq_topic
        # linger 0: an alert leaves as soon as it is made (the 1 s budget); acks=all so that
        # "flushed" at checkpoint time means "stored by the broker".
        self.producer = kafka_clients.producer(bootstrap_servers, security, client_id=client_id, acks="all",
                                               linger_ms=0, retries=5)
        parts = None
        deadline = time.monotonic() + 10
        while not parts and time.monotonic() < deadline:
            parts = self.producer.partitions_for(alerts_topic)
        if not parts:
            if security is not None and security.protocol != "PLAINTEXT":
                # No metadata at all may be a refused handshake, not a missing topic: say which.
                try:
                    kafka_clients.check_connection(bootstrap_servers, security)
                except BrokerError as err:
                    self.producer.close(timeout=0)
                    raise SinkError(str(err)) from None
            self.producer.close(timeout=0)
            raise SinkError(f"the alerts topic {alerts_topic!r} does not exist on {bootstrap_servers}")
        self.alert_partitions = len(parts)
        self.lake = LakeSink(lake_root, topic)
        self._lock = threading.Lock()
        self._errors: list[str] = []
        self._alerts_end: dict[int, int] = {}
        self._dlq_end: int | None = None

    def alert_partition(self, partition: int) -> int:
        """Alerts of a readings partition go to one alerts partition, keeping each sensor's alerts ordered."""
        return partition % self.alert_partitions

    def send_alert(self, partition: int, alert: Any) -> None:
        target = self.alert_partition(partition)
        future = self.producer.send(self.alerts_topic, key=alert.sensor_id.encode(), value=alert.to_message(),
                                    partition=target)
        future.add_callback(self._delivered_alert).add_errback(self._failed, "alert")

    def send_dead_letter(self, raw: bytes | None, key: bytes | None, problems: list[Problem], partition: int,
                         offset: int, timestamp_ms: int | None) -> None:
        headers = [
            *dead_letter_headers(problems),
            ("source_topic", self.topic.encode()),
            ("source_partition", str(partition).encode()),
            ("source_offset", str(offset).encode()),
        ]
        if key is not None:
            headers.append(("source_key", key))
        if timestamp_ms is not None:
            headers.append(("source_timestamp_ms", str(timestamp_ms).encode()))
        future = self.producer.send(self.dlq_topic, key=f"{self.topic}/{partition}/{offset}".encode(),
                                    value=raw, headers=headers)
        future.add_callback(self._delivered_dlq).add_errback(self._failed, "dead letter")

    def _delivered_alert(self, metadata: Any) -> None:
        with self._lock:
            end = self._alerts_end.get(metadata.partition, 0)
            self._alerts_end[metadata.partition] = max(end, metadata.offset + 1)

    def _delivered_dlq(self, metadata: Any) -> None:
        with self._lock:
            self._dlq_end = max(self._dlq_end or 0, metadata.offset + 1)

    def _failed(self, err: Exception, what: str) -> None:
        with self._lock:
            self._errors.append(f"{what}: {err!r}")

    def flush_producer(self, timeout_s: float = 30.0) -> None:
        self.producer.flush(timeout=timeout_s)
        with self._lock:
            errors, self._errors = self._errors, []
        if errors:
            raise SinkError(f"{len(errors)} output record(s) not delivered, first: {errors[0]}")

    def alerts_end(self, partition: int, previous: int | None) -> int | None:
        with self._lock:
            end = self._alerts_end.get(self.alert_partition(partition))
        return previous if end is None else max(end, previous or 0)

    def dlq_end(self, previous: int | None) -> int | None:
        with self._lock:
            end = self._dlq_end
        return previous if end is None else max(end, previous or 0)

    def close(self) -> None:
        self.producer.close(timeout=10)


def scan_written(bootstrap_servers: str, topic: str, partition: int, start: int | None,
                 extract: Callable[[Any], Any | None], timeout_s: float = 5.0,
                 security: KafkaSecuritySettings | None = None) -> set[Any]:
    """What is already in ``topic[partition]`` from ``start`` on (None: from the beginning).

    Reads until a poll comes back empty at the high watermark (never "until
    end_offsets": it under-reports on Tansu), or until ``timeout_s``.
    """
    consumer = kafka_clients.consumer(bootstrap_servers, security, enable_auto_commit=False,
                                      auto_offset_reset="earliest", client_id="smoke-scan")
    found: set[Any] = set()
    try:
        tp = TopicPartition(topic, partition)
        consumer.assign([tp])
        if start is None:
            consumer.seek_to_beginning(tp)
        else:
            consumer.seek(tp, start)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            batch = consumer.poll(timeout_ms=200, max_records=5000).get(tp, [])
            for record in batch:
                item = extract(record)
                if item is not None:
                    found.add(item)
            highwater = consumer.highwater(tp)
            if not batch and highwater is not None and consumer.position(tp, timeout_ms=2000) >= highwater:
                break
        else:
            log.warning("scan of %s[%d] stopped after %.0f s; replayed outputs may repeat", topic, partition,
                        timeout_s)
    finally:
        consumer.close(autocommit=False)
    return found


def alert_identity(record: Any) -> tuple[str, str] | None:
    try:
        doc = orjson.loads(record.value)
        return doc["alert_id"], doc["state"]
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return None


def dead_letter_source(topic: str, partition: int) -> Callable[[Any], int | None]:
    def extract(record: Any) -> int | None:
        headers = dict(record.headers or ())
        if headers.get("source_topic") == topic.encode() and headers.get("source_partition") == str(
                partition).encode():
            return int(headers["source_offset"])
        return None
    return extract


def unique_reasons(problem_lists: Iterable[list[Problem]]) -> list[str]:
    """One count per rejected reading and reason (a reading with two bad fields counts once per reason)."""
    return [reason for problems in problem_lists for reason in sorted({p.reason for p in problems})]
