"""The Ray head ``smoke up`` starts on this machine: ``ray start --head`` in its own session.

Why a subprocess and not ``ray.init()``: the head must outlive the command
that starts it, and ``ray start`` is what an operator would run by hand.

Facts this module codes around (measured on Ray 2.60, see docs/architecture.md):

- ``address="auto"`` reads ``/tmp/ray/ray_current_cluster`` whatever
  ``--temp-dir`` says, so the GCS address is read from *our* temp dir and
  passed explicitly to every client.
- Ray binds the GCS, raylet, metrics and client ports to the routable address
  even with ``--node-ip-address=127.0.0.1``; only the dashboard honours its
  host. Port checks therefore cover both 127.0.0.1 and the routable address.
- Token authentication: ``ray start`` turns it on only when a token already
  exists, so we make sure one exists (``ray get-auth-token --generate``),
  restrict its file to the owner, and start the head with
  ``RAY_AUTH_MODE=token``. Clients on this machine find the token at Ray's
  default path (``~/.ray/auth_token``) or through ``RAY_AUTH_TOKEN`` /
  ``RAY_AUTH_TOKEN_PATH``.
- Every process of the head (daemons, dashboard, workers, actors) inherits the
  Unix session of ``ray start``: that session id is how we stop exactly this
  head (:func:`cluster.processes.stop_session`), never ``ray stop``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from cluster.processes import port_in_use, session_pids, stop_session
from ingest.broker import free_port
from ingest.settings import RaySettings

# Longest temp dir that leaves room for Ray's "session_<date>_<pid>/sockets/plasma_store" under
# the 107-byte limit of a Unix socket path.
MAX_TEMP_DIR_CHARS = 48
DEFAULT_TOKEN_PATH = Path.home() / ".ray" / "auth_token"
# The ports of RaySettings that Ray binds on the head, by setting name.
FIXED_PORTS = ("port", "dashboard_port", "metrics_export_port", "client_server_port", "dashboard_agent_port",
               "haproxy_metrics_port", "haproxy_stats_port")


class RayStartError(RuntimeError):
    """The head could not be started; the message says why in one line."""


@dataclass(frozen=True)
class RayHead:
    address: str          # GCS host:port, what ray.init(address=...) and `ray start --address` take
    session_id: int       # Unix session of every process of this head
    temp_dir: Path
    node_ip: str
    dashboard_url: str
    metrics_url: str
    client_url: str

    @property
    def session_dir(self) -> Path:
        return (self.temp_dir / "session_latest").resolve()

    @property
    def service_discovery_file(self) -> Path:
        """Ray's Prometheus file-based service discovery list (all nodes' metrics endpoints)."""
        return self.temp_dir / "prom_metrics_service_discovery.json"


def ray_executable() -> str:
    beside = Path(sys.executable).with_name("ray")
    found = str(beside) if beside.exists() else shutil.which("ray")
    if not found:
        raise RayStartError("the `ray` command is not installed in this environment (pip install -e .)")
    return found


def token_source() -> str:
    """Where Ray's clients will read the auth token from, in Ray's own order of precedence."""
    if os.environ.get("RAY_AUTH_TOKEN"):
        return "RAY_AUTH_TOKEN"
    return os.environ.get("RAY_AUTH_TOKEN_PATH") or str(DEFAULT_TOKEN_PATH)


def ensure_auth_token() -> str:
    """Make sure a Ray auth token exists and only its owner can read it; returns where it is."""
    source = token_source()
    if source == "RAY_AUTH_TOKEN":
        return source
    path = Path(source)
    if not path.exists():
        if os.environ.get("RAY_AUTH_TOKEN_PATH"):
            raise RayStartError(f"RAY_AUTH_TOKEN_PATH names {path}, which does not exist")
        result = subprocess.run([ray_executable(), "get-auth-token", "--generate"], capture_output=True, text=True)
        if result.returncode != 0 or not path.exists():
            raise RayStartError(f"cannot create a Ray auth token: {_last_line(result.stderr)}")
    # Ray writes the token with the default umask (world-readable); anyone who reads it controls the cluster.
    if path.stat().st_uid == os.getuid():
        path.chmod(0o600)
    return str(path)


def check_ports(cfg: RaySettings, node_ip: str) -> None:
    """Fail with one line naming the setting if a port the head needs is taken."""
    seen: dict[int, str] = {}
    for name in FIXED_PORTS:
        port = getattr(cfg, name)
        if port in seen:
            raise RayStartError(f"ray.{name} and ray.{seen[port]} are both {port}; give each its own port")
        seen[port] = name
        hosts = {"dashboard_port": (cfg.dashboard_host,),
                 # HAProxy binds these on every interface.
                 "haproxy_metrics_port": ("0.0.0.0",), "haproxy_stats_port": ("0.0.0.0",)
                 }.get(name, ("127.0.0.1", node_ip))
        host = port_in_use(port, hosts)
        if host:
            raise RayStartError(f"port {port} (ray.{name}) is already in use on {host}: stop what listens there "
                                f"or set SMOKE_RAY__{name.upper()} to a free port")


def head_command(cfg: RaySettings, temp_dir: Path) -> list[str]:
    command = [
        ray_executable(), "start", "--head",
        "--temp-dir", str(temp_dir),
        "--port", str(cfg.port),
        "--include-dashboard", "true",
        "--dashboard-host", cfg.dashboard_host,
        "--dashboard-port", str(cfg.dashboard_port),
        "--dashboard-agent-listen-port", str(cfg.dashboard_agent_port),
        "--metrics-export-port", str(cfg.metrics_export_port),
        "--ray-client-server-port", str(cfg.client_server_port),
        "--disable-usage-stats",
    ]
    if cfg.num_cpus is not None:
        command += ["--num-cpus", str(cfg.num_cpus)]
    return command


def head_environment(cfg: RaySettings) -> dict[str, str]:
    """Variables the head's processes need: token auth on, and the ports of Serve's HAProxy ingress.

    HAProxy binds fixed ports (9101, 8404) on all interfaces by default, so a second Ray
    with Serve on the same host would fail to start its ingress: ours come from the settings.
    """
    return {"RAY_AUTH_MODE": "token",
            "RAY_SERVE_HAPROXY_METRICS_PORT": str(cfg.haproxy_metrics_port),
            "RAY_SERVE_HAPROXY_STATS_PORT": str(cfg.haproxy_stats_port)}


def with_free_ports(cfg: RaySettings) -> RaySettings:
    """The settings with every port left at 0 replaced by a port that is free now."""
    chosen = {name: free_port() for name in FIXED_PORTS if getattr(cfg, name) == 0}
    return cfg.model_copy(update=chosen) if chosen else cfg


def start_head(cfg: RaySettings, run_dir: Path, env: dict[str, str] | None = None) -> RayHead:
    """Start the head and return once its GCS answers; on failure nothing of it is left running."""
    import ray.util as ray_util

    cfg = with_free_ports(cfg)

    temp_dir = (run_dir / "ray").resolve()
    if len(str(temp_dir)) > MAX_TEMP_DIR_CHARS:
        raise RayStartError(f"the Ray temp dir {temp_dir} is longer than {MAX_TEMP_DIR_CHARS} characters, too long "
                            f"for Ray's Unix sockets: set ray.run_dir (SMOKE_RAY__RUN_DIR) to a shorter path")
    node_ip = ray_util.get_node_ip_address()
    check_ports(cfg, node_ip)
    token = ensure_auth_token()
    temp_dir.mkdir(parents=True, exist_ok=True)
    # A file left by an earlier head would give us its address before ours is written.
    (temp_dir / "ray_current_cluster").unlink(missing_ok=True)
    log_path = run_dir / "logs" / "ray-start.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    full_env = {**os.environ, **(env or {}), **head_environment(cfg)}
    # `ray job submit -- smoke train` runs its entrypoint through the head's PATH: put this
    # environment's interpreter (where the package is installed) first.
    full_env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), full_env.get("PATH", "")])
    if token != "RAY_AUTH_TOKEN":
        full_env.setdefault("RAY_AUTH_TOKEN_PATH", token)
    with open(log_path, "wb") as log:
        starter = subprocess.Popen(head_command(cfg, temp_dir), stdout=log, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, env=full_env, start_new_session=True)
    # start_new_session makes `ray start` a session leader: its pid is the session id of the whole head.
    session_id = starter.pid
    try:
        code = starter.wait(cfg.start_timeout_s)
    except subprocess.TimeoutExpired:
        stop_session(session_id)
        raise RayStartError(f"`ray start --head` did not finish within {cfg.start_timeout_s:.0f} s "
                            f"(see {log_path})") from None
    if code != 0:
        stop_session(session_id)
        raise RayStartError(f"`ray start --head` failed: {_last_error(log_path)} (see {log_path})")
    address_file = temp_dir / "ray_current_cluster"
    address = address_file.read_text().strip() if address_file.exists() else f"{node_ip}:{cfg.port}"
    head = RayHead(
        address=address, session_id=session_id, temp_dir=temp_dir, node_ip=node_ip,
        dashboard_url=f"http://{cfg.dashboard_host}:{cfg.dashboard_port}",
        metrics_url=f"http://{node_ip}:{cfg.metrics_export_port}/metrics",
        client_url=f"ray://{node_ip}:{cfg.client_server_port}",
    )
    if not session_pids(session_id):
        raise RayStartError(f"`ray start --head` exited but left no Ray process running (see {log_path})")
    return head


def wait_for_metrics(head: RayHead, timeout_s: float = 30.0) -> bool:
    """True once the head's metrics endpoint answers (it starts a few seconds after the GCS)."""
    import urllib.request

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(head.metrics_url, timeout=2) as response:
                if response.status == 200:
                    return True
        except OSError:
            pass
        time.sleep(0.5)
    return False


def _last_error(log_path: Path) -> str:
    lines = [line.strip() for line in log_path.read_text(errors="replace").splitlines() if line.strip()]
    for line in reversed(lines):
        if "Error" in line or "error" in line or "failed" in line:
            return _strip_ansi(line)[:300]
    return _strip_ansi(lines[-1])[:300] if lines else "no output"


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "no output"


def _strip_ansi(text: str) -> str:
    import re

    return re.sub(r"\x1b\[[0-9;]*m", "", text)
