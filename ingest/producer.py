"""Publishing readings to Kafka: the simulator or a CSV replay, key = sensor_id, batched, resent on failure.

:class:`ReadingProducer` wraps kafka-python's producer: messages are batched
per partition (``linger_ms``, ``batch_bytes``), kafka-python retries transient
errors itself (idempotently, so without duplicates) and a reading whose
delivery still fails is resent by us with exponential backoff, up to
``delivery_attempts`` sends; only then is it counted as failed, and the run
ends with one log line giving the count and the cause.

:func:`simulate_to_kafka` and :func:`replay_csv_to_kafka` are what ``smoke
simulate``, ``smoke replay`` and ``smoke up`` call: they create the topics if
needed, send, flush and return a :class:`ProduceReport`; with
``show_progress`` they draw a rich progress line with the live rate.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from kafka import KafkaProducer
from kafka.errors import KafkaError, KafkaTimeoutError
from kafka.future import Future

from ingest import kafka_clients
from ingest.broker import BrokerError, ensure_topics
from ingest.kaggle import read_kaggle_csv
from ingest.progress import RowProgress
from ingest.settings import KafkaSecuritySettings, Settings, SimulatorSettings
from ingest.simulator import FleetSimulator, paced, replay_batches, replay_schedule

log = logging.getLogger(__name__)


class DeliveryError(RuntimeError):
    """Readings that could not be delivered after every attempt; the message gives the count and cause."""


@dataclass
class ProduceReport:
    """What a run sent: ``delivered`` readings acknowledged by the broker, ``failed`` given up on."""

    topic: str
    delivered: int = 0
    failed: int = 0
    resent: int = 0
    elapsed_s: float = 0.0
    last_error: str | None = None
    dropped: int = 0  # simulated dropouts: readings the simulator chose not to send
    incidents: int = 0
    incident_log: Path | None = None

    @property
    def rate(self) -> float:
        return self.delivered / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def summary(self) -> str:
        text = f"{self.delivered:,} readings to {self.topic} in {self.elapsed_s:.1f} s ({self.rate:,.0f}/s)"
        if self.failed:
            text += f"; {self.failed:,} FAILED ({self.last_error})"
        if self.incident_log is not None:
            text += f"; {self.incidents} incidents logged in {self.incident_log}"
        return text


class ReadingProducer:
    """A kafka-python producer for readings: send keyed batches, resend failures with backoff.

    Bookkeeping stays in the sending thread: each send's future waits in a queue
    and is settled (delivered, or resent after a backoff, or given up on) once
    kafka-python has completed it; no callbacks run on kafka-python's I/O thread.
    Use as a context manager; :meth:`close` flushes and waits for the resends.
    """

    def __init__(self, bootstrap_servers: str, topic: str, config: SimulatorSettings,
                 client_id: str = "smoke-producer", security: KafkaSecuritySettings | None = None) -> None:
        self.topic = topic
        self.config = config
        self.report = ProduceReport(topic)
        self._pending: deque[tuple[Future, bytes, bytes, int]] = deque()  # (future, key, value, attempt)
        self._retry: deque[tuple[float, bytes, bytes, int]] = deque()  # (due, key, value, attempt)
        self._bootstrap_servers = bootstrap_servers
        self._client_id = client_id
        self._security = security
        self._renew = False  # set when the client hit an error it does not recover from by itself
        self._producer = self._new_client()

    def _new_client(self) -> KafkaProducer:
        config = self.config
        try:
            return kafka_clients.producer(
                self._bootstrap_servers, self._security, client_id=self._client_id,
                linger_ms=config.linger_ms, batch_size=config.batch_bytes, acks="all",
                retry_backoff_ms=config.retry_backoff_ms,
                # kafka-python retries transient errors within this window before handing us the failure;
                # send() blocks on a full buffer or missing metadata no longer than that either.
                delivery_timeout_ms=int(config.delivery_timeout_s * 1000) + config.linger_ms,
                request_timeout_ms=int(config.delivery_timeout_s * 1000),
                max_block_ms=int(config.delivery_timeout_s * 1000),
            )
        except KafkaError as err:
            raise BrokerError(f"cannot reach Kafka at {self._bootstrap_servers}: {err!r}") from None

    def send(self, keys: list[bytes], values: list[bytes]) -> None:
        """Queue readings for sending (``keys[k]`` is the sensor id of ``values[k]``)."""
        self._send_all(zip(keys, values, strict=True), 1)
        self._settle()
        if self._retry:
            self._resend_due()

    def _send_all(self, messages, attempt: int) -> None:
        send, topic, pending = self._producer.send, self.topic, self._pending.append
        for key, value in messages:
            try:
                pending((send(topic, key=key, value=value), key, value, attempt))
            except KafkaTimeoutError as err:  # the buffer stayed full or metadata never came
                self._give_up_or_retry(err, key, value, attempt)

    def _settle(self) -> None:
        """Account for the completed sends at the head of the queue (they complete roughly in order)."""
        pending = self._pending
        while pending and pending[0][0].is_done:
            future, key, value, attempt = pending.popleft()
            if future.exception is None:
                self.report.delivered += 1
            else:
                self._give_up_or_retry(future.exception, key, value, attempt)

    def _give_up_or_retry(self, err: BaseException, key: bytes, value: bytes, attempt: int) -> None:
        self.report.last_error = f"{type(err).__name__}: {err}"
        # A timeout heals when the broker is back; other errors can leave the idempotent client's
        # producer id unusable for good (a restarted broker refuses it), so resend with a new client.
        if not isinstance(err, KafkaTimeoutError):
            self._renew = True
        if attempt >= self.config.delivery_attempts:
            self.report.failed += 1
            return
        delay = self.config.retry_backoff_ms / 1000.0 * 2 ** (attempt - 1)
        self._retry.append((time.monotonic() + delay, key, value, attempt + 1))

    def _resend_due(self) -> None:
        now = time.monotonic()
        due = [entry for entry in self._retry if entry[0] <= now]
        if not due:
            return
        if self._renew:
            self._renew = False
            old, self._producer = self._producer, self._new_client()
            old.close(timeout=0)  # what it still holds fails; _settle sends it round again
        self._retry = deque(entry for entry in self._retry if entry[0] > now)
        self.report.resent += len(due)
        for _, key, value, attempt in due:
            self._send_all([(key, value)], attempt)

    def flush(self, timeout_s: float = 120.0) -> None:
        """Wait until every reading is delivered or has failed every attempt."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                self._producer.flush(timeout=max(0.1, deadline - time.monotonic()))
            except KafkaTimeoutError:
                raise DeliveryError(f"readings still undelivered after {timeout_s:.0f} s "
                                    f"({self.report.last_error})") from None
            self._settle()
            if not self._retry and not self._pending:
                return
            if time.monotonic() > deadline:
                raise DeliveryError(f"{len(self._retry) + len(self._pending)} readings still undelivered "
                                    f"after {timeout_s:.0f} s ({self.report.last_error})")
            time.sleep(min(0.05, self.config.retry_backoff_ms / 1000.0))
            self._resend_due()

    def close(self) -> None:
        try:
            self.flush()
        finally:
            self._producer.close()

    def __enter__(self) -> ReadingProducer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def publish(producer: ReadingProducer, batches: Iterable[tuple[list[bytes], list[bytes]]], *,
            total: int | None = None, show_progress: bool = False, stop: threading.Event | None = None,
            description: str = "producing") -> ProduceReport:
    """Send ``(keys, values)`` batches through ``producer`` until they end or ``stop`` is set; flush.

    Ctrl-C stops like ``stop``: what was queued is still flushed and counted.
    """
    started = time.monotonic()
    try:
        with RowProgress(show_progress, description, total) as progress:
            try:
                for keys, values in batches:
                    producer.send(keys, values)
                    progress.advance(len(keys))
                    if stop is not None and stop.is_set():
                        break
            except KeyboardInterrupt:
                log.info("interrupted: flushing %d queued readings", progress.count)
            producer.flush()
    finally:
        producer.report.elapsed_s = time.monotonic() - started
    report = producer.report
    if report.failed:
        log.error("%d of %d readings could not be delivered to %s: %s", report.failed, progress.count,
                  report.topic, report.last_error)
    return report


