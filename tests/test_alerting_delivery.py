"""The dispatcher over the real store's outbox, to real receivers: retries, order, isolation, exactly once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
from pydantic import SecretStr

from alerting.channels import build_channels
from alerting.delivery import Dispatcher
from alerting.listen import WebhookReceiver
from alerting.routing import Routing
from ingest.alert_message import AlertEvent, alert_id
from ingest.settings import AlertingSettings, AlertmanagerChannel, EmailChannel, WebhookChannel
from tests.alerting_support import Alertmanager, SmtpSink, wait_for
from tests.serve_support import free_port

# The store lands from its own branch (alerting/store.py); until it is merged there is nothing to dispatch from.
AlertStore = pytest.importorskip("alerting.store", reason="alerting/store.py not merged yet").AlertStore

pytestmark = pytest.mark.integration

TOPIC = "smoke_alerts"
# How long the webhook receiver stays down: short in the default suite, the 60 s under --full.
SHORT_OUTAGE_S, FULL_OUTAGE_S = 3.0, 60.0


def fast_retries(channels: list, **extra) -> AlertingSettings:
    """Delivery timings for tests: quick first retries, capped at 1 s so a receiver back is found at once."""
    return AlertingSettings(channels=channels, delivery_retry_base_s=0.1, delivery_retry_factor=2.0,
                            delivery_retry_cap_s=1.0, delivery_max_attempts=1000, delivery_poll_s=0.1, **extra)


def incidents(count: int, start: float) -> list[AlertEvent]:
    """``count`` fire incidents, raised and cleared, interleaved (raised 0, raised 1, cleared 0, ...)."""
    events = []
    for k in range(count):
        aid = alert_id(f"s{k}", "fire", start + k)
        for state, dt in (("raised", 3.0), ("cleared", 60.0)):
            events.append(AlertEvent(alert_id=aid, sensor_id=f"s{k}", kind="fire",
                                     severity="critical" if state == "raised" else "info", state=state,
                                     event_time=start + k + dt, detected_at=start + k + dt + 0.2, score=2.5,
                                     model_version="v0001", evidence={"channels": ["particles", "heat"]}))
    return sorted(events, key=lambda e: e.event_time)


def record(store: AlertStore, events: list[AlertEvent], first_offset: int = 0) -> None:
    for offset, event in enumerate(events, start=first_offset):
        assert store.record_event(event, topic=TOPIC, partition=0, offset=offset, arrival_time=time.time())


def deliveries(store: AlertStore, events: list[AlertEvent], channel: str) -> list:
    ids = dict.fromkeys(e.alert_id for e in events)
    return [d for aid in ids for d in store.incident(aid).deliveries if d.channel == channel]


def outage_scenario(tmp_path, outage_s: float, incident_count: int, reliability_record) -> None:
    webhook_port = free_port()
    receiver = WebhookReceiver(port=webhook_port, secret="s3cret")  # down: not started yet
    manager = Alertmanager(tmp_path / "am").start()
    sink = SmtpSink().start()
    alerting = fast_retries([
        WebhookChannel(type="webhook", name="hook", url=receiver.url, secret=SecretStr("s3cret"), timeout_s=2),
        AlertmanagerChannel(type="alertmanager", name="am", url=manager.url),
        EmailChannel(type="email", name="mail", host="127.0.0.1", port=sink.port, sender="smoke@example.org",
                     recipients=["ops@example.org"])])
    store = AlertStore.open(f"sqlite:///{tmp_path / 'alerts.db'}", Routing.from_settings(alerting))
    events = incidents(incident_count, start=time.time() - 3600)
    dispatcher = Dispatcher.from_settings(store, build_channels(alerting), alerting)
    try:
        record(store, events)
        down_at = time.monotonic()
        dispatcher.start()
        # The other channels deliver everything while the webhook receiver is down.
        wait_for(lambda: len(sink.received()) == len(events), 30, "every email")
        wait_for(lambda: all(d.status == "sent" for d in deliveries(store, events, "am")), 30, "Alertmanager")
        others_done_s = time.monotonic() - down_at
        assert receiver.received == []
        assert all(d.status == "pending" for d in deliveries(store, events, "hook"))
        assert dispatcher.status()["hook"]["retries"] >= 1 and dispatcher.status()["mail"]["sent"] == len(events)
        time.sleep(max(0.0, outage_s - (time.monotonic() - down_at)))
        receiver.start()  # back on the same port
        back_at = time.monotonic()
        wait_for(lambda: len(receiver.received) == len(events), 30, "every webhook after the outage")
        caught_up_s = time.monotonic() - back_at
        # In order: the channel's head waits for its retry, so nothing overtakes (per incident, and overall).
        got = [(n.alert_id, n.state) for n in receiver.notifications()]
        assert got == [(e.alert_id, e.state) for e in events]
        assert receiver.repeats == 0 and receiver.rejected == 0 and all(r.signed for r in receiver.received)
        hooks = deliveries(store, events, "hook")
        assert all(d.status == "sent" and d.attempts > 1 for d in hooks[:1])
        assert all(d.status == "sent" and d.latency_s is not None for d in hooks)
        reliability_record("webhook_outage", outage_s=outage_s, notifications=len(events),
                           other_channels_done_s=round(others_done_s, 2),
                           caught_up_after_return_s=round(caught_up_s, 2), delivered_after=len(receiver.received),
                           lost=len(events) - len(receiver.received), duplicated=receiver.repeats)
    finally:
        dispatcher.stop()
        receiver.stop()
        sink.stop()
        manager.stop()
        store.close()


def test_a_webhook_receiver_down_gets_everything_after_in_order_and_delays_no_other_channel(
        tmp_path, reliability_record):
    outage_scenario(tmp_path, SHORT_OUTAGE_S, incident_count=3, reliability_record=reliability_record)


@pytest.mark.full
def test_a_webhook_receiver_down_for_60_s(tmp_path, reliability_record):
    outage_scenario(tmp_path, FULL_OUTAGE_S, incident_count=20, reliability_record=reliability_record)


def test_a_refused_notification_is_given_up_at_once_and_the_channel_goes_on(tmp_path):
    with WebhookReceiver(secret="s3cret") as receiver, WebhookReceiver() as other:
        alerting = fast_retries([
            WebhookChannel(type="webhook", name="wrong-secret", url=receiver.url, secret=SecretStr("nope")),
            WebhookChannel(type="webhook", name="open", url=other.url)])
        store = AlertStore.open(f"sqlite:///{tmp_path / 'alerts.db'}", Routing.from_settings(alerting))
        events = incidents(2, start=time.time() - 3600)
        dispatcher = Dispatcher.from_settings(store, build_channels(alerting), alerting).start()
        try:
            record(store, events)
            wait_for(lambda: all(d.status == "failed_permanently"
                                 for d in deliveries(store, events, "wrong-secret")), 20, "give-ups")
            wait_for(lambda: len(other.received) == len(events), 20, "the other channel")
            refused = deliveries(store, events, "wrong-secret")
            assert [d.attempts for d in refused] == [1] * len(events)
            assert all("HTTP 401" in d.last_error for d in refused)
            assert receiver.received == [] and receiver.rejected == len(events)
            assert dispatcher.status()["wrong-secret"]["failed"] == len(events)
        finally:
            dispatcher.stop()
            store.close()


def test_exactly_once_per_alert_and_state_across_a_dispatcher_killed_mid_delivery(tmp_path):
    """kill -9 of the dispatcher after the receiver took a notification but before the store marked it sent:
    the next dispatcher sends it again with the same idempotency key, and the receiver keeps it once."""
    dsn = f"sqlite:///{tmp_path / 'alerts.db'}"
    process: subprocess.Popen | None = None
    killed: list[str] = []

    def crash_on_third(received) -> None:
        if len(killed) == 0 and len(receiver.received) == 3 and process is not None:
            os.kill(process.pid, signal.SIGKILL)
            process.wait(10)  # dead before the receiver answers: the delivery is never marked sent
            killed.append(received.idempotency_key)

    receiver = WebhookReceiver(on_notification=crash_on_third).start()
    alerting = fast_retries([WebhookChannel(type="webhook", name="hook", url=receiver.url, timeout_s=2)])
    store = AlertStore.open(dsn, Routing.from_settings(alerting))
    events = incidents(3, start=time.time() - 3600)
    record(store, events)
    try:
        process = subprocess.Popen([sys.executable, "-m", "tests.alerting_dispatch_process", dsn,
                                    alerting.model_dump_json()], stdout=subprocess.PIPE, text=True)
        assert process.stdout.readline().strip() == "ready"
        wait_for(lambda: killed, 30, "the kill after the third notification")
        assert process.poll() == -signal.SIGKILL
        hooks = deliveries(store, events, "hook")
        assert sum(d.status == "sent" for d in hooks) == 2  # the third was taken but never marked
        dispatcher = Dispatcher.from_settings(store, build_channels(alerting), alerting).start()
        try:
            wait_for(lambda: all(d.status == "sent" for d in deliveries(store, events, "hook")), 30, "the rest")
        finally:
            dispatcher.stop()
        keys = [r.idempotency_key for r in receiver.received]
        assert keys == [f"{e.alert_id}:{e.state}" for e in events]  # each once, in order
        assert receiver.repeats == 1 and killed[0] == keys[2]  # the resend carried the same key
    finally:
        if process is not None and process.poll() is None:
            process.kill()
            process.wait(10)
        receiver.stop()
        store.close()
