"""The replica-kill scenario of tests/test_serve_reliability.py: load, SIGKILL, wait for the replacement.

It runs in the test process on the session's ``ray_cluster``, or as a process of its own:

    python -m tests.serve_replica_kill --haproxy --out kill.json

HAProxy as Serve's ingress (what ``smoke up`` runs, ``serve.deployment.SERVE_ENV``) only takes
effect when the flags are in the environment of the Ray processes as they start, so that run
starts a Ray cluster of its own (``ray.cluster_utils.Cluster``), stops it at the end, and writes
every request's outcome and the kill times as JSON for the test to check.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx

from ingest.settings import ServeSettings
from serve.app import DEPLOYMENT_NAME
from tests.serve_support import Outcome, deploy, free_port, predict_load, start_serve, train_registry, wait_for

APP_NAME = "smoke-reliability"
REPLICAS = 2
REPLACE_BOUND_S = 60.0  # Serve's health check period (10 s) plus a replica start on a busy 2-core machine
TIMEOUT_S = 30.0  # per request; a request that hangs past it counts as failed


@dataclass(frozen=True)
class KillScenario:
    clients: int  # concurrent HTTP clients, each posting back to back
    warmup_s: float  # load before the first kill
    settle_s: float  # load after the replica count is back, before the next kill or the end
    kills: int  # replicas killed one after the other (each after the previous was replaced)


SHORT = KillScenario(clients=8, warmup_s=2.0, settle_s=3.0, kills=1)
FULL = KillScenario(clients=32, warmup_s=15.0, settle_s=15.0, kills=3)


def replica_names() -> list[str]:
    """Names of this application's live replica actors (``SERVE_REPLICA::app#deployment#id``)."""
    import ray

    prefix = f"SERVE_REPLICA::{APP_NAME}#{DEPLOYMENT_NAME}#"
    return sorted(a["name"] for a in ray.util.list_named_actors(all_namespaces=True)
                  if a["namespace"] == "serve" and a["name"].startswith(prefix))


def replica_pid(name: str) -> int:
    import ray

    replica = ray.get_actor(name, namespace="serve")
    return ray.get(replica.__ray_call__.remote(lambda _replica: os.getpid()), timeout=30)


def running_replicas() -> int:
    from ray import serve

    app = serve.status().applications.get(APP_NAME)
    if app is None or DEPLOYMENT_NAME not in app.deployments:
        return 0
    states = app.deployments[DEPLOYMENT_NAME].replica_states
    return sum(n for state, n in states.items() if str(getattr(state, "value", state)) == "RUNNING")


def replaced(victim: str) -> bool:
    """The killed replica is gone and the deployment has its full count of RUNNING replicas again."""
    names = replica_names()
    return victim not in names and len(names) == REPLICAS and running_replicas() == REPLICAS


def deploy_replicas(root: Path) -> str:
    """Train a model under ``root``, deploy REPLICAS replicas of the app, wait until all run; returns the URL."""
    registry_dir = train_registry(root)
    port = free_port()
    start_serve(port)
    deploy(registry_dir, ServeSettings(port=port), name=APP_NAME, num_replicas=REPLICAS)
    url = f"http://127.0.0.1:{port}"
    wait_for(url + "/health", lambda r: r.status_code == 200 and r.json()["model_loaded"])
    deadline = time.monotonic() + 60
    while len(replica_names()) < REPLICAS or running_replicas() < REPLICAS:
        if time.monotonic() > deadline:
            raise AssertionError(f"replicas never all RUNNING: {replica_names()}")
        time.sleep(0.5)
    return url


def new_replica_answers(url: str, killed_at: float, attempts: int = 50) -> bool:
    """Whether some /health answer comes from a replica started after ``killed_at``.

    ``uptime_seconds`` is per replica: one younger than the time since the kill is the replacement,
    so the proxy really routes to it (a replica RUNNING in ``serve.status`` could still be unreachable).
    """
    for _ in range(attempts):
        since_kill = time.monotonic() - killed_at
        if httpx.get(url + "/health", timeout=10).json()["uptime_seconds"] < since_kill:
            return True
    return False