def simulate_to_kafka(settings: Settings, bootstrap_servers: str, duration_s: float | None = None, *,
                      sensors: int | None = None, rate: float | None = None,
                      time_scale: float | None = None, fast: bool = False, start_time: float | None = None,
                      incident_log: str | Path | None = None, show_progress: bool = False,
                      stop: threading.Event | None = None) -> ProduceReport:
    """Run the fleet simulator into ``settings.kafka.topic`` on ``bootstrap_servers``.

    ``sensors``, ``rate`` and ``time_scale`` override the simulator settings;
    ``fast`` ignores pacing and produces as fast as possible, in simulated time. Runs for
    ``duration_s`` simulated seconds (default ``settings.simulator.duration_s``;
    both empty: until ``stop`` is set). The ground-truth incident log goes to
    ``incident_log`` (default ``<simulator.out_dir>/incidents-<UTC time>.jsonl``).
    """
    config = settings.simulator.model_copy(update={
        k: v for k, v in {"sensors": sensors, "rate": rate}.items() if v is not None})
    scale = None if fast else (time_scale or config.time_scale)
    duration = duration_s if duration_s is not None else config.duration_s
    log_path = Path(incident_log) if incident_log is not None else \
        Path(config.out_dir) / f"incidents-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.jsonl"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    ensure_topics(bootstrap_servers, settings.kafka)
    total = None if duration is None else int(duration * config.rate)
    with open(log_path, "wb") as log_file:
        simulator = FleetSimulator(config, start_time=start_time, incident_log=log_file)
        batches = paced(simulator.batches(batch_size=_batch_size(config.rate, scale), duration_s=duration), scale)
        with ReadingProducer(bootstrap_servers, settings.kafka.topic, config,
                             security=settings.kafka.security) as producer:
            report = publish(producer, ((b.keys(), b.wire_messages()) for b in batches), total=total,
                             show_progress=show_progress, stop=stop,
                             description=f"simulating {config.sensors:,} sensors")
    report.dropped = simulator.dropped
    report.incidents = len(simulator.incidents)
    report.incident_log = log_path
    return report


