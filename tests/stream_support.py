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
from kafka import KafkaProducer, TopicPartition

from actors.supervisor import get_stream, start_stream, stop_stream
from ingest import kafka_clients
from ingest.lake import read_lake
from ingest.schema import MEASUREMENTS
from ingest.settings import KafkaSecuritySettings, Settings

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
                quiet_s: float = 1.5, security: KafkaSecuritySettings | None = None) -> list[Any]:
    """Every record of ``topic`` (all partitions), read until ``expect`` records or ``quiet_s`` of silence."""
    consumer = kafka_clients.consumer(bootstrap, security, enable_auto_commit=False, auto_offset_reset="earliest")
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


def partition_ends(status: dict[str, Any]) -> dict[int, int]:
    """Partition -> the high watermark its owner last reported (where the partition ended then)."""
    ends = {}
    for worker in status["workers"].values():
        for p, info in (worker.get("partitions") or {}).items():
            if info.get("highwater") is not None:
                ends[int(p)] = int(info["highwater"])
    return ends


def measure_takeover(supervisor: Any, before: dict[str, Any], handles: dict[str, Any], victim: str, since: float,
                     timeout_s: float = 90.0) -> dict[str, float]:
    """Seconds from ``since`` (``time.monotonic()`` at the failure of ``victim``) until the stream recovered.

    ``before`` is a supervisor status and ``handles`` its ``worker_handles()``, both taken
    just before the failure. Figures:
    ``ray_reports_dead_s``, a call to the dead worker fails; ``resumed_s``, the dead
    worker's partitions have been read past where they ended at the failure by live
    workers (asked directly, every 0.1 s); ``reassigned_s``, the supervisor answers again
    with every partition owned by a live worker (it holds its lock while it moves the
    partitions, starts a replacement and rebalances, so this includes all of that).
    """
    import ray
    from ray.exceptions import RayActorError

    partitions, ends = before["assignment"][victim]["partitions"], partition_ends(before)
    handles = dict(handles)
    dead = handles.pop(victim)
    figures: dict[str, float] = {}
    pending = supervisor.assignment.remote()  # one call in flight at a time: it waits for the lock
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if "ray_reports_dead_s" not in figures:
            try:
                ray.get(dead.status.remote(), timeout=0.5)
            except RayActorError:
                figures["ray_reports_dead_s"] = round(time.monotonic() - since, 3)
            except ray.exceptions.GetTimeoutError:
                pass
        if pending is not None and ray.wait([pending], timeout=0)[0]:
            assignment = ray.get(pending)
            owned = sorted(p for w, info in assignment.items() if w != victim for p in info["partitions"])
            if victim not in assignment and owned == sorted(before["partitions"]):
                figures.setdefault("reassigned_s", round(time.monotonic() - since, 3))
                handles = {w: h for w, h in ray.get(supervisor.worker_handles.remote(), timeout=60).items()
                           if w != victim}
                pending = None
            else:
                pending = supervisor.assignment.remote()
        offsets: dict[int, int] = {}
        for handle in handles.values():
            with contextlib.suppress(Exception):  # a worker being replaced answers on the next round
                for p, info in ray.get(handle.status.remote(), timeout=5)["partitions"].items():
                    if info.get("next_offset") is not None:
                        offsets[int(p)] = max(offsets.get(int(p), 0), info["next_offset"])
        if "resumed_s" not in figures and all(offsets.get(p, -1) >= ends.get(p, 0) for p in partitions):
            figures["resumed_s"] = round(time.monotonic() - since, 3)
        if len(figures) == 3:
            return figures
        time.sleep(0.1)
    raise AssertionError(f"no full recovery within {timeout_s:.0f} s of losing {victim}: {figures}")
