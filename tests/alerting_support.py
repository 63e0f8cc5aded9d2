"""Real receivers for the delivery tests: Debian's Alertmanager and an aiosmtpd SMTP server, on free ports.

Each is started by the test that needs it (in a temporary directory, addresses
passed explicitly) and stopped by it; nothing here stops a process it did not start.
"""

from __future__ import annotations

import subprocess
import threading
import time
import warnings
from collections.abc import Callable
from email import message_from_bytes
from email.message import Message
from pathlib import Path

import httpx

from tests.serve_support import free_port

ALERTMANAGER = "/usr/bin/prometheus-alertmanager"


class Alertmanager:
    """``prometheus-alertmanager`` with a do-nothing receiver, its own storage and no cluster gossip."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None

    def start(self) -> Alertmanager:
        self.root.mkdir(parents=True, exist_ok=True)
        config = self.root / "alertmanager.yml"
        config.write_text("route:\n  receiver: nobody\nreceivers:\n  - name: nobody\n")
        with open(self.root / "alertmanager.log", "wb") as log:  # the child keeps its own copy of the handle
            self.process = subprocess.Popen(
                [ALERTMANAGER, f"--config.file={config}", f"--storage.path={self.root / 'data'}",
                 f"--web.listen-address=127.0.0.1:{self.port}", "--cluster.listen-address="],
                stdout=subprocess.DEVNULL, stderr=log)
        wait_for(lambda: self._ready(), 20, f"Alertmanager on port {self.port}")
        return self

    def _ready(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise RuntimeError(f"Alertmanager exited: {(self.root / 'alertmanager.log').read_text()[-2000:]}")
        try:
            return httpx.get(f"{self.url}/-/ready", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def alerts(self, **filters: str) -> list[dict]:
        """GET /api/v2/alerts (active ones, as Alertmanager shows them)."""
        answer = httpx.get(f"{self.url}/api/v2/alerts", params=filters, timeout=5)
        answer.raise_for_status()
        return answer.json()

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
            self.process = None


class SmtpSink:
    """An aiosmtpd SMTP server that keeps every message it accepts, optionally requiring AUTH."""

    def __init__(self, *, auth: tuple[str, str] | None = None) -> None:
        self.port = free_port()
        self.messages: list[Message] = []
        self.envelopes: list[tuple[str, list[str]]] = []
        self._auth = auth
        self._controller = None
        self._lock = threading.Lock()

    def start(self) -> SmtpSink:
        from aiosmtpd.controller import Controller
        from aiosmtpd.smtp import AuthResult, LoginPassword

        sink = self

        class Handler:
            async def handle_DATA(self, server, session, envelope):
                with sink._lock:
                    sink.envelopes.append((envelope.mail_from, list(envelope.rcpt_tos)))
                    sink.messages.append(message_from_bytes(envelope.content))
                return "250 OK"

        def authenticator(server, session, envelope, mechanism, auth_data):
            ok = isinstance(auth_data, LoginPassword) and self._auth is not None and (
                auth_data.login.decode(), auth_data.password.decode()) == self._auth
            return AuthResult(success=ok, handled=False)  # aiosmtpd answers 535 on a failure

        options = {}
        if self._auth is not None:
            # Plain-text AUTH on localhost only: the channel's STARTTLS is a setting of its own.
            options = {"authenticator": authenticator, "auth_require_tls": False, "auth_required": True}
            warnings.filterwarnings("ignore", "Requiring AUTH while not requiring TLS", UserWarning)
        self._controller = Controller(Handler(), hostname="127.0.0.1", port=self.port, **options)
        self._controller.start()
        return self

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def received(self) -> list[Message]:
        with self._lock:
            return list(self.messages)


def wait_for(condition: Callable[[], object], timeout_s: float, what: str, every_s: float = 0.05) -> object:
    """Poll ``condition`` until it is truthy (returns its value) or fail naming ``what``."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what}")
        time.sleep(every_s)
