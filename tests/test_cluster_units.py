"""The pieces of ``smoke up/status/down`` on their own, with real processes, sockets and a real broker."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from kafka import KafkaProducer
from rich.console import Console

from cluster.health import check_alerts, check_broker, recent_alerts
from cluster.initial_model import GENERATED_CSV, KAGGLE_CSV, training_source
from cluster.local_ray import RayStartError, check_ports, ensure_auth_token, head_command, with_free_ports
from cluster.processes import port_in_use, session_pids, stop_session
from cluster.prometheus_config import local_config
from cluster.stack_state import StackState, attach_running_stack, load_state, save_state
from ingest.progress import Steps
from ingest.settings import RaySettings, load_settings


@pytest.fixture
def session():
    """A shell with two children in a new Unix session, like the processes `smoke up` starts."""
    process = subprocess.Popen(["sh", "-c", "sleep 60 & sleep 60 & wait"], start_new_session=True)
    deadline = time.monotonic() + 5
    while len(session_pids(process.pid)) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    yield process.pid
    stop_session(process.pid, grace_s=1)
    process.wait(5)


def test_session_pids_finds_the_whole_session_and_stop_session_ends_it(session: int):
    assert session in session_pids(session) and len(session_pids(session)) == 3
    assert stop_session(session, grace_s=2) == 3
    assert session_pids(session) == []


def test_stop_session_kills_what_ignores_sigterm():
    process = subprocess.Popen(["sh", "-c", "trap '' TERM; sleep 60 & wait"], start_new_session=True)
    time.sleep(0.3)
    started = time.monotonic()
    stop_session(process.pid, grace_s=0.5)
    assert session_pids(process.pid) == []
    assert time.monotonic() - started < 5
    process.wait(5)


def test_port_in_use():
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        assert port_in_use(port) == "127.0.0.1"
    assert port_in_use(port) is None


def test_check_ports_names_the_setting_and_catches_duplicates():
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        taken = listener.getsockname()[1]
        cfg = with_free_ports(RaySettings(port=taken, dashboard_port=taken + 1 if taken < 65535 else 1024))
        with pytest.raises(RayStartError, match=rf"port {taken} \(ray.port\) is already in use.*SMOKE_RAY__PORT"):
            check_ports(cfg, "127.0.0.1")
    with pytest.raises(RayStartError, match="both"):
        check_ports(RaySettings(port=7000, metrics_export_port=7000), "127.0.0.1")


def test_head_command_and_free_ports():
    cfg = with_free_ports(RaySettings(num_cpus=3))
    assert all(getattr(cfg, name) > 0 for name in ("client_server_port", "dashboard_agent_port",
                                                   "haproxy_metrics_port", "haproxy_stats_port"))
    command = head_command(cfg, Path("/tmp/x/ray"))
    joined = " ".join(command)
    assert "start --head" in joined and "--temp-dir /tmp/x/ray" in joined and "--num-cpus 3" in joined
    assert f"--metrics-export-port {cfg.metrics_export_port}" in joined
    assert f"--dashboard-agent-listen-port {cfg.dashboard_agent_port}" in joined
    assert "--dashboard-host 127.0.0.1" in joined


def test_a_missing_token_path_is_an_error(monkeypatch, tmp_path):
    monkeypatch.delenv("RAY_AUTH_TOKEN", raising=False)
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(tmp_path / "missing"))
    with pytest.raises(RayStartError, match="does not exist"):
        ensure_auth_token()
    token = tmp_path / "token"
    token.write_text("x" * 32)
    token.chmod(0o644)
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(token))
    assert ensure_auth_token() == str(token)
    assert token.stat().st_mode & 0o777 == 0o600


def test_state_round_trip_and_attach(tmp_path, session: int):
    settings = load_settings(environ={"SMOKE_RAY__RUN_DIR": str(tmp_path)})
    assert load_state(settings) is None
    state = StackState(ray_address="10.0.0.1:6379", ray_session_id=session, bootstrap_servers="127.0.0.1:9999")
    save_state(settings, state)
    assert load_state(settings) == state
    attached = attach_running_stack(settings)
    assert attached.ray.address == "10.0.0.1:6379" and attached.kafka.bootstrap_servers == "127.0.0.1:9999"
    # Explicit settings win over the running stack.
    explicit = load_settings(environ={"SMOKE_RAY__RUN_DIR": str(tmp_path), "SMOKE_RAY__ADDRESS": "h:1"})
    assert attach_running_stack(explicit).ray.address == "h:1"
    stop_session(session, grace_s=1)
    assert attach_running_stack(settings) == settings  # a stack that is gone is not attached


def test_local_prometheus_config_points_at_our_service_discovery_file(tmp_path):
    sd_file = tmp_path / "ray" / "prom_metrics_service_discovery.json"
    config = local_config(sd_file)
    assert config["scrape_configs"][0]["file_sd_configs"][0]["files"] == [str(sd_file)]
    assert all(Path(rule).is_absolute() and Path(rule).exists() for rule in config["rule_files"])


def test_training_source_prefers_the_kaggle_csv(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    settings = load_settings(environ={})
    assert training_source(settings)[0] == GENERATED_CSV
    KAGGLE_CSV.parent.mkdir(parents=True)
    KAGGLE_CSV.write_text("")
    assert training_source(settings) == (KAGGLE_CSV, "Kaggle dataset")


@pytest.mark.integration
def test_broker_and_alert_checks_against_a_real_broker(kafka_settings):
    bootstrap = kafka_settings.bootstrap_servers
    topics = [kafka_settings.topic, kafka_settings.alerts_topic, kafka_settings.dlq_topic]
    state = StackState(bootstrap_servers=bootstrap, topics=topics)
    assert check_broker(state).healthy is True
    assert check_broker(StackState(bootstrap_servers=bootstrap, topics=["missing-topic"])).healthy is False
    assert check_broker(StackState(bootstrap_servers="127.0.0.1:1", topics=topics)).healthy is False

    producer = KafkaProducer(bootstrap_servers=bootstrap)
    for sensor, kind, alert_state in (("s1", "fire", "raised"), ("s2", "fire", "raised"), ("s1", "fire", "cleared")):
        alert = {"sensor_id": sensor, "kind": kind, "severity": "critical", "state": alert_state}
        producer.send(kafka_settings.alerts_topic, key=sensor.encode(), value=json.dumps(alert).encode())
    producer.flush()
    producer.close()
    assert len(recent_alerts(bootstrap, kafka_settings.alerts_topic, 60)) == 3
    settings = load_settings(environ={}).model_copy(update={"kafka": kafka_settings})
    check = check_alerts(settings, state, 60)
    assert check.healthy is True and "fire/critical 2" in check.detail and "1 cleared" in check.detail


def test_steps_print_one_line_per_step_and_escape_details():
    console = Console(record=True, width=200, force_terminal=False)
    with Steps(console=console) as steps:
        with steps.step("first") as step:
            step.result = "fine [not markup]"
        with steps.step("second") as step:
            step.skip("not wanted")
        with pytest.raises(ValueError), steps.step("third"):
            raise ValueError("broken [/closing] tag")
    text = console.export_text()
    assert "✓ first: fine [not markup]" in text
    assert "– second: not wanted" in text
    assert "✗ third: broken [/closing] tag" in text
    assert [o.status for o in steps.outcomes] == ["done", "skipped", "failed"]


def test_status_and_down_without_a_stack(tmp_path):
    env = {"SMOKE_RAY__RUN_DIR": str(tmp_path), "PATH": "/usr/bin:/bin"}
    status = subprocess.run([sys.executable, "-m", "cluster.cli", "status"], env=env, capture_output=True,
                            text=True, timeout=60)
    assert status.returncode == 3 and "no stack is running" in status.stdout
    down = subprocess.run([sys.executable, "-m", "cluster.cli", "down"], env=env, capture_output=True, text=True,
                          timeout=60)
    assert down.returncode == 0 and "nothing to stop" in down.stdout


def test_node_session_stops_only_the_recorded_session(tmp_path):
    from cluster import node_session

    record = tmp_path / "ray-session.json"
    # Like `ray start`: the command returns while what it started keeps running in its session.
    assert node_session.start(["sh", "-c", "sleep 60 & exit 0"], record) == 0
    sid = json.loads(record.read_text())["session_id"]
    assert len(session_pids(sid)) == 1
    assert node_session.stop(record, grace_s=2) == 1
    assert session_pids(sid) == [] and not record.exists()
    assert node_session.stop(record) == 0  # nothing recorded: nothing stopped

    node_session.start(["sh", "-c", "sleep 60 & exit 0"], record)
    sid = json.loads(record.read_text())["session_id"]
    record.write_text(json.dumps({"session_id": sid, "boot_id": "an-earlier-boot"}))
    try:
        assert node_session.stop(record) == 0  # a record from another boot may name someone else's session
        assert len(session_pids(sid)) == 1
    finally:
        stop_session(sid, grace_s=1)


def test_a_missing_default_token_is_generated_owner_only(tmp_path):
    # In a process of its own with its own HOME: Ray's default token path is ~/.ray/auth_token.
    env = {"HOME": str(tmp_path), "PATH": "/usr/bin:/bin"}
    code = "from cluster.local_ray import ensure_auth_token; print(ensure_auth_token())"
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    token = tmp_path / ".ray" / "auth_token"
    assert result.stdout.strip() == str(token)
    assert len(token.read_text().strip()) >= 32 and token.stat().st_mode & 0o777 == 0o600
