"""The alert router: the one writer of alert events, from the ``smoke_alerts`` topic into the store.

A detached, named Ray actor that Ray restarts when it dies (``max_restarts``).
It owns every partition of the alerts topic by explicit assignment
(:mod:`alerting.alert_reader`; never a consumer group's subscribe) and reads each from the next offset the store
committed. Each event is recorded with its offset in one transaction
(:meth:`AlertStore.record_event`), so a crash at any point, kill -9 included,
neither loses nor duplicates an event: the restarted actor reads again from the
first offset not recorded, and what it may read twice is dropped by the store.

Beside the reading loop the router runs the escalation timer
(:meth:`AlertStore.escalate_due`) and hosts the delivery dispatcher when the
delivery package is installed (:meth:`Router._start_dispatcher`).

A message that is not an alert event goes to the dead-letter topic with its
reason and the router moves past it. A memory-only broker that restarted has
lost the topic: the router notices (the store's offset is beyond the
partition's end, or the broker has no committed offset for a partition the
store has read), starts the partition's new epoch at offset 0 and reads it all.

Entry points for the CLI and the stack (the caller has connected to Ray with an
explicit address): :func:`start_router`, :func:`router_status`,
:func:`stop_router`, :func:`get_router`.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from typing import Any

import ray
from ray.actor import ActorHandle
from ray.exceptions import GetTimeoutError, RayActorError
from ray.util.metrics import Counter, Gauge

from alerting.alert_reader import AlertReader, AlertRecord
from alerting.database import absolute_dsn
from alerting.sensors import load_sensors, sensors_path
from alerting.store import AlertStore
from ingest.alert_message import AlertEvent, MalformedAlert
from ingest.broker import partition_count, wait_reachable
from ingest.settings import Settings

log = logging.getLogger(__name__)

HEAD_NODE_RESOURCE = "node:__internal_head__"
READY_TIMEOUT_S = 120.0
STATUS_TIMEOUT_S = 10.0
# librdkafka holds an idle fetch this long; short so that an alert is recorded within ~25 ms.
FETCH_MAX_WAIT_MS = 25
GAUGE_REFRESH_S = 5.0  # Ray drops gauges not set within two export intervals (see actors/metrics.py)
DISPATCHER_MODULE = "alerting.delivery"


class RouterError(RuntimeError):
    """The router cannot be started, found or stopped; the message says why."""


class RouterMetrics:
    """The router's metrics (``docs/metrics.md``), created in the actor's process."""

    def __init__(self) -> None:
        self.events = Counter("smoke_alert_router_events", "alert messages read by the router, by outcome "
                              "(recorded, duplicate, malformed)", tag_keys=("outcome",))
        self.lag = Gauge("smoke_alert_router_lag", "alert messages on the topic not recorded yet",
                         tag_keys=("partition",))
        self.last_event_age = Gauge("smoke_alert_router_last_event_age_seconds",
                                    "seconds since the router recorded its last event")
        self.unacknowledged = Gauge("smoke_alert_incidents_unacknowledged",
                                    "open incidents nobody has acknowledged")
        self.escalations = Counter("smoke_alert_escalations", "incidents escalated for want of an acknowledgement")

    def counted(self, outcome: str, n: int = 1) -> None:
        if n:
            self.events.inc(n, tags={"outcome": outcome})


class Router:
    """See the module docstring; the actor is :data:`AlertRouter`, the foreground process uses this class.

    Every public method answers from state the loop publishes.
    """

    def __init__(self, settings: Settings, bootstrap_servers: str) -> None:
        _configure_logging()
        self.settings = settings
        self.cfg = settings.alerting
        self.topic = settings.kafka.alerts_topic
        self.bootstrap_servers = bootstrap_servers
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self.started_at = time.time()
        self.totals = {"recorded": 0, "duplicate": 0, "malformed": 0, "escalated": 0, "resets": 0}
        self.last_error: str | None = None
        self.last_error_at: float | None = None
        self.last_event_at: float | None = None
        self.loop_at = time.time()
        self.partitions: dict[int, dict[str, Any]] = {}
        self.open_incidents: int | None = None  # from the store, every GAUGE_REFRESH_S
        self.unacknowledged: int | None = None
        self.metrics = RouterMetrics()
        self.store = AlertStore.open(self.cfg.store_dsn, routing=_routing(settings))
        added = self.store.seed_sensors(load_sensors(self.cfg.sensors_file))
        log.info("alert router: %d sensors added from %s", added, self.cfg.sensors_file)
        wait_reachable(bootstrap_servers)
        self.reader = AlertReader(bootstrap_servers, self.topic, group_id=self._group_id(),
                                  client_id=self.cfg.router_name, fetch_max_wait_ms=FETCH_MAX_WAIT_MS,
                                  security=settings.kafka.security)
        self._dlq = None
        self._resume()
        self.dispatcher = self._start_dispatcher()
        self._thread = threading.Thread(target=self._loop, name="alert-router", daemon=True)
        self._thread.start()

    # --- the actor's interface -----------------------------------------------------------------

    def ready(self) -> dict[str, Any]:
        return self.status()

    def wait(self, timeout_s: float | None = None) -> bool:
        """Block until the loop ends (foreground use); True when it has."""
        self._thread.join(timeout_s)
        return not self._thread.is_alive()

    def status(self) -> dict[str, Any]:
        now = time.time()
        with self._lock:
            return {
                "name": self.cfg.router_name, "topic": self.topic, "store": _safe_dsn(self.cfg.store_dsn),
                "started_at": self.started_at, "loop_age_s": now - self.loop_at,
                "last_event_age_s": None if self.last_event_at is None else now - self.last_event_at,
                "last_error": self.last_error, "last_error_age_s": None if self.last_error_at is None
                else now - self.last_error_at, "totals": dict(self.totals),
                "partitions": {p: dict(info) for p, info in self.partitions.items()},
                "lag": sum(info.get("lag") or 0 for info in self.partitions.values()),
                "dispatcher": self.dispatcher is not None, "alive": self._thread.is_alive(),
                "channels": self._channels(),
                "open_incidents": self.open_incidents, "unacknowledged": self.unacknowledged,
                "pid": _pid(),
            }

    def _channels(self) -> dict[str, dict[str, Any]]:
        """Each delivery channel's worker: alive, and what the dispatcher says of it."""
        if self.dispatcher is None:
            return {}
        try:
            alive, status = self.dispatcher.alive(), self.dispatcher.status()
        except Exception as err:  # a status must answer even if the dispatcher is broken
            return {"dispatcher": {"alive": False, "error": repr(err)}}
        return {name: {**status.get(name, {}), "alive": alive.get(name, False)} for name in alive}

    def stop(self) -> dict[str, Any]:
        """Stop the loop (and the dispatcher) and close the clients; the final status."""
        self._stop.set()
        self._thread.join(timeout=30)
        if self.dispatcher is not None:
            with contextlib.suppress(Exception):
                self.dispatcher.stop()
        self.reader.close()
        if self._dlq is not None:
            self._dlq.close(timeout=5)
        final = self.status()
        self.store.close()
        return final

    # --- start-up ------------------------------------------------------------------------------

    def _group_id(self) -> str:
        # Offsets live in the store; the group only makes the router's position visible to lag tools.
        return f"{self.settings.kafka.group_id}-{self.cfg.router_name}"

    def _resume(self) -> None:
        count = partition_count(self.bootstrap_servers, self.topic, security=self.settings.kafka.security)
        if not count:
            raise RouterError(f"the alerts topic {self.topic!r} does not exist on {self.bootstrap_servers}")
        committed = self.store.committed_offsets(self.topic)
        positions: dict[int, int | None] = {}
        for p in range(count):
            offset = committed.get(p)
            if offset is not None and offset > 0 and self._broker_forgot(p):
                # The broker has no trace of our reading: it restarted empty (memory only). Its new
                # log numbers from 0 again; offsets beyond its end would wait forever.
                self.store.reset_offsets(self.topic, p)
                self.totals["resets"] += 1
                offset = 0
            positions[p] = offset
            self.partitions[p] = {"next_offset": offset or 0, "highwater": None, "lag": None, "beyond_end_since": None}
        self.reader.assign(positions)
        log.info("alert router: reading %s partitions %s from %s", self.topic, sorted(positions), positions)

    def _broker_forgot(self, partition: int) -> bool:
        try:
            return self.reader.committed(partition) is None
        except Exception as err:  # the broker did not answer: keep our offsets, the loop checks again
            log.warning("alert router: cannot read committed offset of %s/%d: %s", self.topic, partition, err)
            return False

    def _start_dispatcher(self) -> Any:
        """The delivery dispatcher (one thread per channel) over this router's store, if installed.

        ``alerting.delivery`` provides it; without that module nothing is delivered and the
        outbox fills (``status()['dispatcher']`` is False, and `smoke status` says so).
        """
        try:
            import importlib

            delivery = importlib.import_module(DISPATCHER_MODULE)
        except ModuleNotFoundError as err:
            if err.name != DISPATCHER_MODULE:
                raise
            log.warning("alert router: %s is not installed: deliveries stay pending", DISPATCHER_MODULE)
            return None
        from alerting.channels import build_channels

        channels = build_channels(self.cfg)
        dispatcher = delivery.Dispatcher.from_settings(self.store, channels, self.cfg,
                                                       metrics=delivery.DeliveryMetrics())
        dispatcher.start()
        log.info("alert router: delivering to %s", ", ".join(channels) or "no channel (alerting.channels is empty)")
        return dispatcher

    # --- the loop ------------------------------------------------------------------------------

    def _loop(self) -> None:
        next_escalation = 0.0
        next_gauges = 0.0
        while not self._stop.is_set():
            self.loop_at = time.time()
            try:
                batches = self.reader.poll(self.cfg.router_poll_timeout_ms, self.cfg.router_poll_max_records)
                committed = self._record_all(batches)
                if committed:
                    self.reader.commit(committed)
                    if self.dispatcher is not None:
                        self.dispatcher.wake()  # new outbox rows: send now, not at the next poll
                error = self.reader.take_error()
                if error:
                    self._error(f"kafka: {error}")
                now = time.time()
                self._check_positions(now)
                if now >= next_escalation:
                    next_escalation = now + self.cfg.escalation_check_s
                    escalated = self.store.escalate_due(now, self.cfg.escalate_after_s)
                    if escalated:
                        log.warning("alert router: escalated %d unacknowledged incidents: %s", len(escalated),
                                    ", ".join(escalated))
                        self.totals["escalated"] += len(escalated)
                        self.metrics.escalations.inc(len(escalated))
                if now >= next_gauges:
                    next_gauges = now + GAUGE_REFRESH_S
                    self._gauges(now)
            except Exception as err:  # the database or broker failed: say why, wait, try again
                self._error(f"{type(err).__name__}: {err}".splitlines()[0])
                log.exception("alert router: loop iteration failed")
                self._stop.wait(1.0)

    def _record_all(self, batches: dict[int, list[AlertRecord]]) -> dict[int, int]:
        """Record a poll's records; partition -> next offset.

        When recording fails (the database is away), every partition not fully recorded is read
        again from its first unrecorded offset: the client has moved past those records, and
        skipping them would lose them once a later event advances the store's offset.
        """
        committed: dict[int, int] = {}
        try:
            for partition, records in batches.items():
                committed[partition] = self._record(partition, records)
        except Exception:
            for partition in batches:
                if partition not in committed:
                    self.reader.seek(partition, self.partitions[partition]["next_offset"])
            raise
        return committed

    def _record(self, partition: int, records: list[AlertRecord]) -> int:
        """Record one partition's records in offset order; returns the next offset."""
        outcomes = {"recorded": 0, "duplicate": 0, "malformed": 0}
        next_offset = self.partitions[partition]["next_offset"]
        for record in records:
            offset = record.offset
            try:
                event = AlertEvent.from_message(record.value)
            except MalformedAlert as err:
                self._dead_letter(record.value, partition, offset, err)
                self.store.skip_offset(self.topic, partition, offset)
                outcomes["malformed"] += 1
            else:
                try:
                    fresh = self.store.record_event(event, topic=self.topic, partition=partition, offset=offset,
                                                    arrival_time=event.arrival_time)
                except Exception:
                    self._counted(partition, next_offset, outcomes)
                    raise
                outcomes["recorded" if fresh else "duplicate"] += 1
            next_offset = offset + 1
        self._counted(partition, next_offset, outcomes)
        return next_offset

    def _counted(self, partition: int, next_offset: int, outcomes: dict[str, int]) -> None:
        """Publish what a partition's records came to, up to ``next_offset`` (recorded or passed)."""
        with self._lock:
            self.partitions[partition]["next_offset"] = next_offset
            for outcome, n in outcomes.items():
                self.totals[outcome] += n
            if outcomes["recorded"]:
                self.last_event_at = time.time()
        for outcome, n in outcomes.items():
            self.metrics.counted(outcome, n)

    def _check_positions(self, now: float) -> None:
        for p, info in self.partitions.items():
            high = self.reader.highwater(p)
            if high is None:
                continue
            with self._lock:
                info["highwater"] = high
                info["lag"] = max(high - info["next_offset"], 0)
            if info["next_offset"] <= high:
                info["beyond_end_since"] = None
                continue
            since = info["beyond_end_since"] = info["beyond_end_since"] or now
            if now - since >= self.settings.stream.reset_grace_s:
                log.warning("alert router: %s/%d: next offset %d is beyond the end %d for %.0f s: the broker "
                            "lost its log; reading the partition from 0 (new epoch)", self.topic, p,
                            info["next_offset"], high, now - since)
                self.store.reset_offsets(self.topic, p)
                self.reader.seek_to_beginning(p)
                with self._lock:
                    info.update(next_offset=0, beyond_end_since=None)
                    self.totals["resets"] += 1

    def _gauges(self, now: float) -> None:
        for p, info in self.partitions.items():
            if info.get("lag") is not None:
                self.metrics.lag.set(info["lag"], tags={"partition": str(p)})
        if self.last_event_at is not None:
            self.metrics.last_event_age.set(now - self.last_event_at)
        kpis = self.store.kpis(now)
        with self._lock:
            self.open_incidents, self.unacknowledged = kpis.open_incidents, kpis.unacknowledged
        self.metrics.unacknowledged.set(kpis.unacknowledged)

    def _dead_letter(self, value: bytes | None, partition: int, offset: int, err: MalformedAlert) -> None:
        """Send a malformed message to the dead-letter topic and wait for the broker's ack (then skip it)."""
        from ingest.kafka_clients import producer

        if self._dlq is None:
            self._dlq = producer(self.bootstrap_servers, self.settings.kafka.security, acks="all", linger_ms=0,
                                 client_id=f"{self.cfg.router_name}-dlq")
        log.warning("alert router: %s/%d@%d is not an alert event (%s): sent to %s", self.topic, partition,
                    offset, err, self.settings.kafka.dlq_topic)
        headers = [("reason", err.reason.encode()), ("detail", str(err).encode()[:500]),
                   ("source", f"{self.topic}/{partition}/{offset}".encode())]
        self._dlq.send(self.settings.kafka.dlq_topic, key=f"{self.topic}/{partition}/{offset}".encode(),
                       value=value or b"", headers=headers).get(timeout=30)

    def _error(self, text: str) -> None:
        with self._lock:
            self.last_error, self.last_error_at = text, time.time()
        log.warning("alert router: %s", text)


