"""The local stack: start it (``smoke up``) and stop everything it started (``smoke down``).

``up`` brings the parts up in dependency order, recording each in the state
file (:mod:`cluster.stack_state`) as soon as it runs:

1. Ray: the head of :mod:`cluster.local_ray`, or the cluster at ``ray.address``;
2. Kafka: the embedded broker (detached), unless ``kafka.bootstrap_servers`` /
   ``KAFKA_BOOTSTRAP_SERVERS`` names one; then the topics;
3. the model: a first one is trained when the registry has no production version;
4. the stream supervisor and its workers (detached actors);
5. the Serve application;
6. the alert router (detached actor): alert events into the store, escalation, delivery;
   then the operator API and console (Serve applications);
7. the MQTT bridge, a detached ``smoke bridge mqtt`` process, when ``mqtt.enabled``;
8. the simulator, a detached ``smoke simulate`` process.

Ray and Kafka are required: if either fails, what this run started is stopped
again and the error is raised. The later parts are not: a part whose code is
missing or that fails is recorded as unavailable with its reason, the rest
keeps running, and the command says so.

``down`` stops in reverse order: the simulator and the MQTT bridge; the stream (its workers
checkpoint first), the alert router and Serve, through Ray; then the Ray head by its Unix
session; then the broker. Only recorded processes are touched.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from alerting.database import absolute_dsn
from alerting.sensors import sensors_path
from cluster.embedded_broker import forget_broker, running_broker, start_detached_broker
from cluster.initial_model import production_version, train_initial_model
from cluster.local_ray import RayStartError, ensure_auth_token, start_head, token_source
from cluster.processes import port_in_use, session_pids, stop_session
from cluster.prometheus_config import write_local_config
from cluster.ray_driver import connect_driver, disconnect_driver
from cluster.stack_state import StackState, load_state, remove_state, save_state
from ingest.broker import BrokerError, ensure_topics, stop_pid
from ingest.progress import StepHandle, Steps
from ingest.settings import Settings

log = logging.getLogger(__name__)

STREAM_READY_TIMEOUT_S = 300.0


class StackError(RuntimeError):
    """``smoke up`` or ``smoke down`` cannot go on; the message says why in one line."""


@dataclass
class UpOptions:
    config_path: str | None = None      # passed on to the simulator process
    simulate: bool = True
    simulate_seconds: float | None = None  # None: settings.simulator.duration_s (empty: until `smoke down`)
    skip: tuple[str, ...] = ()           # optional parts not to start


def up(settings: Settings, options: UpOptions, steps: Steps) -> StackState:
    """Start the stack; returns the recorded state (``unavailable`` lists the parts that are not running)."""
    run_dir = Path(settings.ray.run_dir)
    previous = load_state(settings)
    if previous is not None and previous.anything_running():
        since = time.strftime("%H:%M:%S", time.localtime(previous.started_at))
        raise StackError(f"the stack is already running (started {since}, Ray at {previous.ray_address}): "
                         f"see `smoke status`, or stop it with `smoke down`")
    run_dir.mkdir(parents=True, exist_ok=True)
    _check_free_ports(settings)
    state = StackState(namespace=settings.ray.namespace)
    save_state(settings, state)
    try:
        with steps.step("Ray") as step:
            _start_ray(settings, state, run_dir, step)
            save_state(settings, state)
        with steps.step("Kafka") as step:
            _start_kafka(settings, state, step)
            save_state(settings, state)
    except BaseException:
        # Nothing optional runs yet: undo what this run started so a retry starts clean.
        _stop_processes(state)
        remove_state(settings)
        raise
    settings = with_stack(settings, state)
    for part, starter in (("model", _start_model), ("stream", _start_stream), ("serve", _start_serve),
                          ("router", _start_router), ("operator", _start_operator),
                          ("mqtt_bridge", start_mqtt_bridge), ("simulator", _start_simulator)):
        if part in options.skip or (part == "simulator" and not options.simulate) or (
                part == "mqtt_bridge" and not settings.mqtt.enabled):
            with steps.step(part) as step:
                step.skip("skipped (--skip)" if part in options.skip else "skipped (--no-simulator)"
                          if part == "simulator" else "not configured (mqtt.enabled is false)")
            continue
        try:
            with steps.step(part) as step:
                starter(settings, state, options, step)
        except ModuleNotFoundError as err:
            state.unavailable[part] = f"not available: module {err.name} is not installed in this checkout"
        except Exception as err:  # one part failing must not take down the parts already running
            log.debug("%s failed", part, exc_info=True)
            state.unavailable[part] = f"failed: {_one_line(err)}"
        save_state(settings, state)
    disconnect_driver()
    return state


def with_stack(settings: Settings, state: StackState) -> Settings:
    """Settings that point at the running stack's Ray and Kafka, with absolute data paths.

    Ray runs actors and Serve replicas in other working directories: a relative
    registry or checkpoint path would name a different directory in each of them.
    """
    def absolute(value: str) -> str:
        return value if "://" in value else str(Path(value).resolve())

    return settings.model_copy(update={
        "ray": settings.ray.model_copy(update={"address": state.ray_address}),
        "kafka": settings.kafka.model_copy(update={"bootstrap_servers": state.bootstrap_servers}),
        "stream": settings.stream.model_copy(update={
            "checkpoint_dir": absolute(settings.stream.checkpoint_dir),
            "lake_dir": absolute(settings.stream.lake_dir)}),
        "train": settings.train.model_copy(update={"registry_dir": absolute(settings.train.registry_dir)}),
        "simulator": settings.simulator.model_copy(update={"out_dir": Path(settings.simulator.out_dir).resolve()}),
        "alerting": settings.alerting.model_copy(update={
            "store_dsn": absolute_dsn(settings.alerting.store_dsn),
            "sensors_file": sensors_path(settings.alerting.sensors_file)}),
    })


def _check_free_ports(settings: Settings) -> None:
    """The ports of the non-Ray parts we start (Ray's own are checked by :func:`cluster.local_ray.check_ports`)."""
    if not settings.kafka.bootstrap_servers and settings.kafka.embedded_port:
        host = port_in_use(settings.kafka.embedded_port)
        if host:
            raise StackError(f"port {settings.kafka.embedded_port} (kafka.embedded_port) is already in use on {host}:"
                             f" set SMOKE_KAFKA__EMBEDDED_PORT to a free port, or 0 to pick one")
    if settings.ray.address:
        return  # Serve's proxy will run on that cluster's nodes, not here
    host = port_in_use(settings.serve.port, (settings.serve.host,))
    if host:
        raise StackError(f"port {settings.serve.port} (serve.port) is already in use on {host}: "
                         f"set SMOKE_SERVE__PORT to a free port")


def _start_ray(settings: Settings, state: StackState, run_dir: Path, step: StepHandle) -> None:
    from actors.supervisor import STREAM_NODE_ENV
    from serve.deployment import SERVE_ENV

    if settings.ray.address:
        step.note("connecting")
        state.ray_address = settings.ray.address
        state.token_source = token_source()
        connect_driver(state.ray_address, settings.ray.namespace)
        step.result = f"existing cluster at {state.ray_address}"
        return
    step.note("ray start --head (about 10 s)")
    try:
        # The Serve controller reads its ingress flags, and the raylet the workers' niceness,
        # from the environment of the Ray processes.
        head = start_head(settings.ray, run_dir, env={**SERVE_ENV, **STREAM_NODE_ENV})
    except RayStartError as err:
        raise StackError(str(err)) from None
    state.ray_address, state.ray_session_id = head.address, head.session_id
    state.ray_temp_dir = str(head.temp_dir)
    state.dashboard_url, state.metrics_url = head.dashboard_url, head.metrics_url
    state.token_source = ensure_auth_token()
    state.prometheus_config = str(write_local_config(run_dir, head.service_discovery_file))
    step.result = f"head at {head.address}, dashboard {head.dashboard_url}, token auth on"


def _start_kafka(settings: Settings, state: StackState, step: StepHandle) -> None:
    if settings.kafka.bootstrap_servers:
        state.bootstrap_servers = settings.kafka.bootstrap_servers
        step.note("creating topics")
        ensure_topics(state.bootstrap_servers, settings.kafka)
        step.result = f"existing Kafka at {state.bootstrap_servers}"
    elif (broker := running_broker(settings)) is not None:
        # Started earlier by `smoke broker start`: use it, and leave stopping it to `smoke broker stop`.
        state.bootstrap_servers = broker["bootstrap_servers"]
        ensure_topics(state.bootstrap_servers, settings.kafka)
        step.result = f"embedded broker already running at {state.bootstrap_servers} (pid {broker['pid']})"
    else:
        step.note("starting the embedded broker")
        try:
            broker = start_detached_broker(settings)
        except BrokerError as err:
            raise StackError(str(err)) from None
        state.bootstrap_servers, state.broker_pid = broker["bootstrap_servers"], broker["pid"]
        step.result = f"embedded broker at {state.bootstrap_servers} (memory only)"
    state.topics = [settings.kafka.topic, settings.kafka.alerts_topic, settings.kafka.dlq_topic]
    step.result += f"; topics {', '.join(state.topics)}"


def _start_model(settings: Settings, state: StackState, options: UpOptions, step: StepHandle) -> None:
    version = production_version(settings)
    if version is not None:
        state.model_version = version
        step.result = f"production is {version}"
        return
    step.progress.update(step.task, total=4)
    version, source = train_initial_model(settings, lambda note: step.advance(1, note))
    state.model_version = version
    step.result = f"trained {version} on {source} (quick run)"


def _start_stream(settings: Settings, state: StackState, options: UpOptions, step: StepHandle) -> None:
    from actors.supervisor import start_stream

    connect_driver(state.ray_address, settings.ray.namespace)
    step.note(f"{settings.stream.workers} workers on {settings.kafka.partitions} partitions")
    # Each worker imports pandas, LightGBM and Ray Data on start: on a busy 2-core host that alone
    # has taken over a minute, so allow more than start_stream's default.
    start_stream(settings, state.bootstrap_servers, timeout_s=STREAM_READY_TIMEOUT_S)
    state.stream_name = settings.stream.supervisor_name
    step.result = f"supervisor {state.stream_name!r} with {settings.stream.workers} workers"


def _start_serve(settings: Settings, state: StackState, options: UpOptions, step: StepHandle) -> None:
    from serve.deployment import deploy_app

    connect_driver(state.ray_address, settings.ray.namespace)
    step.note("deploying (about 20 s)")
    serve_log = logging.getLogger("ray.serve")
    # Serve logs its progress at INFO to this driver, through the live display; our step line says the same.
    serve_log.disabled = True
    try:
        state.serve_url = deploy_app(settings)
    finally:
        serve_log.disabled = False
    state.serve_app = settings.serve.app_name
    step.result = f"{state.serve_app} at {state.serve_url}"


def _start_router(settings: Settings, state: StackState, options: UpOptions, step: StepHandle) -> None:
    from alerting.router import start_router

    connect_driver(state.ray_address, settings.ray.namespace)
    step.note("opening the alert store")
    start_router(settings, state.bootstrap_servers)
    state.router_name = settings.alerting.router_name
    step.result = f"router {state.router_name!r} into {_safe_dsn(settings.alerting.store_dsn)}"


def _safe_dsn(dsn: str) -> str:
    from sqlalchemy import make_url

    return make_url(dsn).render_as_string(hide_password=True)


def _start_operator(settings: Settings, state: StackState, options: UpOptions, step: StepHandle) -> None:
    from serve.console.deployment import deploy_console
    from serve.operator.deployment import deploy_operator

    connect_driver(state.ray_address, settings.ray.namespace)
    step.note("deploying the operator API and console")
    serve_log = logging.getLogger("ray.serve")
    serve_log.disabled = True
    try:
        state.operator_url = deploy_operator(settings)
        state.operator_app = settings.alerting.operator_app_name
        state.console_url = deploy_console(settings)
        state.console_app = settings.alerting.console_app_name
    finally:
        serve_log.disabled = False
    step.result = f"API at {state.operator_url}, console at {state.console_url}/"


def _start_simulator(settings: Settings, state: StackState, options: UpOptions, step: StepHandle) -> None:
    import ingest.simulator  # noqa: F401 - fail here, not in the detached process, if it is missing

    run_dir = Path(settings.ray.run_dir)
    logs = run_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    incident_log = (run_dir / f"incidents-{time.strftime('%Y%m%dT%H%M%S')}.jsonl").resolve()
    command = [sys.executable, "-m", "cluster.cli"]
    if options.config_path:
        command += ["--config", options.config_path]
    command += ["simulate", "--bootstrap-servers", state.bootstrap_servers, "--incident-log", str(incident_log)]
    seconds = options.simulate_seconds or settings.simulator.duration_s
    if seconds:
        command += ["--duration", str(seconds)]
    log_path = logs / "simulator.log"
    with open(log_path, "ab") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   start_new_session=True, env={**os.environ, "TERM": "dumb"})
    state.simulator_pid, state.simulator_log, state.incident_log = process.pid, str(log_path), str(incident_log)
    # A simulator that cannot start (bad settings, Kafka unreachable) exits within a second: say so here.
    time.sleep(1.0)
    if process.poll() is not None and process.returncode != 0:
        raise StackError(f"the simulator exited with code {process.returncode} (see {log_path})")
    cfg = settings.simulator
    step.result = (f"{cfg.sensors} sensors at {cfg.rate:g} readings/s "
                   + (f"for {seconds:g} s" if seconds else "until `smoke down`") + f", pid {process.pid}")


