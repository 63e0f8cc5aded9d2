"""A small webhook receiver: takes the alert service's notifications, checks their signature, keeps them.

``smoke alerts listen --port P [--secret S]`` runs it in the foreground and
prints one line per notification (the README's quick start delivers a test
alarm to it); tests and ``bench/alerting.py`` run it in a thread as the
receiving end of a webhook channel.

What it answers: 200 for a notification it accepts (and for a repeat of an
idempotency key it has seen, which it counts but does not keep twice), 401 when
a secret is set and the signature is missing or wrong, 400 for a body that is
not a notification. ``stop()`` closes the port, so a test can take the receiver
down and bring it back on the same port.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import orjson

from alerting.channels.webhook import IDEMPOTENCY_HEADER, SIGNATURE_HEADER, verify_signature
from alerting.notification import Notification

MAX_BODY_BYTES = 1024 * 1024


@dataclass(frozen=True)
class Received:
    """One accepted notification, with the wall clock when it arrived."""

    notification: Notification
    idempotency_key: str
    received_at: float
    signed: bool  # a signature was checked (a secret is set) and matched


class WebhookReceiver:
    """An HTTP server on ``host:port`` (0: a free port) taking POSTed notifications on any path."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, secret: str | None = None,
                 on_notification: Callable[[Received], None] | None = None,
                 on_rejected: Callable[[int, str], None] | None = None) -> None:
        self.host, self.port, self.secret = host, port, secret
        self.on_notification, self.on_rejected = on_notification, on_rejected
        self.received: list[Received] = []
        self.repeats = 0
        self.rejected = 0
        self._keys: set[str] = set()
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/"

    def start(self) -> WebhookReceiver:
        server = ThreadingHTTPServer((self.host, self.port), _handler(self))
        server.daemon_threads = True
        self.port = server.server_address[1]  # the port picked when 0 was asked; kept for a restart
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, name=f"webhook-receiver:{self.port}",
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Close the port (notifications sent meanwhile fail to connect, as with a receiver that is down)."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None

    def __enter__(self) -> WebhookReceiver:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def serve_forever(self) -> None:
        """Run until interrupted (the CLI); the port is closed on the way out."""
        self.start()
        try:
            while self._thread is not None and self._thread.is_alive():
                self._thread.join(0.5)
        finally:
            self.stop()

    def notifications(self) -> list[Notification]:
        with self._lock:
            return [r.notification for r in self.received]

    def accept(self, body: bytes, signature: str | None, key: str | None) -> tuple[int, str]:
        """Judge one POST: (status, reason). Kept apart from HTTP so the rules read in one place."""
        if self.secret is not None and not verify_signature(body, signature, self.secret):
            return self._reject(401, f"{SIGNATURE_HEADER} missing or wrong")
        try:
            doc = orjson.loads(body)
            doc.pop("summary", None)
            doc.pop("idempotency_key", None)
            notification = Notification.from_dict(doc)
        except (orjson.JSONDecodeError, TypeError, AttributeError) as err:
            return self._reject(400, f"not a notification: {err}")
        key = key or notification.idempotency_key
        with self._lock:
            if key in self._keys:
                self.repeats += 1
                return 200, "repeat"
            self._keys.add(key)
            received = Received(notification, key, time.time(), signed=self.secret is not None)
            self.received.append(received)
        if self.on_notification is not None:
            self.on_notification(received)
        return 200, "accepted"

    def _reject(self, status: int, reason: str) -> tuple[int, str]:
        with self._lock:
            self.rejected += 1
        if self.on_rejected is not None:
            self.on_rejected(status, reason)
        return status, reason


def _handler(receiver: WebhookReceiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            if length > MAX_BODY_BYTES:
                self._answer(413, f"body over {MAX_BODY_BYTES} bytes")
                return
            body = self.rfile.read(length)
            status, reason = receiver.accept(body, self.headers.get(SIGNATURE_HEADER),
                                             self.headers.get(IDEMPOTENCY_HEADER))
            self._answer(status, reason)

        def _answer(self, status: int, reason: str) -> None:
            payload = orjson.dumps({"status": reason})
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the sender gave up (or died) before the answer: it will send again

        def log_message(self, format: str, *args: object) -> None:
            pass  # one line per notification is printed by the caller, not one per request

    return Handler