# The detached actor (num_cpus set by start_router from alerting.router_num_cpus).
AlertRouter = ray.remote(num_cpus=0)(Router)


# --- entry points ---------------------------------------------------------------------------------


def resolve_paths(settings: Settings) -> Settings:
    """The store's SQLite file and the sensors file as absolute paths (the actor runs elsewhere)."""
    cfg = settings.alerting
    return settings.model_copy(update={"alerting": cfg.model_copy(update={
        "store_dsn": absolute_dsn(cfg.store_dsn), "sensors_file": sensors_path(cfg.sensors_file)})})


def get_router(settings: Settings) -> ActorHandle | None:
    try:
        return ray.get_actor(settings.alerting.router_name, namespace=settings.ray.namespace)
    except ValueError:
        return None


def start_router(settings: Settings, bootstrap_servers: str, *, timeout_s: float = READY_TIMEOUT_S) -> ActorHandle:
    """Start the detached router; returns once it reads every partition. Raises RouterError if one runs."""
    if not ray.is_initialized():
        raise RouterError("connect to Ray first (ray.init with an explicit address)")
    wait_reachable(bootstrap_servers)
    if get_router(settings) is not None:
        raise RouterError(f"an alert router named {settings.alerting.router_name!r} is already running in "
                          f"namespace {settings.ray.namespace!r}; stop it first")
    settings = resolve_paths(settings)
    cfg = settings.alerting
    load_sensors(cfg.sensors_file)  # a missing or malformed file: one clear error here, before any actor
    router = AlertRouter.options(
        name=cfg.router_name, namespace=settings.ray.namespace, lifetime="detached",
        num_cpus=cfg.router_num_cpus, max_restarts=cfg.router_max_restarts, max_task_retries=0,
        # On the head node, beside the store file of the embedded default.
        resources={HEAD_NODE_RESOURCE: 0.001},
    ).remote(settings, bootstrap_servers)
    try:
        ray.get(router.ready.remote(), timeout=timeout_s)
    except Exception:
        ray.kill(router, no_restart=True)
        raise
    return router


