"""Bad input lands in the DLQ (original bytes, machine-readable reasons) while valid traffic flows,
and the stream's metrics appear on the Ray node's metrics export port.

Real Ray, real embedded broker, real kafka-python clients; the malformed messages
are the shared corpus of :mod:`ingest.malformed_corpus`.
"""

from __future__ import annotations

import collections
import re
import time
import urllib.request

import orjson
import pytest
import ray

from ingest.malformed_corpus import pairs
from tests.test_stream_support import (
    all_consumed,
    assert_exactly_once,
    consume_all,
    lake_rows,
    produce,
    reading,
    running_stream,
    stream_settings,
    wait_for,
)

pytestmark = pytest.mark.integration

STREAM_METRICS = (
    "ray_smoke_events_processed_total", "ray_smoke_events_rejected_total", "ray_smoke_consumer_lag",
    "ray_smoke_checkpoint_duration_seconds_bucket", "ray_smoke_state_sensors", "ray_smoke_state_bytes",
    "ray_smoke_workers_alive", "ray_smoke_model_version",
)


def scrape(cluster) -> str:
    node = cluster.head_node
    url = f"http://{node.node_ip_address}:{node.metrics_export_port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as response:
        return response.read().decode()


def metric_values(text: str, name: str, label: str | None = None) -> dict[str, float]:
    """Samples of one metric summed by the value of ``label`` (over Ray's WorkerId etc. labels)."""
    out: dict[str, float] = collections.defaultdict(float)
    for match in re.finditer(rf"^{name}\{{(.*)\}} (\S+)$", text, re.MULTILINE):
        labels = dict(re.findall(r'(\w+)="([^"]*)"', match.group(1)))
        out[labels.get(label, "") if label else ""] += float(match.group(2))
    return dict(out)


def test_malformed_corpus_goes_to_the_dlq_while_valid_traffic_flows(ray_cluster, settings) -> None:
    cases = pairs()
    assert len(cases) >= 20
    assert len(cases) <= 40  # one case after every 15th valid reading
    t0 = time.time() - 3600
    items: list[tuple[bytes | None, bytes | None]] = []
    expected_reasons: dict[bytes | None, str] = {}
    for i in range(600):
        sensor = f"dlq-{i % 20:02d}"
        items.append((sensor.encode(), reading(sensor, t0 + i, i)))
        if i % 15 == 0 and i // 15 < len(cases):
            raw, reason = cases[i // 15]
            items.append((f"dlq-{i % 20:02d}".encode(), raw))
            expected_reasons[raw] = reason
    bad = sum(1 for _, v in items if v in expected_reasons)
    s = stream_settings(settings, workers=2)
    with running_stream(s):
        produce(s.kafka.bootstrap_servers, s.kafka.topic, items)
        wait_for(all_consumed(s, len(items)), 60, what="every offset in the lake or the DLQ")
        counts = assert_exactly_once(s, len(items))
        assert counts == {"lake": 600, "dlq": bad}
        assert lake_rows(s)["sensor_id"].nunique() == 20

        dead = consume_all(s.kafka.bootstrap_servers, s.kafka.dlq_topic, expect=bad)
        assert len(dead) == bad
        for record in dead:
            headers = dict(record.headers)
            assert record.value in expected_reasons, "the DLQ must carry the original bytes, unchanged"
            reasons = headers["reason"].decode().split(",")
            assert expected_reasons[record.value] in reasons, (record.value[:80], reasons)
            problems = orjson.loads(headers["problems"])
            assert problems and all({"field", "reason", "detail"} <= p.keys() for p in problems)
            assert headers["source_topic"].decode() == s.kafka.topic
            assert record.key == f"{s.kafka.topic}/{int(headers['source_partition'])}/" \
                                 f"{int(headers['source_offset'])}".encode()

        # Metrics: Ray exports custom metrics every few seconds; poll the head node's port.
        def exported() -> str | None:
            text = scrape(ray_cluster)
            if not all(f"{name}{{" in text or f"{name} " in text for name in STREAM_METRICS):
                return None
            # Other tests' workers export the same names: wait for this test's reasons.
            reasons = metric_values(text, "ray_smoke_events_rejected_total", "reason")
            processed = sum(metric_values(text, "ray_smoke_events_processed_total").values())
            return text if set(expected_reasons.values()) <= set(reasons) and processed >= 600 else None

        text = wait_for(exported, 60, interval_s=2, what="stream metrics on the metrics export port")
        processed = metric_values(text, "ray_smoke_events_processed_total")
        assert sum(processed.values()) >= 600
        by_reason = metric_values(text, "ray_smoke_events_rejected_total", "reason")
        for reason in set(expected_reasons.values()):
            assert by_reason.get(reason, 0) >= 1, (reason, by_reason)
        assert sum(metric_values(text, "ray_smoke_workers_alive").values()) >= 2
        lag = metric_values(text, "ray_smoke_consumer_lag", "partition")
        assert set(lag) >= {"0", "1", "2", "3"}

        status = ray.get(ray.get_actor(s.stream.supervisor_name, namespace=s.ray.namespace).status.remote())
        assert sum(w["totals"]["rejected"] for w in status["workers"].values()) == bad
