"""Delivery channels: what a channel is, how it fails, and the channels built from the settings.

A channel has a ``name`` (the one routes use) and ``send(notification)``, which
returns when the receiver has accepted the notification and raises
:class:`DeliveryError` otherwise. The error says whether a retry can help
(receiver down, timeout, 5xx, 429) or not (the receiver refused this
notification: a 4xx, a refused recipient); the dispatcher
(:mod:`alerting.delivery`) retries the first kind with backoff and gives up on
the second at once.

>>> from alerting.notification import Location, Notification
>>> n = Notification(alert_id="a" * 32, state="raised", kind="fire", severity="critical", sensor_id="sim-00064",
...     event_time=1700000003.0, detected_at=1700000003.2, location=Location(building="B", floor="2", zone="kitchen"))
>>> summary(n)
'FIRE raised (critical) at B, floor 2, kitchen [sim-00064]'
"""

from __future__ import annotations

from typing import Protocol

from alerting.notification import Notification
from ingest.settings import AlertingSettings, AlertmanagerChannel, EmailChannel, WebhookChannel


class DeliveryError(Exception):
    """A receiver did not accept a notification; ``retryable`` says whether trying again can help."""

    def __init__(self, reason: str, retryable: bool = True) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retryable = retryable


class Channel(Protocol):
    name: str

    def send(self, n: Notification) -> None:
        """Deliver ``n``; return once the receiver accepted it, else raise :class:`DeliveryError`."""
        ...


def summary(n: Notification) -> str:
    """One line a person reads: what, which state, how severe, where (and TEST for a test alarm)."""
    where = n.location.label() or n.sensor_id
    sensor = f" [{n.sensor_id}]" if where != n.sensor_id else ""
    test = "TEST " if n.test else ""
    return f"{test}{n.kind.replace('_', ' ').upper()} {n.state} ({n.severity}) at {where}{sensor}"


def http_error_retryable(status: int) -> bool:
    """A receiver's HTTP answer: 5xx, 408 and 429 are worth a retry; another 4xx refuses this notification."""
    return status >= 500 or status in (408, 429)


def build_channel(config: WebhookChannel | AlertmanagerChannel | EmailChannel) -> Channel:
    if isinstance(config, WebhookChannel):
        from alerting.channels.webhook import WebhookSender

        return WebhookSender(config)
    if isinstance(config, AlertmanagerChannel):
        from alerting.channels.alertmanager import AlertmanagerSender

        return AlertmanagerSender(config)
    from alerting.channels.email import EmailSender

    return EmailSender(config)


def build_channels(alerting: AlertingSettings) -> dict[str, Channel]:
    """The configured channels by name (settings validated the names are unique)."""
    return {config.name: build_channel(config) for config in alerting.channels}