def router_status(settings: Settings, timeout_s: float = STATUS_TIMEOUT_S) -> dict[str, Any] | None:
    """The router's status; None if none is running. Raises GetTimeoutError/RayActorError when it does not answer."""
    router = get_router(settings)
    return None if router is None else ray.get(router.status.remote(), timeout=timeout_s)


def stop_router(settings: Settings, timeout_s: float = 60.0) -> dict[str, Any] | None:
    """Stop the router (its loop, then its clients) and remove the actor; None if none was running."""
    router = get_router(settings)
    if router is None:
        return None
    try:
        return ray.get(router.stop.remote(), timeout=timeout_s)
    except (GetTimeoutError, RayActorError) as err:
        log.warning("alert router did not stop cleanly (%s): killing it", err)
        return None
    finally:
        ray.kill(router, no_restart=True)


def health(status: dict[str, Any] | None, stale_s: float) -> tuple[bool, str]:
    """Whether a router status is healthy, and one line saying why (for `smoke status`).

    >>> health({"alive": True, "loop_age_s": 0.1, "lag": 0, "last_error": None, "last_error_age_s": None,
    ...         "totals": {"recorded": 3, "duplicate": 0, "malformed": 0, "escalated": 0, "resets": 0},
    ...         "dispatcher": True, "last_event_age_s": 2.0}, 30.0)
    (True, 'recording: 3 events (0 duplicates, 0 malformed), lag 0, last event 2 s ago, 0 escalated')
    >>> health({"alive": True, "loop_age_s": 45.0, "lag": 9, "last_error": "OperationalError: locked",
    ...         "last_error_age_s": 1.0, "totals": {"recorded": 3, "duplicate": 0, "malformed": 0,
    ...         "escalated": 0, "resets": 0}, "dispatcher": True, "last_event_age_s": 50.0}, 30.0)[0]
    False
    """
    if status is None:
        return False, "no router is running"
    t = status["totals"]
    last = status.get("last_event_age_s")
    line = (f"recording: {t['recorded']} events ({t['duplicate']} duplicates, {t['malformed']} malformed), "
            f"lag {status.get('lag', 0)}, last event {'never' if last is None else f'{last:.0f} s ago'}, "
            f"{t['escalated']} escalated")
    if status.get("unacknowledged") is not None:
        line += f"; {status['open_incidents']} open incidents, {status['unacknowledged']} unacknowledged"
    problems = []
    if not status.get("alive"):
        problems.append("its loop thread has died")
    elif status["loop_age_s"] > stale_s:
        problems.append(f"its loop has not turned for {status['loop_age_s']:.0f} s")
    if status.get("last_error") and (status.get("last_error_age_s") or 0) < stale_s:
        problems.append(f"error {status['last_error_age_s']:.0f} s ago: {status['last_error']}")
    if not status.get("dispatcher"):
        line += "; no dispatcher: notifications stay in the outbox"
    dead = sorted(name for name, info in (status.get("channels") or {}).items() if not info.get("alive"))
    if dead:
        problems.append(f"delivery worker of {', '.join(dead)} is not running")
    if problems:
        return False, "degraded: " + "; ".join(problems) + f" ({line})"
    return True, line


def _routing(settings: Settings) -> Any:
    """The delivery routing when its module is installed (alerting.routing), else None (no outbox rows)."""
    try:
        from alerting.routing import Routing
    except ModuleNotFoundError as err:
        if err.name != "alerting.routing":
            raise
        return None
    return Routing.from_settings(settings.alerting)


def _safe_dsn(dsn: str) -> str:
    from sqlalchemy import make_url

    return make_url(dsn).render_as_string(hide_password=True)


def _pid() -> int:
    import os

    return os.getpid()


def _configure_logging() -> None:
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
