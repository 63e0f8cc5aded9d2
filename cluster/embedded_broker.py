"""The detached embedded broker of this machine: start it, find it again, forget it.

``smoke broker start``, ``smoke up`` and the commands that need a Kafka when none is
configured (``smoke simulate``, ``smoke replay``) share one broker, recorded in
``<ray.run_dir>/broker.json`` with its pid and address, so a later command finds it
instead of starting another.
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
from pathlib import Path

from cluster.processes import pid_alive
from ingest.settings import Settings

STATE_FILE = "broker.json"


def state_path(settings: Settings) -> Path:
    return Path(settings.ray.run_dir) / STATE_FILE


def running_broker(settings: Settings) -> dict | None:
    """The state of the detached embedded broker if it is still alive and listening, else None."""
    from ingest.broker import port_open

    path = state_path(settings)
    try:
        state = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    host, _, port = state.get("bootstrap_servers", "").rpartition(":")
    if pid_alive(state.get("pid", -1)) and port.isdigit() and port_open(host, int(port)):
        return state
    return None


def start_detached_broker(settings: Settings, port: int | None = None) -> dict:
    """Start the embedded broker in its own session, create the topics, record it; returns its state."""
    from ingest.broker import EmbeddedBroker, ensure_topics

    run_dir = Path(settings.ray.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    broker = EmbeddedBroker(port=settings.kafka.embedded_port if port is None else port,
                            log_path=run_dir / "broker.log", detached=True)
    broker.start(timeout_s=settings.kafka.startup_timeout_s)
    try:
        ensure_topics(broker.bootstrap_servers, settings.kafka)
    except Exception:
        broker.stop()
        raise
    state = {"pid": broker.process.pid, "bootstrap_servers": broker.bootstrap_servers,
             "started_at": time.time(), "log": str(run_dir / "broker.log")}
    state_path(settings).write_text(json.dumps(state))
    return state


def resolve_bootstrap(settings: Settings, given: str | None, command: str) -> str:
    """Kafka to use; starts the embedded broker detached when none is configured or running."""
    if given or settings.kafka.bootstrap_servers:
        return given or settings.kafka.bootstrap_servers
    state = running_broker(settings)
    if state is None:
        state = start_detached_broker(settings)
        print(f"smoke {command}: started the embedded broker on {state['bootstrap_servers']} "
              f"(pid {state['pid']}); it keeps running, stop it with `smoke broker stop`", file=sys.stderr)
    return state["bootstrap_servers"]


def forget_broker(settings: Settings, pid: int) -> None:
    """Remove the record if it describes the broker with ``pid`` (just stopped by ``smoke down``)."""
    path = state_path(settings)
    with contextlib.suppress(OSError, ValueError):
        if json.loads(path.read_text()).get("pid") == pid:
            path.unlink()