BRIDGE_START_TIMEOUT_S = 60.0


def start_mqtt_bridge(settings: Settings, state: StackState, options: UpOptions, step: StepHandle) -> None:
    """``smoke bridge mqtt`` detached, recorded in ``state``; raises if it exits before it bridges."""
    import ingest.mqtt_bridge  # noqa: F401 - fail here, not in the detached process, if paho-mqtt is missing

    logs = Path(settings.ray.run_dir) / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "cluster.cli"]
    if options.config_path:
        command += ["--config", options.config_path]
    command += ["bridge", "mqtt", "--bootstrap-servers", state.bootstrap_servers]
    log_path = logs / "mqtt-bridge.log"
    start = log_path.stat().st_size if log_path.exists() else 0
    with open(log_path, "ab") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   start_new_session=True, env={**os.environ, "TERM": "dumb"})
    state.bridge_pid, state.bridge_log = process.pid, str(log_path)
    # It connects to the MQTT broker and Kafka before it says "bridging": an unreachable broker or a
    # refused login is an exit with the cause in the log, reported here.
    deadline = time.monotonic() + BRIDGE_START_TIMEOUT_S
    while True:
        text = log_path.read_bytes()[start:].decode("utf-8", "replace")
        found = re.search(r"metrics and health on (http://\S+?:\d+)\n", text)  # a whole line only
        if found:
            break
        if process.poll() is not None or time.monotonic() > deadline:
            last = text.strip().splitlines()[-1:] or ["no output"]
            raise StackError(f"the MQTT bridge did not start: {last[0]} (see {log_path})")
        time.sleep(0.2)
    state.bridge_health_url = found.group(1) + "/health"
    cfg = settings.mqtt
    step.result = f"mqtt://{cfg.host}:{cfg.port} {', '.join(cfg.topics)}, pid {process.pid}"


