"""The dispatcher: one worker thread per channel sends the store's pending deliveries, retrying with backoff.

The store keeps the outbox (one ``deliveries`` row per notification and
channel, written in the transaction that recorded the state change). Each
channel's worker asks the store for that channel's due deliveries, oldest
first, sends them one by one and records the outcome:

- accepted: ``mark_delivered`` with the latency from the reading's arrival
  (``Notification.arrival_time``) to the receiver's answer;
- refused for good (a 4xx, a refused recipient) or out of attempts:
  ``mark_failed`` with no next attempt (``failed_permanently``), and the worker
  goes on with the next one;
- failed but worth a retry: ``mark_failed`` with the next attempt after an
  exponential backoff (``base x factor^(attempts-1)``, at most ``cap``), and the
  worker stops its pass there: the store lists nothing of that channel past a
  delivery waiting for its retry, so later notifications of an incident never
  overtake earlier ones (head-of-line blocking per channel, and only there: the
  other channels' threads go on).

A crash between the receiver's answer and ``mark_delivered`` sends that
notification again after a restart, with the same ``Idempotency-Key``
(``alert_id:state``), so a receiver that honours it sees it once.

The router wakes a channel's worker when it records a delivery (:meth:`Dispatcher.wake`);
otherwise an idle worker looks every ``delivery_poll_s``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from alerting.channels import Channel, DeliveryError
from alerting.notification import Notification
from ingest.settings import AlertingSettings

log = logging.getLogger(__name__)

SENT, RETRY, FAILED = "sent", "retry", "failed"
LATENCY_BOUNDARIES = [0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0]
# Ray stops exporting a gauge that is not set again within two export intervals; set it this often.
PENDING_REFRESH_S = 5.0


class Outbox(Protocol):
    """The part of the alert store (alerting/store.py) the dispatcher uses."""

    def due_deliveries(self, channel: str, now: float, limit: int = 100) -> list[Any]: ...

    def mark_delivered(self, delivery_id: int, *, at: float, latency_s: float | None) -> None: ...

    def mark_failed(self, delivery_id: int, *, at: float, error: str, next_attempt_at: float | None) -> None: ...

    def pending_count(self, channel: str | None = None) -> dict[str, int]: ...


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff between the attempts of one delivery.

    >>> b = Backoff(base_s=1.0, factor=2.0, cap_s=30.0, max_attempts=8)
    >>> [b.delay(k) for k in range(1, 9)]
    [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, None]
    """

    base_s: float
    factor: float
    cap_s: float
    max_attempts: int

    @classmethod
    def from_settings(cls, alerting: AlertingSettings) -> Backoff:
        return cls(alerting.delivery_retry_base_s, alerting.delivery_retry_factor, alerting.delivery_retry_cap_s,
                   alerting.delivery_max_attempts)

    def delay(self, attempts: int) -> float | None:
        """Wait after the ``attempts``-th failed attempt; None when that was the last one allowed."""
        if attempts >= self.max_attempts:
            return None
        return min(self.cap_s, self.base_s * self.factor ** (attempts - 1))


class DeliveryMetrics:
    """The dispatcher's Prometheus metrics (docs/metrics.md), through ``ray.util.metrics``.

    Created in the process that records them (the router actor), as Ray's metric objects require.
    """

    def __init__(self) -> None:
        from ray.util.metrics import Counter, Gauge, Histogram

        self.deliveries = Counter("smoke_alert_deliveries", "delivery attempts by outcome (sent, retry, failed: "
                                  "given up)", tag_keys=("channel", "status"))
        self.latency = Histogram("smoke_alert_delivery_latency_seconds", "from the arrival of the reading that "
                                 "completed the evidence to the receiver accepting the notification",
                                 boundaries=LATENCY_BOUNDARIES, tag_keys=("channel",))
        self.pending = Gauge("smoke_alert_delivery_pending", "deliveries waiting to be sent (or retried)",
                             tag_keys=("channel",))

    def outcome(self, channel: str, status: str, latency_s: float | None = None) -> None:
        self.deliveries.inc(1, tags={"channel": channel, "status": status})
        if latency_s is not None:
            self.latency.observe(max(latency_s, 0.0), tags={"channel": channel})

    def pending_now(self, channel: str, count: int) -> None:
        self.pending.set(count, tags={"channel": channel})


@dataclass
class ChannelStatus:
    """What one channel's worker has done since the dispatcher started (for status and tests)."""

    sent: int = 0
    retries: int = 0
    failed: int = 0
    consecutive_failures: int = 0
    last_error: str | None = None
    last_error_at: float | None = None
    last_sent_at: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


