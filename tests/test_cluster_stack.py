"""End to end: ``smoke up`` / ``status`` / ``down`` as subprocesses, with their own Ray, broker and ports.

The stack runs in a scratch working directory (its own registry, checkpoints
and lake) with a short run directory under /tmp (Ray's Unix socket paths must
stay short), on free ports, and must leave no process behind. The shared
pytest process never connects to this Ray.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from actors.supervisor import STREAM_NODE_ENV
from cluster.health import recent_alerts
from cluster.local_ray import start_head, with_free_ports
from cluster.processes import PROC, pid_alive, session_pids, stop_session
from cluster.stack_state import StackState
from ingest.broker import free_port, partition_count, port_open, stop_pid
from ingest.settings import REPO_ROOT, RaySettings
from ingest.simulator import read_incident_log

pytestmark = pytest.mark.integration

PORT_SETTINGS = ("RAY__PORT", "RAY__DASHBOARD_PORT", "RAY__METRICS_EXPORT_PORT", "RAY__CLIENT_SERVER_PORT",
                 "RAY__DASHBOARD_AGENT_PORT", "RAY__HAPROXY_METRICS_PORT", "RAY__HAPROXY_STATS_PORT", "SERVE__PORT")


class Stack:
    """Runs ``smoke`` commands in a scratch directory with an environment of free ports."""

    def __init__(self, workdir: Path, run_dir: Path) -> None:
        self.workdir, self.run_dir = workdir, run_dir
        # Without the node environment conftest sets for the test cluster: `smoke up` must set it itself.
        env = {k: v for k, v in os.environ.items()
               if not k.startswith("SMOKE_") and k not in ("KAFKA_BOOTSTRAP_SERVERS", "RAY_ADDRESS", *STREAM_NODE_ENV)}
        env.update({f"SMOKE_{name}": str(free_port()) for name in PORT_SETTINGS})
        env.update({
            "SMOKE_RAY__RUN_DIR": str(run_dir),
            # A small fleet with many incidents, so that alerts come within seconds.
            "SMOKE_SIMULATOR__SENSORS": "20",
            "SMOKE_SIMULATOR__RATE": "40",
            "SMOKE_SIMULATOR__INCIDENTS_PER_SENSOR_HOUR": "60",
            "COLUMNS": "200",
        })
        self.env = env

    def smoke(self, *argv: str, timeout: float = 240.0) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "cluster.cli", *argv], cwd=self.workdir, env=self.env,
                              capture_output=True, text=True, timeout=timeout)

    def state(self) -> StackState | None:
        path = self.run_dir / "stack.json"
        return StackState(**json.loads(path.read_text())) if path.exists() else None

    def processes_mentioning_run_dir(self) -> list[str]:
        found = []
        needle = str(self.run_dir).encode()
        for entry in PROC.iterdir():
            if entry.name.isdigit():
                try:
                    if needle in (entry / "cmdline").read_bytes():
                        found.append(entry.name)
                except OSError:
                    continue
        return found


def cleanup(stack: Stack) -> None:
    """Whatever the tests did, leave nothing running: stop what the state file names, by session and pid."""
    state = stack.state()
    if state is not None:
        for sid in (state.simulator_pid, state.ray_session_id):
            if sid is not None and session_pids(sid):
                stop_session(sid)
        if state.broker_pid is not None:
            stop_pid(state.broker_pid)
    # Ray's temp dir holds every log of the run (tens of MB); it lives outside pytest's tmp_path.
    shutil.rmtree(stack.run_dir, ignore_errors=True)


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    running = Stack(tmp_path, Path(tempfile.mkdtemp(prefix="smk", dir="/tmp")))
    try:
        yield running
    finally:
        cleanup(running)


@dataclass
class Running:
    stack: Stack
    up: subprocess.CompletedProcess
    state: StackState
    up_seconds: float


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    """One `smoke up` shared by the tests below, in file order; the last one runs `smoke down`."""
    stack = Stack(tmp_path_factory.mktemp("stack"), Path(tempfile.mkdtemp(prefix="smk", dir="/tmp")))
    started = time.monotonic()
    try:
        result = stack.smoke("up", "--simulate-seconds", "150", "--json")
        assert result.returncode == 0, result.stderr[-3000:]
        yield Running(stack, result, StackState(**json.loads(result.stdout)), time.monotonic() - started)
    finally:
        cleanup(stack)


def one_line_error(result: subprocess.CompletedProcess) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert "Traceback" not in result.stderr, result.stderr
    return lines[-1] if lines else ""


def test_up_starts_every_part_once(running: Running) -> None:
    state = running.state
    assert state.unavailable == {}, state.unavailable
    assert state.ray_session_id and session_pids(state.ray_session_id)
    assert state.broker_pid and state.simulator_pid and state.model_version == "v0001"
    # The progress display leaves one line per step.
    for step in ("Ray", "Kafka", "model", "stream", "serve", "simulator"):
        assert f"✓ {step}" in running.up.stderr
    assert "trained v0001 on generated data" in running.up.stderr
    print(f"smoke up took {running.up_seconds:.0f} s")

    again = running.stack.smoke("up")
    assert again.returncode == 1
    assert "already running" in one_line_error(again)


def test_alerts_predictions_metrics_status_and_jobs(running: Running) -> None:
    stack, state = running.stack, running.state
    # Alerts for the injected fires arrive on the alerts topic.
    fires: set[str] = set()
    alerted: set[str] = set()
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and not (fires & alerted):
        time.sleep(3)
        fires = {i.sensor_id for i in read_incident_log(state.incident_log) if i.is_fire}
        alerted = {a["sensor_id"] for a in recent_alerts(state.bootstrap_servers, "smoke_alerts", 600)
                   if a.get("state") == "raised"}
    assert fires & alerted, f"no alert for the fire sensors {sorted(fires)}; alerts for {sorted(alerted)}"

    # Serve predicts with the model `smoke up` trained.
    reading = {"Temperature": 26.2, "Humidity": 47.8, "TVOC": 1224.0, "eCO2": 400.0, "Raw H2": 12948.0,
               "Raw Ethanol": 19433.0, "Pressure": 938.82, "PM1.0": 1.9, "PM2.5": 1.98, "NC0.5": 13.1,
               "NC1.0": 2.04, "NC2.5": 0.046}
    answer = httpx.post(f"{state.serve_url}/predict", json=reading, timeout=30)
    assert answer.status_code == 200, answer.text
    assert answer.json()["model_version"] == state.model_version
    assert answer.json()["prediction"] in (0, 1)

    # Our metrics are exported at the head's metrics port (Ray reports them every few seconds).
    needed = ("ray_smoke_events_processed_total", "ray_smoke_alerts_total", "ray_smoke_consumer_lag")
    text = ""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not all(name in text for name in needed):
        time.sleep(2)
        text = httpx.get(state.metrics_url, timeout=10).text
    assert [name for name in needed if name not in text] == []

    status = stack.smoke("status", "--json", timeout=120)
    checks = {c["part"]: c for c in json.loads(status.stdout)}
    assert status.returncode == 0, checks
    for part in ("ray", "kafka", "stream", "serve", "model", "alerts", "metrics"):
        assert checks[part]["healthy"] is True, checks[part]

    # A training job through the job API of the head, with the token (docs/operations.md).
    job = submit_job(stack, state, "smoke train --quick --no-promote --source "
                                   f"{stack.workdir / 'data' / 'generated' / 'smoke_generated.csv'}")
    assert job["status"] == "SUCCEEDED", job["logs"][-2000:]
    assert "v0002" in [line.strip() for line in job["logs"].splitlines()], job["logs"][-2000:]

    # Every other command finds the stack without flags.
    listed = stack.smoke("alerts", "--minutes", "10", "--json", timeout=60)
    assert listed.returncode == 0, listed.stderr[-2000:]
    assert {json.loads(line)["sensor_id"] for line in listed.stdout.splitlines()} & fires
    stream = stack.smoke("stream", "status", "--json", timeout=120)
    assert stream.returncode == 0, stream.stderr[-2000:]
    workers = json.loads(stream.stdout)["workers"]
    assert len(workers) == 2
    # The detection workers run at nice 0, not Ray's default 15 (actors.supervisor.STREAM_NODE_ENV).
    assert [os.getpriority(os.PRIO_PROCESS, w["pid"]) for w in workers.values()] == [0, 0]


@pytest.mark.skipif(shutil.which("prometheus") is None,
                    reason="no `prometheus` binary (Debian: apt-get install prometheus; .ci/run installs it)")
def test_prometheus_scrapes_the_stack_and_evaluates_every_dashboard_query(running: Running, tmp_path: Path):
    state = running.state
    port = free_port()
    prometheus = subprocess.Popen(
        ["prometheus", f"--config.file={state.prometheus_config}", f"--web.listen-address=127.0.0.1:{port}",
         f"--storage.tsdb.path={tmp_path / 'tsdb'}"],
        stdout=subprocess.DEVNULL, stderr=(tmp_path / "prometheus.log").open("wb"), start_new_session=True)
    api = f"http://127.0.0.1:{port}/api/v1"
    try:
        series: list = []
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and not series:
            time.sleep(2)
            try:
                series = httpx.get(f"{api}/query", params={"query": "ray_smoke_events_processed_total"},
                                   timeout=5).json()["data"]["result"]
            except (httpx.HTTPError, KeyError, ValueError):
                continue
        assert series, (tmp_path / "prometheus.log").read_text()[-2000:]
        targets = httpx.get(f"{api}/targets", timeout=5).json()["data"]["activeTargets"]
        assert targets and all(t["labels"]["job"] == "ray" for t in targets)
        # Every query of the dashboard and every alert rule is valid PromQL for a real Prometheus.
        board = json.loads((REPO_ROOT / "configs" / "grafana" / "dashboards" / "smoke.json").read_text())
        for panel in board["panels"]:
            for target in panel.get("targets", []):
                answer = httpx.get(f"{api}/query", params={"query": target["expr"]}, timeout=10).json()
                assert answer["status"] == "success", (panel["title"], answer)
        rules = httpx.get(f"{api}/rules", timeout=5).json()["data"]["groups"]
        assert sum(len(g["rules"]) for g in rules) >= 8
        assert all(r["health"] != "err" for g in rules for r in g["rules"])
    finally:
        stop_session(prometheus.pid, grace_s=5)
        prometheus.wait(10)


def test_down_stops_everything_it_started(running: Running) -> None:
    stack, state = running.stack, running.state
    down = stack.smoke("down", timeout=180)
    assert down.returncode == 0, down.stderr[-3000:]
    assert not session_pids(state.ray_session_id)
    assert not session_pids(state.simulator_pid)
    assert not pid_alive(state.broker_pid)
    assert stack.processes_mentioning_run_dir() == []
    assert stack.state() is None
    assert stack.smoke("down").stdout.startswith("smoke down: nothing to stop")


JOB_CLIENT = """
import json, sys, time
from ray.job_submission import JobStatus, JobSubmissionClient
client = JobSubmissionClient(sys.argv[1])
job = client.submit_job(entrypoint=sys.argv[2], runtime_env={"env_vars": json.loads(sys.argv[3])})
deadline = time.monotonic() + 180
while client.get_job_status(job) not in {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED}:
    if time.monotonic() > deadline:
        client.stop_job(job)
        break
    time.sleep(1)