# --- down -----------------------------------------------------------------------------------------


@dataclass
class DownReport:
    stopped: list[str] = field(default_factory=list)
    left_running: list[str] = field(default_factory=list)


def down(settings: Settings, steps: Steps, graceful: bool = True) -> DownReport | None:
    """Stop everything the recorded stack started; None if there is no record."""
    state = load_state(settings)
    if state is None:
        return None
    report = DownReport()
    if state.simulator_pid is not None:
        with steps.step("simulator") as step:
            count = stop_session(state.simulator_pid, grace_s=5.0)
            step.result = "stopped" if count else "was not running"
            report.stopped.append("simulator")
    if state.bridge_pid is not None:
        with steps.step("mqtt bridge") as step:
            # SIGTERM: it forwards what it received; the rest stays unacknowledged with the MQTT broker.
            count = stop_session(state.bridge_pid, grace_s=10.0)
            step.result = "stopped" if count else "was not running"
            report.stopped.append("mqtt_bridge")
    if graceful and state.ray_running() and (state.stream_name or state.serve_app or state.router_name):
        _stop_through_ray(settings, state, steps, report)
    if state.ray_session_id is not None:
        with steps.step("Ray head") as step:
            step.note("stopping the head's processes (by session, never `ray stop`)")
            count = stop_session(state.ray_session_id)
            step.result = f"stopped {count} processes" if count else "was not running"
            report.stopped.append("ray")
    if state.broker_pid is not None:
        with steps.step("embedded broker") as step:
            step.result = "stopped" if stop_pid(state.broker_pid) else "was not running"
            forget_broker(settings, state.broker_pid)
            report.stopped.append("broker")
    report.left_running = leftover_processes(state)
    if not report.left_running:
        remove_state(settings)
    return report


