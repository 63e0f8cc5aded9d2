"""Helpers shared by the stream tests (real broker, real Ray; nothing here is a fake)."""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import orjson
import pandas as pd
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from actors.supervisor import get_stream, start_stream, stop_stream
from ingest.lake import read_lake
from ingest.schema import MEASUREMENTS
from ingest.settings import Settings

QUIET = {
    "temperature_c": 21.0, "humidity_pct": 45.0, "tvoc_ppb": 30.0, "eco2_ppm": 410.0, "raw_h2_ticks": 12900.0,
    "raw_ethanol_ticks": 19800.0, "pressure_hpa": 938.5, "pm1_0_ugm3": 2.0, "pm2_5_ugm3": 3.0,
    "nc0_5_per_cm3": 15.0, "nc1_0_per_cm3": 3.0, "nc2_5_per_cm3": 0.5,
}
assert set(QUIET) == set(MEASUREMENTS)


def reading(sensor_id: str, timestamp: float, i: int = 0, **values: float) -> bytes:
    """A valid reading with a little deterministic variation."""
    doc = {k: v * (1 + 0.001 * ((i * 7 + j) % 5)) for j, (k, v) in enumerate(QUIET.items())}
    doc |= values
    return orjson.dumps({"sensor_id": sensor_id, "timestamp": timestamp, **doc})


def stream_settings(settings: Settings, **stream: Any) -> Settings:
    """Test settings: a unique supervisor name and quick checkpoints unless overridden."""
    defaults = {"supervisor_name": f"stream-{uuid.uuid4().hex[:8]}", "checkpoint_interval_s": 1.0,
                "poll_max_records": 500, "health_check_s": 0.5, "worker_num_cpus": 0.5}
    return settings.model_copy(update={"stream": settings.stream.model_copy(update=defaults | stream)})


@contextlib.contextmanager
def running_stream(settings: Settings) -> Iterator[Any]:
    """Start the stream and always stop it (checkpoint, then kill what it started) at the end."""
    supervisor = start_stream(settings, settings.kafka.bootstrap_servers)
    try:
        yield supervisor
    finally:
        try:
            stop_stream(settings, timeout_s=60)
        finally:
            leftover = get_stream(settings)
            if leftover is not None:
                import ray

                ray.kill(leftover, no_restart=True)


def producer(bootstrap: str) -> KafkaProducer:
    return KafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, acks="all")


def produce(bootstrap: str, topic: str, items: Iterable[tuple[bytes | None, bytes | None]]) -> int:
    p = producer(bootstrap)
    n = 0
    for key, value in items:
        p.send(topic, key=key, value=value)
        n += 1
    p.flush(30)
    p.close()
    return n


class BackgroundProducer:
    """Sends messages from a thread at about ``rate`` per second (the stream runs meanwhile)."""

    def __init__(self, bootstrap: str, topic: str, items: list[tuple[bytes, bytes]], rate: float) -> None:
        self.bootstrap, self.topic, self.items, self.rate = bootstrap, topic, items, rate
        self.sent = 0
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        p = producer(self.bootstrap)
        started = time.monotonic()
        for i, (key, value) in enumerate(self.items):
            delay = started + i / self.rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            p.send(self.topic, key=key, value=value)
            self.sent = i + 1
        p.flush(30)
        p.close()

    def __enter__(self) -> BackgroundProducer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.thread.join(timeout=120)


def consume_all(bootstrap: str, topic: str, expect: int | None = None, timeout_s: float = 20.0,
                quiet_s: float = 1.5) -> list[Any]:
    """Every record of ``topic`` (all partitions), read until ``expect`` records or ``quiet_s`` of silence."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest")
    try:
        parts = None
        deadline = time.monotonic() + 10
        while not parts and time.monotonic() < deadline:
            parts = consumer.partitions_for_topic(topic)
        tps = [TopicPartition(topic, p) for p in sorted(parts or ())]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        records: list[Any] = []
        deadline = time.monotonic() + timeout_s
        last_new = time.monotonic()
        while time.monotonic() < deadline:
            batch = consumer.poll(timeout_ms=200)
            for recs in batch.values():
                records.extend(recs)
            if batch:
                last_new = time.monotonic()
            if expect is not None and len(records) >= expect:
                break
            if expect is None and time.monotonic() - last_new > quiet_s:
                break
        return records
    finally:
        consumer.close(autocommit=False)


def wait_for(predicate: Callable[[], Any], timeout_s: float, interval_s: float = 0.5, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout_s
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval_s)
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what} (last: {last!r})")


def lake_rows(settings: Settings) -> pd.DataFrame:
    try:
        return read_lake(settings.stream.lake_dir, columns=["sensor_id", "kafka_partition", "kafka_offset",
                                                            "log_epoch"])
    except Exception:  # the lake does not exist before the first checkpoint
        return pd.DataFrame({"sensor_id": [], "kafka_partition": [], "kafka_offset": [], "log_epoch": []})


def input_offsets(bootstrap: str, topic: str, expect: int) -> set[tuple[int, int]]:
    return {(r.partition, r.offset) for r in consume_all(bootstrap, topic, expect=expect)}


def dlq_sources(records: list[Any]) -> list[tuple[int, int]]:
    out = []
    for r in records:
        h = dict(r.headers)
        out.append((int(h["source_partition"]), int(h["source_offset"])))
    return out


def assert_exactly_once(settings: Settings, total: int) -> dict[str, int]:
    """Every input offset is in the lake or the DLQ exactly once; returns counts."""
    bootstrap = settings.kafka.bootstrap_servers
    expected = input_offsets(bootstrap, settings.kafka.topic, total)
    assert len(expected) == total
    dead = dlq_sources(consume_all(bootstrap, settings.kafka.dlq_topic))
    lake = lake_rows(settings)
    in_lake = list(zip(lake["kafka_partition"].astype(int), lake["kafka_offset"].astype(int), strict=True))
    dup_lake = len(in_lake) - len(set(in_lake))
    dup_dlq = len(dead) - len(set(dead))
    assert dup_lake == 0, f"{dup_lake} offsets appear twice in the lake"
    assert dup_dlq == 0, f"{dup_dlq} offsets appear twice in the DLQ"
    covered = set(in_lake) | set(dead)
    assert not set(in_lake) & set(dead), "an offset is both in the lake and in the DLQ"
    assert covered == expected, f"missing {len(expected - covered)}, unexpected {len(covered - expected)}"
    return {"lake": len(in_lake), "dlq": len(dead)}


def all_consumed(settings: Settings, total: int) -> Callable[[], bool]:
    """True once lake + DLQ hold ``total`` offsets (checkpoints have flushed everything)."""
    def check() -> bool:
        lake = lake_rows(settings)
        dead = consume_all(settings.kafka.bootstrap_servers, settings.kafka.dlq_topic, quiet_s=0.3, timeout_s=5)
        return len(set(zip(lake["kafka_partition"], lake["kafka_offset"], strict=True))) + len(
            {(dict(r.headers)["source_partition"], dict(r.headers)["source_offset"]) for r in dead}) >= total
    return check
