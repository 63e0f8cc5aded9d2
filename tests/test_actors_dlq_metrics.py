"""Bad input lands in the DLQ (original bytes, machine-readable reasons) while valid traffic flows,
and the stream's metrics appear on the Ray node's metrics export port.

Real Ray, real embedded broker, real kafka-python clients; the adversarial messages are the
shared corpus of :mod:`tests.malformed_corpus` (malformed cases, odd but valid ones, and a
seeded random sample), with odd Kafka keys and a tombstone.
"""

from __future__ import annotations

import collections
import random
import re
import time
import urllib.request

import numpy as np
import orjson
import pytest
import ray

from ingest.schema import Reason
from ingest.validation import validate_messages
from tests.malformed_corpus import ODD_BUT_VALID, pairs, random_payloads
from tests.stream_support import (
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


Message = tuple[bytes | None, bytes | None]  # (key, value) as produced


def adversarial_traffic(valid: int, seed: int, random_sample: int) -> tuple[list[Message], dict, set]:
    """``valid`` readings of 20 sensors with the adversarial corpus spread among them.

    Returns the messages, the expected DLQ reasons by raw value (the malformed corpus, a seeded
    random sample judged by ``validate_messages``, a tombstone) and the sensor ids of the odd
    but valid messages, which must reach the lake.
    """
    rng = random.Random(seed)
    sample = random_payloads(seed, random_sample)
    verdict = validate_messages(sample)
    expected: dict[bytes | None, set[str]] = {raw: {reason} for raw, reason in pairs()}
    expected[None] = {Reason.NOT_JSON}  # a tombstone
    accepted_odd = {c.sensor_id for c in ODD_BUT_VALID}
    odd: list[Message] = [(b"corpus", raw) for raw in expected]
    odd += [(b"odd", c.raw) for c in ODD_BUT_VALID]
    for k, raw in enumerate(sample):
        # Odd keys too: the key is only carried into the DLQ headers, never trusted.
        key = rng.choice([None, b"", rng.randbytes(8), "\U0001f525".encode()])
        odd.append((key, raw))
        if k in verdict.rejected:
            expected.setdefault(raw, set()).update(p.reason for p in verdict.rejected[k])
        else:
            accepted_odd.add(verdict.sensor_ids[int(np.searchsorted(verdict.index, k))])
    t0 = time.time() - 3600
    items: list[Message] = []
    every = max(valid // len(odd), 1)
    pending = iter(odd)
    for i in range(valid):
        sensor = f"dlq-{i % 20:02d}"
        items.append((sensor.encode(), reading(sensor, t0 + i, i)))
        odd_one = next(pending, None) if i % every == 0 else None
        if odd_one is not None:
            items.append(odd_one)
    items.extend(pending)
    return items, expected, accepted_odd


def test_adversarial_corpus_goes_to_the_dlq_while_valid_traffic_flows(ray_cluster, settings, request,
                                                                     reliability_record) -> None:
    random_sample = 2_000 if request.config.getoption("--full") else 60
    items, expected_reasons, accepted_odd = adversarial_traffic(valid=600, seed=2026, random_sample=random_sample)
    bad = sum(1 for _, v in items if v in expected_reasons)
    accepted = len(items) - bad
    assert bad >= len(pairs()) + 1 and accepted > 600 + len(ODD_BUT_VALID)
    s = stream_settings(settings, workers=2)
    with running_stream(s):
        produce(s.kafka.bootstrap_servers, s.kafka.topic, items)
        wait_for(all_consumed(s, len(items)), 90, what="every offset in the lake or the DLQ")
        counts = assert_exactly_once(s, len(items))
        assert counts == {"lake": accepted, "dlq": bad}
        sensors = set(lake_rows(s)["sensor_id"])
        assert {f"dlq-{i:02d}" for i in range(20)} <= sensors, "valid traffic kept flowing"
        assert accepted_odd <= sensors, accepted_odd - sensors

        dead = consume_all(s.kafka.bootstrap_servers, s.kafka.dlq_topic, expect=bad)
        assert len(dead) == bad
        dlq_by_reason: collections.Counter[str] = collections.Counter()
        for record in dead:
            headers = dict(record.headers)
            assert record.value in expected_reasons, "the DLQ must carry the original bytes, unchanged"
            reasons = headers["reason"].decode().split(",")
            assert set(reasons) == expected_reasons[record.value], (record.value[:80], reasons)
            dlq_by_reason.update(reasons)
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
            return text if set(dlq_by_reason) <= set(reasons) and processed >= accepted else None

        text = wait_for(exported, 60, interval_s=2, what="stream metrics on the metrics export port")
        processed = metric_values(text, "ray_smoke_events_processed_total")
        assert sum(processed.values()) >= accepted
        # Counted by reason: at least this test's count of each (other tests' workers add to them).
        by_reason = metric_values(text, "ray_smoke_events_rejected_total", "reason")
        for reason, n in dlq_by_reason.items():
            assert by_reason.get(reason, 0) >= n, (reason, n, by_reason)
        assert set(by_reason) <= set(Reason.ALL), by_reason
        assert sum(metric_values(text, "ray_smoke_workers_alive").values()) >= 2
        lag = metric_values(text, "ray_smoke_consumer_lag", "partition")
        assert set(lag) >= {"0", "1", "2", "3"}

        status = ray.get(ray.get_actor(s.stream.supervisor_name, namespace=s.ray.namespace).status.remote())
        assert sum(w["totals"]["rejected"] for w in status["workers"].values()) == bad
        assert status["restarts"] == 0, "a worker crashed on the adversarial input"
        assert sum(w["totals"]["processed"] for w in status["workers"].values()) == accepted
    # Every offset is in the lake or the DLQ exactly once (asserted above): these are those counts.
    reliability_record("kafka_payload_fuzz", messages=len(items), in_lake=counts["lake"], in_dlq=counts["dlq"],
                       malformed_corpus=len(pairs()), odd_but_valid=len(ODD_BUT_VALID), random_sample=random_sample,
                       dlq_by_reason=dict(sorted(dlq_by_reason.items())), worker_restarts=status["restarts"])