class Dispatcher:
    """One worker thread per channel over the store's outbox; :meth:`start`, :meth:`wake`, :meth:`stop`."""

    def __init__(self, store: Outbox, channels: Mapping[str, Channel], backoff: Backoff, *,
                 poll_s: float = 0.5, batch: int = 100, metrics: DeliveryMetrics | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.store, self.channels, self.backoff = store, dict(channels), backoff
        self.poll_s, self.batch, self.metrics, self.clock = poll_s, batch, metrics, clock
        self._stopping = threading.Event()
        self._wakeups = {name: threading.Event() for name in self.channels}
        self._threads: dict[str, threading.Thread] = {}
        self._status = {name: ChannelStatus() for name in self.channels}
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, store: Outbox, channels: Mapping[str, Channel], alerting: AlertingSettings,
                      metrics: DeliveryMetrics | None = None) -> Dispatcher:
        return cls(store, channels, Backoff.from_settings(alerting), poll_s=alerting.delivery_poll_s,
                   batch=alerting.delivery_batch, metrics=metrics)

    def start(self) -> Dispatcher:
        self._stopping.clear()
        for name in self.channels:
            if name in self._threads and self._threads[name].is_alive():
                continue
            thread = threading.Thread(target=self._run, args=(name,), name=f"delivery:{name}", daemon=True)
            self._threads[name] = thread
            thread.start()
        return self

    def wake(self, channel: str | None = None) -> None:
        """Look for due deliveries now (of one channel, or all): the router calls it after recording some."""
        for name, event in self._wakeups.items():
            if channel is None or name == channel:
                event.set()

    def stop(self, timeout_s: float = 10.0) -> None:
        """Finish the send in progress (each bounded by its channel's timeout), then end the workers."""
        self._stopping.set()
        self.wake()
        deadline = time.monotonic() + timeout_s
        for thread in self._threads.values():
            thread.join(max(0.0, deadline - time.monotonic()))
        self._threads = {name: t for name, t in self._threads.items() if t.is_alive()}

    def status(self) -> dict[str, dict[str, Any]]:
        with self._lock:
            return {name: s.to_dict() for name, s in self._status.items()}

    def alive(self) -> dict[str, bool]:
        return {name: name in self._threads and self._threads[name].is_alive() for name in self.channels}

    # --- one channel's worker ---------------------------------------------------------------------

    def _run(self, name: str) -> None:
        channel, wakeup = self.channels[name], self._wakeups[name]
        next_pending_at = 0.0
        while not self._stopping.is_set():
            wakeup.clear()
            try:
                if self.metrics is not None and time.monotonic() >= next_pending_at:
                    self.metrics.pending_now(name, self.store.pending_count(name).get(name, 0))
                    next_pending_at = time.monotonic() + PENDING_REFRESH_S
                busy = self._pass(name, channel)
            except Exception as err:  # the store is unreachable: say so, keep the worker, try again
                log.error("delivery %s: cannot read or update the outbox: %r", name, err)
                self._note_error(name, f"outbox: {err!r}")
                busy = False
            if not busy:
                wakeup.wait(self.poll_s)

    def _pass(self, name: str, channel: Channel) -> bool:
        """Send what is due now; True when a full batch went out (there may be more at once)."""
        due = self.store.due_deliveries(name, self.clock(), limit=self.batch)
        for delivery in due:
            if self._stopping.is_set():
                return False
            if not self._deliver(name, channel, delivery.id, delivery.notification, delivery.attempts):
                return False  # head of line waits for its retry; the store lists nothing past it
        return len(due) >= self.batch

    def _deliver(self, name: str, channel: Channel, delivery_id: int, n: Notification, attempts: int) -> bool:
        """One attempt; False when the delivery waits for a retry (the worker's pass ends there)."""
        try:
            try:
                channel.send(n)
            except DeliveryError:
                raise
            except Exception as bug:  # a channel's own fault still counts as an attempt, never a silent loop
                raise DeliveryError(f"channel error: {bug!r}") from bug
        except DeliveryError as err:
            now = self.clock()
            made = attempts + 1
            delay = self.backoff.delay(made) if err.retryable else None
            self.store.mark_failed(delivery_id, at=now, error=err.reason,
                                   next_attempt_at=None if delay is None else now + delay)
            with self._lock:
                status = self._status[name]
                status.consecutive_failures += 1
                status.last_error, status.last_error_at = err.reason, now
                if delay is None:
                    status.failed += 1
                else:
                    status.retries += 1
            if delay is None:
                why = "refused" if not err.retryable else f"out of attempts ({made})"
                log.error("delivery %s: gave up on %s (%s): %s", name, n.idempotency_key, why, err.reason)
            else:
                log.warning("delivery %s: attempt %d of %s failed, next in %.1f s: %s", name, made,
                            n.idempotency_key, delay, err.reason)
            if self.metrics is not None:
                self.metrics.outcome(name, FAILED if delay is None else RETRY)
            return delay is None
        now = self.clock()
        latency = now - n.arrival_time if n.arrival_time is not None else None
        self.store.mark_delivered(delivery_id, at=now, latency_s=latency)
        with self._lock:
            status = self._status[name]
            status.sent += 1
            status.consecutive_failures = 0
            status.last_sent_at = now
        if self.metrics is not None:
            self.metrics.outcome(name, SENT, latency)
        return True

    def _note_error(self, name: str, reason: str) -> None:
        with self._lock:
            status = self._status[name]
            status.consecutive_failures += 1
            status.last_error, status.last_error_at = reason, self.clock()
