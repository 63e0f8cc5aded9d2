"""Shared fixtures: a real embedded broker and a real Ray cluster, each started once per session.

Both listen on free ports and are passed to code by address (never ``address="auto"``);
teardown stops only what this session started (never ``ray stop``).
"""

from __future__ import annotations

import json
import os
import secrets
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

# Token authentication stays on in tests, as in production (Ray 2.60's default). Ray reads the
# mode once per process, and processes it spawns read it from the environment, so it is fixed
# here, before anything starts Ray: otherwise a test that sets it later (the smoke CLI does)
# leaves a GCS in token mode and a driver that does not send one. A session token in the
# environment serves every Ray this session starts, in-process or in subprocesses, without
# touching the user's ~/.ray/auth_token.
os.environ["RAY_AUTH_MODE"] = "token"
if not os.environ.get("RAY_AUTH_TOKEN") and not os.environ.get("RAY_AUTH_TOKEN_PATH"):
    os.environ["RAY_AUTH_TOKEN"] = secrets.token_hex(32)

from actors.supervisor import STREAM_NODE_ENV
from bench.machine import load_average, machine_description
from ingest.broker import EmbeddedBroker, ensure_topics
from ingest.settings import KafkaSettings, Settings, load_settings

# The Ray node environment `smoke up` gives its head (workers at nice 0, not Ray's 15), so that
# the latencies the tests measure are the ones the stack gives.
for _name, _value in STREAM_NODE_ENV.items():
    os.environ.setdefault(_name, _value)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--full", action="store_true", help="run the long reliability scenarios")
    parser.addoption("--reliability-out", metavar="PATH", default=None,
                     help="write the figures the reliability scenarios measured to this JSON file "
                          "(RELIABILITY.md is rendered from it by `python -m bench.reliability_report`)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--full"):
        return
    skip = pytest.mark.skip(reason="long scenario: run with --full")
    for item in items:
        # The marker, not item.keywords: keywords hold directory names too, so a checkout in a
        # directory called "full" would skip every test.
        if item.get_closest_marker("full") is not None:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def reliability_record(request: pytest.FixtureRequest) -> Iterator[Callable[..., None]]:
    """``record(scenario, **figures)``: keep what a reliability scenario measured.

    Figures are JSON values (counts, seconds, bytes). With ``--reliability-out PATH`` they are
    written at the end of the session, with the command line and the mode (short or full), so
    that RELIABILITY.md quotes a run rather than typed numbers.
    """
    recorded: dict[str, dict] = {}

    def record(scenario: str, **figures: object) -> None:
        recorded.setdefault(scenario, {}).update(figures)

    yield record
    out = request.config.getoption("--reliability-out")
    if out and recorded:
        Path(out).write_text(json.dumps({
            "command": "python -m pytest " + " ".join(request.config.invocation_params.args),
            "mode": "full" if request.config.getoption("--full") else "short",
            "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "cpus": os.cpu_count(),
            "machine": machine_description(),
            "load_average_at_end": load_average(),
            "scenarios": recorded,
        }, indent=2, sort_keys=True) + "\n")


@pytest.fixture(scope="session")
def broker() -> Iterator[EmbeddedBroker]:
    """The embedded Tansu broker on a free port, for the whole session."""
    with EmbeddedBroker() as running:
        yield running


@pytest.fixture
def kafka_settings(broker: EmbeddedBroker) -> KafkaSettings:
    """Kafka settings with topic names unique to one test, and the topics created.

    The broker is shared by the session; unique topics keep tests independent.
    """
    suffix = uuid.uuid4().hex[:8]
    settings = KafkaSettings(
        bootstrap_servers=broker.bootstrap_servers,
        topic=f"readings_{suffix}",
        alerts_topic=f"alerts_{suffix}",
        dlq_topic=f"readings_{suffix}.dlq",
        partitions=4,
        group_id=f"group_{suffix}",
    )
    ensure_topics(broker.bootstrap_servers, settings)
    return settings


@pytest.fixture
def settings(kafka_settings: KafkaSettings, tmp_path) -> Settings:
    """Full settings for one test: its own topics and its own data directories."""
    base = load_settings(environ={})
    return base.model_copy(update={
        "kafka": kafka_settings,
        "stream": base.stream.model_copy(update={
            "checkpoint_dir": str(tmp_path / "checkpoints"), "lake_dir": str(tmp_path / "lake")}),
        "train": base.train.model_copy(update={"registry_dir": str(tmp_path / "registry")}),
        "simulator": base.simulator.model_copy(update={"out_dir": tmp_path / "simulator"}),
    })


@pytest.fixture(scope="session")
def ray_cluster():
    """A real multi-node-capable Ray cluster (``ray.cluster_utils.Cluster``) with the driver connected.

    The head has 4 logical CPUs (on 2 real cores) so that a Train/Tune sweep, the stream
    actors and Serve can be placed side by side; tests that need node loss add their
    own nodes with ``ray_cluster.add_node`` and remove them.
    """
    import ray
    from ray.cluster_utils import Cluster

    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    cluster = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 4, "include_dashboard": False},
    )
    ray.init(address=cluster.address, namespace="smoke-tests", log_to_driver=False)
    try:
        yield cluster
    finally:
        ray.shutdown()
        cluster.shutdown()


@pytest.fixture(scope="session")
def postgres_server():
    """A real PostgreSQL server (Debian's binaries) on a free port, for the whole session."""
    from tests.postgres_server import binaries_missing, start_postgres

    missing = binaries_missing()
    if missing:
        pytest.skip(missing)
    server = start_postgres()
    try:
        yield server
    finally:
        server.stop()