def run_kills(url: str, scenario: KillScenario) -> tuple[list[Outcome], list[tuple[float, float, str]]]:
    """Load ``url`` and kill replicas per ``scenario``; returns every outcome and (killed_at, replaced_at, victim)."""
    outcomes: list[Outcome] = []
    kills: list[tuple[float, float, str]] = []

    async def scenario_run() -> None:
        stop = asyncio.Event()
        load = asyncio.create_task(predict_load(url, scenario.clients, stop, outcomes, timeout_s=TIMEOUT_S,
                                                retry_once=True))
        try:
            await asyncio.sleep(scenario.warmup_s)
            for k in range(scenario.kills):
                victim = (await asyncio.to_thread(replica_names))[0]
                pid = await asyncio.to_thread(replica_pid, victim)
                before = len(outcomes)
                killed_at = time.monotonic()
                os.kill(pid, signal.SIGKILL)
                print(f"kill {k + 1}/{scenario.kills}: SIGKILL {victim} (pid {pid}) after {before} requests",
                      flush=True)
                deadline = killed_at + REPLACE_BOUND_S
                while not await asyncio.to_thread(replaced, victim):
                    if time.monotonic() > deadline:
                        raise AssertionError(f"{victim} not replaced within {REPLACE_BOUND_S:.0f} s: "
                                             f"replicas {replica_names()}, {running_replicas()} RUNNING")
                    await asyncio.sleep(0.2)
                replaced_at = time.monotonic()
                kills.append((killed_at, replaced_at, victim))
                assert await asyncio.to_thread(new_replica_answers, url, killed_at), \
                    f"no answer from the replica that replaced {victim}"
                print(f"  replaced after {replaced_at - killed_at:.1f} s; "
                      f"{sum(not o.ok for o in outcomes[before:] if o.attempt == 1)} requests failed so far",
                      flush=True)
                await asyncio.sleep(scenario.settle_s)
        finally:
            stop.set()
            await load

    asyncio.run(scenario_run())
    return outcomes, kills


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.serve_replica_kill", description=__doc__.splitlines()[0])
    parser.add_argument("--haproxy", action="store_true", help="HAProxy as Serve's ingress (SERVE_ENV)")
    parser.add_argument("--clients", type=int, default=SHORT.clients)
    parser.add_argument("--warmup", type=float, default=SHORT.warmup_s)
    parser.add_argument("--settle", type=float, default=SHORT.settle_s)
    parser.add_argument("--kills", type=int, default=SHORT.kills)
    parser.add_argument("--out", required=True, help="JSON file for the outcomes and the kills")
    args = parser.parse_args(argv)
    if args.haproxy:
        from serve.deployment import SERVE_ENV

        # Read by the Serve controller and proxy when Ray starts them; HAProxy's stats and metrics
        # ports default to 8404 and 9101, which another Serve with HAProxy on this host may hold.
        os.environ.update(SERVE_ENV)
        for name in ("RAY_SERVE_HAPROXY_STATS_PORT", "RAY_SERVE_HAPROXY_METRICS_PORT"):
            os.environ.setdefault(name, str(free_port()))
    import ray
    from ray import serve
    from ray.cluster_utils import Cluster

    scenario = KillScenario(args.clients, args.warmup, args.settle, args.kills)
    root = Path(tempfile.mkdtemp(prefix="serve-kill-"))
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 4, "include_dashboard": False})
    try:
        ray.init(address=cluster.address, namespace="serve-kill", log_to_driver=False)
        url = deploy_replicas(root)
        print(f"serve-kill: {REPLICAS} replicas at {url} (ingress: {'HAProxy' if args.haproxy else 'proxy'})",
              flush=True)
        outcomes, kills = run_kills(url, scenario)
        Path(args.out).write_text(json.dumps({"outcomes": [asdict(o) for o in outcomes], "kills": kills}))
    except Exception as err:
        print(f"serve-kill: failed: {type(err).__name__}: {err}", file=sys.stderr, flush=True)
        return 1
    finally:
        try:
            serve.shutdown()
        finally:
            ray.shutdown()
            cluster.shutdown()
            shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
