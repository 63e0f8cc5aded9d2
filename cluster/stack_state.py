"""What ``smoke up`` started, written to ``<ray.run_dir>/stack.json`` so that later commands find it.

``smoke down`` stops exactly what is recorded here (by pid and Unix session),
``smoke status`` checks it, and every other ``smoke`` command uses the recorded
Ray address and Kafka bootstrap servers when none is configured
(:func:`attach_running_stack`). The file is written atomically after each part
starts, so a ``smoke up`` that fails half-way still leaves a record that
``smoke down`` can clean up from.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from cluster.processes import pid_alive, session_pids
from ingest.settings import Settings

STATE_FILE = "stack.json"


@dataclass
class StackState:
    started_at: float = field(default_factory=time.time)
    # The Ray head we started (session_id set) or the existing cluster we connected to (session_id None).
    ray_address: str | None = None
    ray_session_id: int | None = None
    ray_temp_dir: str | None = None
    dashboard_url: str | None = None
    metrics_url: str | None = None
    token_source: str | None = None
    prometheus_config: str | None = None
    namespace: str = "smoke"
    # Kafka: the embedded broker we started (broker_pid set) or an existing cluster.
    bootstrap_servers: str | None = None
    broker_pid: int | None = None
    topics: list[str] = field(default_factory=list)
    model_version: str | None = None
    stream_name: str | None = None
    serve_app: str | None = None
    router_name: str | None = None  # the alert router actor (alerting/router.py)
    serve_url: str | None = None
    # The operator API and console: Serve applications on the same HTTP port (serve/operator, serve/console).
    operator_app: str | None = None
    operator_url: str | None = None
    console_app: str | None = None
    console_url: str | None = None
    simulator_pid: int | None = None
    simulator_log: str | None = None
    incident_log: str | None = None
    # The MQTT bridge `smoke up` started (mqtt.enabled), a detached `smoke bridge mqtt`.
    bridge_pid: int | None = None
    bridge_log: str | None = None
    bridge_health_url: str | None = None
    # Parts that could not be started, with the one-line reason shown to the user.
    unavailable: dict[str, str] = field(default_factory=dict)

    def ray_running(self) -> bool:
        """Our own head still has processes (or, for an external cluster, we cannot tell: assume so)."""
        if self.ray_session_id is None:
            return self.ray_address is not None
        return bool(session_pids(self.ray_session_id))

    def broker_running(self) -> bool:
        return self.broker_pid is not None and pid_alive(self.broker_pid)

    def simulator_running(self) -> bool:
        return self.simulator_pid is not None and bool(session_pids(self.simulator_pid))

    def bridge_running(self) -> bool:
        return self.bridge_pid is not None and bool(session_pids(self.bridge_pid))

    def anything_running(self) -> bool:
        return (self.ray_session_id is not None and self.ray_running()) or self.broker_running() \
            or self.simulator_running() or self.bridge_running()


def state_path(settings: Settings) -> Path:
    return Path(settings.ray.run_dir) / STATE_FILE


def load_state(settings: Settings) -> StackState | None:
    path = state_path(settings)
    try:
        data: dict[str, Any] = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as err:
        raise StateFileError(f"{path} is not a readable stack state ({err}); remove it if no stack runs") from None
    known = {k: v for k, v in data.items() if k in StackState.__dataclass_fields__}
    return StackState(**known)


def save_state(settings: Settings, state: StackState) -> Path:
    path = state_path(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(asdict(state), indent=2) + "\n")
    os.replace(tmp, path)
    return path


def remove_state(settings: Settings) -> None:
    state_path(settings).unlink(missing_ok=True)


class StateFileError(RuntimeError):
    """The state file exists but cannot be read."""


def attach_running_stack(settings: Settings) -> Settings:
    """Fill ``ray.address`` and ``kafka.bootstrap_servers`` from a running stack where they are not configured.

    Explicit settings (``SMOKE_RAY__ADDRESS``, ``KAFKA_BOOTSTRAP_SERVERS``, the YAML) and
    command-line flags always win; without a running stack the settings are returned unchanged.
    """
    try:
        state = load_state(settings)
    except StateFileError:
        return settings
    if state is None or not state.ray_running():
        return settings
    update: dict[str, Any] = {}
    if settings.ray.address is None and state.ray_address:
        update["ray"] = settings.ray.model_copy(update={"address": state.ray_address})
    if settings.kafka.bootstrap_servers is None and state.bootstrap_servers:
        update["kafka"] = settings.kafka.model_copy(update={"bootstrap_servers": state.bootstrap_servers})
    return settings.model_copy(update=update) if update else settings