def _stop_through_ray(settings: Settings, state: StackState, steps: Steps, report: DownReport) -> None:
    """Checkpoint and stop the stream, and shut Serve down, before the head goes (best effort)."""
    settings = with_stack(settings, state)
    try:
        connect_driver(state.ray_address, settings.ray.namespace)
    except Exception as err:
        steps.console.print(f"[yellow]cannot reach Ray at {state.ray_address} ({_one_line(err)}): "
                            f"stopping its processes without a final checkpoint[/]")
        return
    if state.stream_name:
        with steps.step("stream") as step, contextlib.suppress(ModuleNotFoundError):
            from actors.supervisor import stop_stream

            step.note("checkpointing")
            final = stop_stream(settings, timeout_s=60.0)
            step.result = "checkpointed and stopped" if final is not None else "was not running"
            report.stopped.append("stream")
    if state.router_name:
        with steps.step("alert router") as step, contextlib.suppress(ModuleNotFoundError):
            from alerting.router import stop_router

            final = stop_router(settings)
            step.result = (f"stopped after {final['totals']['recorded']} events" if final is not None
                           else "was not running")
            report.stopped.append("router")
    if state.serve_app and state.ray_session_id is None:
        # Someone else's cluster: remove our application and leave their Serve alone. On our own
        # head Serve goes with the head's processes (serve.shutdown() there can wait 30 s for nothing).
        with steps.step("serve") as step:
            from ray import serve

            for app in (state.serve_app, state.operator_app, state.console_app):
                if app:
                    serve.delete(app)
            step.result = f"application {state.serve_app} deleted"
            report.stopped.append("serve")
    disconnect_driver()