def replay_csv_to_kafka(settings: Settings, bootstrap_servers: str, path: str | Path, *,
                        speed: float | None = None, fast: bool = False, sensors: int = 1,
                        sensor_prefix: str = "kaggle",
                        start_time: float | None = None, show_progress: bool = False,
                        stop: threading.Event | None = None) -> ProduceReport:
    """Replay a Kaggle-format CSV into ``settings.kafka.topic``, ``speed`` times the recorded pace.

    ``speed`` defaults to ``simulator.replay_speed``; ``fast`` sends as fast as
    possible. Sessions are dealt to ``sensors`` sensor ids (see
    :func:`ingest.simulator.replay_schedule`). Rows with bad
    cells are sent as recorded, for the stream to reject with their reason.
    """
    config = settings.simulator
    scale = None if fast else (speed or config.replay_speed)
    plan = replay_schedule(read_kaggle_csv(path), sensors=sensors, sensor_prefix=sensor_prefix,
                           start_time=start_time, max_gap_s=config.replay_max_gap_s)
    ensure_topics(bootstrap_servers, settings.kafka)
    batches = paced(replay_batches(plan, batch_size=_batch_size(1.0, scale)), scale)
    with ReadingProducer(bootstrap_servers, settings.kafka.topic, config,
                         security=settings.kafka.security) as producer:
        return publish(producer, ((b.keys, b.messages) for b in batches), total=len(plan),
                       show_progress=show_progress, stop=stop, description=f"replaying {Path(path).name}")


def _batch_size(rate: float, time_scale: float | None) -> int:
    """Readings per batch: about 50 ms of wall time when paced, large when running flat out."""
    if time_scale is None:
        return 2_000
    return int(max(1, min(2_000, rate * time_scale * 0.05)))
