"""Failures mid-stream: a killed worker and a lost node, with exactly-once outputs afterwards.

Real Ray (the session cluster plus a node added here), the real embedded broker,
real kafka-python clients. Input: the fleet simulator's 40 sensors with frequent
incidents (so alerts are raised and cleared across the failures) on 4 partitions,
2 workers, and about 1% malformed messages so the dead-letter path is exercised
too. After each failure: every input offset is in the lake or the DLQ exactly
once, and the alerts topic holds exactly the alerts of an offline run of the
engine over the same readings, each once.
"""

from __future__ import annotations

import collections
import itertools
import time

import orjson
import pytest
import ray

from actors.detection import DetectionEngine
from ingest.alert_message import SILENT
from ingest.settings import SimulatorSettings
from ingest.simulator import FleetSimulator
from tests.stream_support import (
    BackgroundProducer,
    all_consumed,
    assert_exactly_once,
    consume_all,
    measure_takeover,
    running_stream,
    stream_settings,
    wait_for,
)

pytestmark = pytest.mark.integration

SIM = SimulatorSettings(sensors=40, rate=40, seed=5, incidents_per_sensor_hour=30.0, stuck_sensor_share=0.05,
                        time_scale=None, sensor_prefix="rec")
START = 1_780_000_000.0
MALFORMED = b'{"sensor_id": "rec-00001", "temperature_c": "hot"}'


def simulated(n: int) -> list[list]:
    """``n`` simulator batches (one reading per sensor each): 40 sensors, one simulated second per batch."""
    return list(itertools.islice(FleetSimulator(SIM, start_time=START).batches(batch_size=SIM.sensors), n))


def traffic(batches: list) -> list[tuple[bytes, bytes]]:
    """The batches' messages with a malformed one after every 97th reading."""
    items = []
    for batch in batches:
        for key, value in zip(batch.keys(), batch.messages(), strict=True):
            items.append((key, value))
            if len(items) % 98 == 97:
                items.append((b"rec-00001", MALFORMED))
    return items


def offline_alerts(settings, batches: list) -> set[tuple[str, str]]:
    """What the engine raises and clears for the same readings without Kafka, Ray or failures."""
    engine = DetectionEngine(settings.detection, None, clock=lambda: 0.0)
    out = set()
    for b in batches:
        _, alerts = engine.process(b.sensor_ids, b.timestamps, b.values, b.timestamps)
        out |= {(a.alert_id, a.state) for a in alerts if a.kind != SILENT}
    return out


def processed(supervisor) -> int:
    status = ray.get(supervisor.status.remote(), timeout=60)
    return sum(w.get("totals", {}).get("processed", 0) for w in status["workers"].values())


def stream_alerts(settings) -> collections.Counter:
    records = consume_all(settings.kafka.bootstrap_servers, settings.kafka.alerts_topic, quiet_s=1.0)
    docs = [orjson.loads(r.value) for r in records]
    return collections.Counter((d["alert_id"], d["state"]) for d in docs if d["kind"] != SILENT)


def assert_alerts_once(settings, expected: set[tuple[str, str]]) -> None:
    got = stream_alerts(settings)
    assert [k for k, n in got.items() if n > 1] == [], "an alert was sent twice"
    assert set(got) == expected, f"only stream: {set(got) - expected}, only offline: {expected - set(got)}"


def test_worker_kill_then_node_loss_keep_outputs_exactly_once(ray_cluster, settings, reliability_record) -> None:
    extra = ray_cluster.add_node(num_cpus=2)
    ray_cluster.wait_for_nodes()
    s = stream_settings(settings, workers=2, checkpoint_every_messages=300)
    batches = simulated(150)
    first, second = traffic(batches[:75]), traffic(batches[75:])
    expected_first, expected_all = offline_alerts(s, batches[:75]), offline_alerts(s, batches)
    assert any(state == "raised" for _, state in expected_first), "phase 1 must raise alerts"
    try:
        with running_stream(s) as supervisor:
            assignment = ray.get(supervisor.assignment.remote())
            nodes = {info["node_id"] for info in assignment.values()}
            assert extra.node_id in nodes, f"SPREAD did not place a worker on the added node: {assignment}"

            # Phase 1: kill the worker on the head node while readings flow.
            with BackgroundProducer(s.kafka.bootstrap_servers, s.kafka.topic, first, rate=1500):
                wait_for(lambda: processed(supervisor) >= 800, 60, what="800 readings processed")
                handles = ray.get(supervisor.worker_handles.remote())
                victim = next(w for w, info in assignment.items() if info["node_id"] != extra.node_id)
                before = ray.get(supervisor.status.remote())
                killed_at = time.monotonic()
                ray.kill(handles[victim], no_restart=True)
                kill_figures = measure_takeover(supervisor, before, handles, victim, killed_at)
            wait_for(all_consumed(s, len(first)), 90, what="every offset of phase 1 in the lake or DLQ")
            counts = assert_exactly_once(s, len(first))
            assert counts["dlq"] == sum(1 for _, v in first if v == MALFORMED)
            status = ray.get(supervisor.status.remote())
            assert status["restarts"] >= 1 and len(status["workers"]) == 2
            assert victim not in status["workers"]
            assert_alerts_once(s, expected_first)

            # Phase 2: lose the added node (and the worker on it) while readings flow.
            with BackgroundProducer(s.kafka.bootstrap_servers, s.kafka.topic, second, rate=1500):
                wait_for(lambda: processed(supervisor) >= 800, 60, what="phase 2 under way")
                before = ray.get(supervisor.status.remote())
                handles = ray.get(supervisor.worker_handles.remote())
                lost = next(w for w, info in before["assignment"].items() if info["node_id"] == extra.node_id)
                removed_at = time.monotonic()
                ray_cluster.remove_node(extra, allow_graceful=False)
                extra = None
                node_figures = measure_takeover(supervisor, before, handles, lost, removed_at)
            wait_for(all_consumed(s, len(first) + len(second)), 120,
                     what="every offset of both phases in the lake or DLQ")
            assert_exactly_once(s, len(first) + len(second))
            assert_alerts_once(s, expected_all)
            # The dead node's worker is replaced on the survivor and the partitions are rebalanced.
            def rebalanced() -> dict | None:
                assignment = ray.get(supervisor.assignment.remote())
                sizes = sorted(len(info["partitions"]) for info in assignment.values())
                return assignment if sizes == [2, 2] else None

            assignment = wait_for(rebalanced, 60, what="a replacement worker with 2 of the 4 partitions")
            owned = sorted(p for info in assignment.values() for p in info["partitions"])
            assert owned == [0, 1, 2, 3], assignment
        # Recovery times (see measure_takeover); outputs above were checked exactly once.
        reliability_record("stream.ray_kill_worker[short]", readings=len(first), lost=0, duplicated=0,
                           duplicate_alerts=0, **kill_figures)
        reliability_record("stream.node_removal[short]", readings=len(first) + len(second), lost=0, duplicated=0,
                           duplicate_alerts=0, **node_figures)
    finally:
        if extra is not None:
            ray_cluster.remove_node(extra)