def leftover_processes(state: StackState) -> list[str]:
    """Processes of the stack that still run, as ``"what pid"`` strings (empty when all are gone)."""
    left = []
    if state.simulator_pid is not None:
        left += [f"simulator {pid}" for pid in session_pids(state.simulator_pid)]
    if state.bridge_pid is not None:
        left += [f"mqtt bridge {pid}" for pid in session_pids(state.bridge_pid)]
    if state.ray_session_id is not None:
        left += [f"ray {pid}" for pid in session_pids(state.ray_session_id)]
    if state.broker_running():
        left.append(f"broker {state.broker_pid}")
    return left


def _stop_processes(state: StackState) -> None:
    if state.simulator_pid is not None:
        stop_session(state.simulator_pid, grace_s=5.0)
    if state.bridge_pid is not None:
        stop_session(state.bridge_pid, grace_s=10.0)
    if state.ray_session_id is not None:
        stop_session(state.ray_session_id)
    if state.broker_pid is not None:
        stop_pid(state.broker_pid)


def _one_line(err: BaseException) -> str:
    """The error's type and first line; for an error raised inside a Ray actor, the actor's own error."""
    cause = getattr(err, "cause", None)  # RayTaskError wraps the remote exception
    if isinstance(cause, BaseException):
        err = cause
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(err)).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else ''}".rstrip(": ")
