"""A real MQTT broker for tests: Debian's mosquitto on a free port, with a temp config and persistence."""

from __future__ import annotations

import getpass
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from ingest.broker import free_port, port_open

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"


@dataclass
class Mosquitto:
    """mosquitto on 127.0.0.1 with a persistent store in ``directory``; restartable on the same port."""

    directory: Path
    port: int = 0
    process: subprocess.Popen | None = None

    def start(self, timeout_s: float = 10.0) -> Mosquitto:
        if self.port == 0:
            self.port = free_port()
        config = self.directory / "mosquitto.conf"
        store = self.directory / "store"
        store.mkdir(parents=True, exist_ok=True)
        # max_inflight_messages: the broker's default of 20 unacknowledged messages per client would
        # hold the bridge to 20 per Kafka round trip; max_queued_messages: room for what arrives while
        # the bridge is down (docs/ingest.md says the same to operators).
        config.write_text(
            f"listener {self.port} 127.0.0.1\n"
            "allow_anonymous true\n"
            f"user {getpass.getuser()}\n"
            "persistence true\n"
            f"persistence_location {store}/\n"
            "max_inflight_messages 1000\n"
            "max_queued_messages 200000\n"
            "log_type error\nlog_type warning\n"
            f"log_dest file {self.directory / 'mosquitto.log'}\n")
        self.process = subprocess.Popen([MOSQUITTO, "-c", str(config)], stdin=subprocess.DEVNULL,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout_s
        while not port_open("127.0.0.1", self.port):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                log = self.directory / "mosquitto.log"
                raise RuntimeError(f"mosquitto did not start: {log.read_text() if log.exists() else 'no log'}")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        """SIGTERM: mosquitto writes its persistent store (sessions, queued messages) and exits."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)

    def __enter__(self) -> Mosquitto:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