print(json.dumps({"status": str(client.get_job_status(job).value), "logs": client.get_job_logs(job)}))
"""


def submit_job(stack: Stack, state: StackState, entrypoint: str) -> dict:
    """Run ``entrypoint`` as a Ray job with JobSubmissionClient, in a process of its own (token mode on)."""
    env_vars = {"SMOKE_TRAIN__REGISTRY_DIR": str(stack.workdir / "data" / "registry")}
    result = subprocess.run([sys.executable, "-c", JOB_CLIENT, state.dashboard_url, entrypoint, json.dumps(env_vars)],
                            env={**stack.env, "RAY_AUTH_MODE": "token"}, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_port_taken_is_one_clear_line_and_starts_nothing(stack: Stack) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        stack.env["SMOKE_RAY__DASHBOARD_PORT"] = str(port)
        result = stack.smoke("up", timeout=120)
    assert result.returncode == 1
    line = one_line_error(result)
    assert f"port {port} (ray.dashboard_port) is already in use" in line
    assert "SMOKE_RAY__DASHBOARD_PORT" in line
    assert stack.state() is None
    assert stack.processes_mentioning_run_dir() == []



def test_up_and_down_on_an_existing_ray_and_kafka(stack: Stack, broker) -> None:
    """`smoke up` pointed at a cluster and a Kafka it did not start uses them, and `smoke down` leaves them running."""
    ports = {name: free_port() for name in ("port", "dashboard_port", "metrics_export_port")}
    head = start_head(with_free_ports(RaySettings(**ports, num_cpus=2)), stack.run_dir / "external")
    try:
        suffix = uuid.uuid4().hex[:8]
        stack.env.update({
            "SMOKE_RAY__ADDRESS": head.address, "KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap_servers,
            "SMOKE_KAFKA__TOPIC": f"readings_{suffix}", "SMOKE_KAFKA__ALERTS_TOPIC": f"alerts_{suffix}",
            "SMOKE_KAFKA__DLQ_TOPIC": f"readings_{suffix}.dlq", "SMOKE_KAFKA__PARTITIONS": "2",
            "SMOKE_STREAM__WORKERS": "1",
        })
        result = stack.smoke("up", "--skip", "model", "--skip", "serve", "--no-simulator", "--json")
        assert result.returncode == 0, result.stderr[-3000:]
        state = StackState(**json.loads(result.stdout))
        assert state.ray_address == head.address and state.ray_session_id is None
        assert state.bootstrap_servers == broker.bootstrap_servers and state.broker_pid is None
        assert partition_count(broker.bootstrap_servers, f"readings_{suffix}") == 2
        assert state.stream_name and state.unavailable == {}

        status = stack.smoke("status", "--json", timeout=120)
        checks = {c["part"]: c for c in json.loads(status.stdout)}
        assert checks["ray"]["healthy"] and checks["kafka"]["healthy"] and checks["stream"]["healthy"], checks
        assert checks["serve"]["healthy"] is None  # not started: reported, not counted as down

        down = stack.smoke("down", timeout=180)
        assert down.returncode == 0, down.stderr[-3000:]
        assert "stream" in down.stdout
        # The cluster and the broker are someone else's: still running, and our stream is gone from it.
        assert session_pids(head.session_id)
        assert port_open("127.0.0.1", int(broker.bootstrap_servers.rsplit(":", 1)[1]))
        after = stack.smoke("stream", "status", "--address", head.address, timeout=120)
        assert after.returncode == 3 and "not running" in after.stdout
    finally:
        stop_session(head.session_id)
    assert not session_pids(head.session_id)
    assert stack.processes_mentioning_run_dir() == []
