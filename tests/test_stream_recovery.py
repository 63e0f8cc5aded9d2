"""Failures mid-stream: a killed worker and a lost node, with exactly-once outputs afterwards.

Real Ray (the session cluster plus a node added here), the real embedded broker,
real kafka-python clients. Input: 40 sensors on 4 partitions, 2 workers, about 1%
malformed messages so the dead-letter path is exercised through the failures too.
"""

from __future__ import annotations

import collections

import orjson
import pytest
import ray

from tests.test_stream_support import (
    BackgroundProducer,
    all_consumed,
    assert_exactly_once,
    consume_all,
    reading,
    running_stream,
    stream_settings,
    wait_for,
)

pytestmark = pytest.mark.integration

SENSORS = 40


def traffic(n: int, start: int = 0, t0: float = 1_780_000_000.0) -> list[tuple[bytes, bytes]]:
    items = []
    for i in range(start, start + n):
        sensor = f"rec-{i % SENSORS:03d}"
        value = b'{"sensor_id": "' + sensor.encode() + b'", "temperature_c": "hot"}' if i % 97 == 13 else \
            reading(sensor, t0 + i / SENSORS, i)
        items.append((sensor.encode(), value))
    return items


def processed(supervisor) -> int:
    status = ray.get(supervisor.status.remote(), timeout=60)
    return sum(w.get("totals", {}).get("processed", 0) for w in status["workers"].values())


def alert_duplicates(settings) -> list:
    records = consume_all(settings.kafka.bootstrap_servers, settings.kafka.alerts_topic, quiet_s=1.0)
    ids = collections.Counter((orjson.loads(r.value)["alert_id"], orjson.loads(r.value)["state"]) for r in records)
    return [k for k, n in ids.items() if n > 1]


def test_worker_kill_then_node_loss_keep_outputs_exactly_once(ray_cluster, settings) -> None:
    extra = ray_cluster.add_node(num_cpus=2)
    ray_cluster.wait_for_nodes()
    s = stream_settings(settings, workers=2, checkpoint_every_messages=300)
    first, second = traffic(3000), traffic(3000, start=3000)
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
                ray.kill(handles[victim], no_restart=True)
            wait_for(all_consumed(s, len(first)), 90, what="every offset of phase 1 in the lake or DLQ")
            counts = assert_exactly_once(s, len(first))
            assert counts["dlq"] == sum(1 for _, v in first if b'"hot"' in v)
            status = ray.get(supervisor.status.remote())
            assert status["restarts"] >= 1 and len(status["workers"]) == 2
            assert victim not in status["workers"]
            assert not alert_duplicates(s)

            # Phase 2: lose the added node (and the worker on it) while readings flow.
            with BackgroundProducer(s.kafka.bootstrap_servers, s.kafka.topic, second, rate=1500):
                wait_for(lambda: processed(supervisor) >= 800, 60, what="phase 2 under way")
                ray_cluster.remove_node(extra, allow_graceful=False)
                extra = None
            wait_for(all_consumed(s, len(first) + len(second)), 120,
                     what="every offset of both phases in the lake or DLQ")
            assert_exactly_once(s, len(first) + len(second))
            assert not alert_duplicates(s)
            # The dead node's worker is replaced on the survivor and the partitions are rebalanced.
            def rebalanced() -> dict | None:
                assignment = ray.get(supervisor.assignment.remote())
                sizes = sorted(len(info["partitions"]) for info in assignment.values())
                return assignment if sizes == [2, 2] else None

            assignment = wait_for(rebalanced, 60, what="a replacement worker with 2 of the 4 partitions")
            owned = sorted(p for info in assignment.values() for p in info["partitions"])
            assert owned == [0, 1, 2, 3], assignment
    finally:
        if extra is not None:
            ray_cluster.remove_node(extra)
