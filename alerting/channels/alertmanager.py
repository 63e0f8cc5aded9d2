"""Prometheus Alertmanager's v2 API: each notification as one alert, so its routing, grouping and paging apply.

An incident is one Alertmanager alert, identified by its labels (``alertname``
``smoke_<kind>``, ``alert_id``, ``sensor_id``, ``kind``, ``severity`` and the
sensor's ``zone`` and ``site`` when known; ``test="true"`` on a test alarm).
Every state change POSTs it again to ``/api/v2/alerts`` with the state in the
annotations; a cleared or resolved incident carries ``endsAt``, which resolves
it in Alertmanager.

We send each state once, never the periodic resends Prometheus makes, and
Alertmanager resolves an alert that has no ``endsAt`` after its
``resolve_timeout`` (5 minutes by default) without news. So a firing incident
carries an ``endsAt`` far ahead of its sending (:data:`FIRING_HORIZON_S`); its cleared or
resolved notification ends it.

>>> from alerting.notification import Notification
>>> n = Notification(alert_id="a" * 32, state="cleared", kind="fire", severity="critical", sensor_id="s1",
...     event_time=1700000003.0, detected_at=1700000003.2)
>>> alert = alertmanager_alert(n, incident_url="http://ops/incidents/{alert_id}")
>>> alert["labels"]["alertname"], alert["endsAt"], alert["generatorURL"][-8:]
('smoke_fire', '2023-11-14T22:13:23.200Z', 'aaaaaaaa')
"""

from __future__ import annotations

import time
from typing import Any

import orjson

from alerting.channels import summary
from alerting.channels.http import post
from alerting.notification import CLEARED, RESOLVED, Notification
from ingest.settings import AlertmanagerChannel
from ingest.validation import format_timestamp

ENDING_STATES = (CLEARED, RESOLVED)
# How long Alertmanager keeps a firing incident without news: longer than any incident lasts
# unattended, since its cleared or resolved notification is what ends it.
FIRING_HORIZON_S = 7 * 24 * 3600.0


def alertmanager_alert(n: Notification, *, incident_url: str = "", now: float | None = None) -> dict[str, Any]:
    """The v2 API's postable alert for one notification, sent at ``now`` (default: the wall clock)."""
    labels = {"alertname": f"smoke_{n.kind}", "alert_id": n.alert_id, "sensor_id": n.sensor_id,
              "kind": n.kind, "severity": n.severity}
    # Alertmanager treats an empty label as no label; leave unknown places out rather than send "".
    labels.update({k: v for k, v in (("zone", n.location.zone), ("site", n.location.site)) if v})
    if n.test:
        labels["test"] = "true"
    annotations = {"summary": summary(n), "state": n.state}
    if n.location.label():
        annotations["location"] = n.location.label()
    if n.score is not None:
        annotations["score"] = f"{n.score:.3g}"
    for key in ("by", "note", "outcome", "model_version"):
        value = getattr(n, key)
        if value:
            annotations[key] = str(value)
    starts = min(n.event_time, n.detected_at)
    if n.state in ENDING_STATES:
        ends = max(n.event_time, n.detected_at)
    else:
        ends = max(starts, time.time() if now is None else now) + FIRING_HORIZON_S
    alert: dict[str, Any] = {"labels": labels, "annotations": annotations,
                             "startsAt": format_timestamp(starts), "endsAt": format_timestamp(ends)}
    if incident_url:
        alert["generatorURL"] = incident_url.format(alert_id=n.alert_id)
    return alert


class AlertmanagerSender:
    """An Alertmanager channel; ``send`` returns when Alertmanager accepted the alert (200)."""

    def __init__(self, config: AlertmanagerChannel) -> None:
        self.name = config.name
        self.config = config
        self.endpoint = config.url.rstrip("/") + "/api/v2/alerts"

    def send(self, n: Notification) -> None:
        body = orjson.dumps([alertmanager_alert(n, incident_url=self.config.incident_url)])
        post(self.endpoint, body, {"Content-Type": "application/json", "User-Agent": "smoke-alerting"},
             self.config.timeout_s)
