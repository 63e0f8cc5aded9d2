"""Delivery channels against real receivers: an HTTP server, Debian's Alertmanager, an aiosmtpd SMTP server."""

from __future__ import annotations

import hashlib
import hmac
import threading
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import orjson
import pytest
from pydantic import SecretStr

from alerting.channels import DeliveryError, build_channels
from alerting.listen import WebhookReceiver
from alerting.notification import Location, Notification
from ingest.settings import AlertingSettings, AlertmanagerChannel, EmailChannel, WebhookChannel
from tests.alerting_support import Alertmanager, SmtpSink, wait_for
from tests.serve_support import free_port

pytestmark = pytest.mark.integration

FIRE = Notification(alert_id="f" * 32, state="raised", kind="fire", severity="critical", sensor_id="sim-00064",
                    event_time=1_700_000_003.0, detected_at=1_700_000_003.2, score=2.5, model_version="v0003",
                    location=Location(site="north", building="B", floor="2", zone="kitchen"),
                    evidence={"channels": ["particles", "heat"]}, arrival_time=1_700_000_003.1)


def webhook(url: str, secret: str | None = "s3cret") -> WebhookChannel:
    return WebhookChannel(type="webhook", name="hook", url=url, secret=secret, timeout_s=2)


class _Recorder(BaseHTTPRequestHandler):
    """A plain HTTP endpoint keeping the raw request, to check the signature independently of our receiver."""

    requests: ClassVar[list[tuple[dict[str, str], bytes]]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.requests.append((dict(self.headers), body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def test_webhook_posts_json_signed_with_hmac_sha256_and_the_idempotency_key():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        channels = build_channels(AlertingSettings(channels=[webhook(f"http://127.0.0.1:{server.server_port}/in")]))
        channels["hook"].send(FIRE)
    finally:
        server.shutdown()
        server.server_close()
    (headers, body), = _Recorder.requests
    expected = hmac.new(b"s3cret", body, hashlib.sha256).hexdigest()
    assert headers["X-Smoke-Signature"] == f"sha256={expected}"
    assert headers["Idempotency-Key"] == f"{'f' * 32}:raised"
    assert headers["Content-Type"] == "application/json"
    doc = orjson.loads(body)
    assert doc["alert_id"] == FIRE.alert_id and doc["location"]["zone"] == "kitchen"
    assert doc["summary"] == "FIRE raised (critical) at north, B, floor 2, kitchen [sim-00064]"


def test_webhook_delivery_to_the_listen_receiver_and_its_refusals():
    with WebhookReceiver(secret="s3cret") as receiver:
        channels = build_channels(AlertingSettings(channels=[webhook(receiver.url)]))
        channels["hook"].send(FIRE)
        channels["hook"].send(FIRE)  # a retry after a lost answer: accepted, kept once
        assert receiver.notifications() == [FIRE]
        assert receiver.repeats == 1 and receiver.received[0].signed
        wrong = build_channels(AlertingSettings(channels=[webhook(receiver.url, secret="other")]))["hook"]
        with pytest.raises(DeliveryError, match="HTTP 401") as refused:
            wrong.send(replace(FIRE, state="cleared"))
        assert not refused.value.retryable
        unsigned = build_channels(AlertingSettings(channels=[webhook(receiver.url, secret=None)]))["hook"]
        with pytest.raises(DeliveryError, match="HTTP 401"):
            unsigned.send(replace(FIRE, state="cleared"))
        assert receiver.notifications() == [FIRE] and receiver.rejected == 2


def test_webhook_to_a_receiver_that_is_down_is_a_retryable_error():
    channel = build_channels(AlertingSettings(channels=[webhook(f"http://127.0.0.1:{free_port()}/")]))["hook"]
    with pytest.raises(DeliveryError, match="cannot reach") as down:
        channel.send(FIRE)
    assert down.value.retryable


def test_alertmanager_receives_the_alert_with_labels_and_cleared_resolves_it(tmp_path):
    manager = Alertmanager(tmp_path / "am").start()
    try:
        config = AlertmanagerChannel(type="alertmanager", name="am", url=manager.url,
                                     incident_url="http://ops.example/incidents/{alert_id}")
        channel = build_channels(AlertingSettings(channels=[config]))["am"]
        channel.send(FIRE)
        alert, = wait_for(lambda: manager.alerts(), 10, "the alert in Alertmanager")
        assert alert["labels"] == {"alertname": "smoke_fire", "alert_id": FIRE.alert_id, "sensor_id": "sim-00064",
                                   "kind": "fire", "severity": "critical", "zone": "kitchen", "site": "north"}
        assert alert["annotations"]["state"] == "raised"
        assert alert["annotations"]["location"] == "north, B, floor 2, kitchen"
        assert alert["generatorURL"] == f"http://ops.example/incidents/{FIRE.alert_id}"
        assert alert["status"]["state"] == "active"
        channel.send(replace(FIRE, state="cleared", event_time=FIRE.event_time + 60, detected_at=FIRE.detected_at + 60))
        wait_for(lambda: manager.alerts() == [], 10, "the cleared alert to leave the active ones")
        test_alarm = replace(FIRE, alert_id="t" * 32, test=True)
        channel.send(test_alarm)
        alert, = wait_for(lambda: manager.alerts(), 10, "the test alarm in Alertmanager")
        assert alert["labels"]["test"] == "true" and alert["labels"]["alert_id"] == "t" * 32
        bad = build_channels(AlertingSettings(channels=[config.model_copy(update={"url": manager.url + "/nowhere"})]))
        with pytest.raises(DeliveryError, match="HTTP 404") as refused:
            bad["am"].send(FIRE)
        assert not refused.value.retryable
    finally:
        manager.stop()


def test_email_over_smtp_with_auth_and_its_failures():
    sink = SmtpSink(auth=("smoke", "pw")).start()
    try:
        config = EmailChannel(type="email", name="mail", host="127.0.0.1", port=sink.port, username="smoke",
                              password="pw", sender="smoke@example.org",
                              recipients=["ops@example.org", "keyholder@example.org"])
        channel = build_channels(AlertingSettings(channels=[config]))["mail"]
        channel.send(FIRE)
        message, = sink.received()
        assert sink.envelopes == [("smoke@example.org", ["ops@example.org", "keyholder@example.org"])]
        assert message["Subject"] == "FIRE raised (critical) at north, B, floor 2, kitchen [sim-00064]"
        assert message["X-Smoke-Idempotency-Key"] == f"{FIRE.alert_id}:raised"
        text = message.get_payload(decode=True).decode()
        assert "location:     north, B, floor 2, kitchen" in text and '"particles"' in text
        wrong_login = config.model_copy(update={"password": SecretStr("nope")})
        wrong = build_channels(AlertingSettings(channels=[wrong_login]))["mail"]
        with pytest.raises(DeliveryError, match="535") as refused:
            wrong.send(FIRE)
        assert refused.value.retryable  # a login fixed in the settings still delivers it
        assert len(sink.received()) == 1
    finally:
        sink.stop()
    with pytest.raises(DeliveryError, match=r"SMTP 127\.0\.0\.1") as down:
        channel.send(FIRE)
    assert down.value.retryable


def test_secrets_are_not_shown_in_the_settings():
    config = EmailChannel(type="email", name="mail", host="h", sender="a@b", recipients=["c@d"], password="pw")
    hook = webhook("http://x/", secret="s3cret")
    assert "pw" not in repr(config) and "s3cret" not in repr(hook) and "s3cret" not in str(hook.model_dump())
