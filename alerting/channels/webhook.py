"""The generic JSON webhook: POST of the notification, signed, with its idempotency key.

The body is the notification as JSON (:meth:`Notification.to_dict` plus a
``summary`` line). ``X-Smoke-Signature: sha256=<hex>`` is the HMAC-SHA256 of
the exact body bytes with the channel's secret, so a receiver can check that
the alert service sent it and nothing changed it; ``Idempotency-Key:
alert_id:state`` lets a receiver drop a repeat (a retry after a lost answer).

>>> body = b'{"alert_id": "x"}'
>>> header = signature(body, "s3cret")
>>> header.startswith("sha256="), verify_signature(body, header, "s3cret"), verify_signature(body, header, "other")
(True, True, False)
"""

from __future__ import annotations

import hashlib
import hmac

import orjson

from alerting.channels import summary
from alerting.channels.http import post
from alerting.notification import Notification
from ingest.settings import WebhookChannel

SIGNATURE_HEADER = "X-Smoke-Signature"
IDEMPOTENCY_HEADER = "Idempotency-Key"


def signature(body: bytes, secret: str) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def verify_signature(body: bytes, header: str | None, secret: str) -> bool:
    """Whether ``header`` is the signature of ``body`` with ``secret`` (constant-time compare)."""
    return header is not None and hmac.compare_digest(header, signature(body, secret))


def webhook_body(n: Notification) -> bytes:
    return orjson.dumps({**n.to_dict(), "summary": summary(n), "idempotency_key": n.idempotency_key})


class WebhookSender:
    """A webhook channel; ``send`` returns when the receiver answered 2xx."""

    def __init__(self, config: WebhookChannel) -> None:
        self.name = config.name
        self.config = config

    def send(self, n: Notification) -> None:
        body = webhook_body(n)
        headers = {"Content-Type": "application/json", "User-Agent": "smoke-alerting",
                   IDEMPOTENCY_HEADER: n.idempotency_key}
        if self.config.secret is not None:
            headers[SIGNATURE_HEADER] = signature(body, self.config.secret.get_secret_value())
        post(self.config.url, body, headers, self.config.timeout_s)
