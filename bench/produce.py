"""Simulator -> Kafka throughput for 10,000 sensors, beside a raw kafka-python producer, in the same run.

Ours: :func:`ingest.producer.simulate_to_kafka` as fast as possible (generate the
readings with the sensor physics, serialize them, send keyed with resends and
count deliveries). Baseline: a bare ``KafkaProducer`` with the same batching
settings sending the same readings already serialized to bytes, so it measures
only kafka-python and the broker. Both write to their own topic of the same
embedded broker (started here on a free port). Runs alternate, one of each per
round, so that both meet the same load from other processes; the headline is
the median over rounds of ours / baseline within a round (best-of-each is also
recorded).

    python -m bench.produce              # about 40 s; writes bench/results/produce.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from kafka import KafkaProducer

from ingest.broker import EmbeddedBroker, ensure_topics
from ingest.producer import simulate_to_kafka
from ingest.settings import load_settings
from ingest.simulator import FleetSimulator

RESULTS = Path(__file__).resolve().parent / "results"
TARGET_RATIO = 0.7


def baseline_run(bootstrap: str, topic: str, keys: list[bytes], values: list[bytes], linger_ms: int,
                 batch_bytes: int) -> tuple[float, float]:
    """Readings per second and client CPU microseconds per reading of a bare kafka-python producer."""
    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=linger_ms, batch_size=batch_bytes, acks="all")
    try:
        started, cpu = time.perf_counter(), time.process_time()
        for key, value in zip(keys, values, strict=True):
            producer.send(topic, key=key, value=value)
        producer.flush()
        return (len(values) / (time.perf_counter() - started),
                (time.process_time() - cpu) / len(values) * 1e6)
    finally:
        producer.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sensors", type=int, default=10_000)
    parser.add_argument("--readings", type=int, default=40_000, help="readings per run")
    parser.add_argument("--rounds", type=int, default=5, help="runs of each, alternating")
    args = parser.parse_args(argv)

    base = load_settings(environ={})
    rate = float(args.sensors)  # one reading per sensor per simulated second
    duration = args.readings / rate
    config = base.simulator.model_copy(update={"sensors": args.sensors, "rate": rate})
    # The baseline sends exactly what the simulator makes (dropouts included), made before timing.
    sample = FleetSimulator(config, start_time=1_700_000_000.0)
    keys, values = [], []
    generate_started = time.perf_counter()
    for batch in sample.batches(batch_size=2_000, duration_s=duration):
        keys += batch.keys()
        values += batch.wire_messages()  # what simulate_to_kafka sends
    generate_per_s = len(values) / (time.perf_counter() - generate_started)

    ours, theirs, ours_cpu, theirs_cpu = [], [], [], []
    with EmbeddedBroker() as broker, tempfile.TemporaryDirectory() as tmp:
        bootstrap = broker.bootstrap_servers
        for round_ in range(args.rounds):
            kafka_ours = base.kafka.model_copy(update={"topic": f"bench_ours_{round_}"})
            kafka_raw = base.kafka.model_copy(update={"topic": f"bench_raw_{round_}"})
            ensure_topics(bootstrap, kafka_ours)
            ensure_topics(bootstrap, kafka_raw)
            rate_raw, cpu_raw = baseline_run(bootstrap, kafka_raw.topic, keys, values, config.linger_ms,
                                             config.batch_bytes)
            theirs.append(rate_raw)
            theirs_cpu.append(cpu_raw)
            settings = base.model_copy(update={"kafka": kafka_ours, "simulator": config})
            started, cpu = time.perf_counter(), time.process_time()
            report = simulate_to_kafka(settings, bootstrap, duration, fast=True, start_time=1_700_000_000.0,
                                       incident_log=Path(tmp) / f"incidents-{round_}.jsonl")
            elapsed = time.perf_counter() - started
            ours_cpu.append((time.process_time() - cpu) / len(values) * 1e6)
            if report.failed or report.delivered != len(values):
                print(f"bench.produce: run {round_} delivered {report.delivered} of {len(values)} "
                      f"({report.failed} failed: {report.last_error})", file=sys.stderr)
                return 1
            ours.append(report.delivered / elapsed)
            print(f"round {round_ + 1}: raw kafka-python {theirs[-1]:,.0f}/s, simulate_to_kafka {ours[-1]:,.0f}/s "
                  f"({ours[-1] / theirs[-1]:.2f})")

    paired = sorted(o / t for o, t in zip(ours, theirs, strict=True))
    ratio = statistics.median(paired)
    result = {
        "command": "python -m bench.produce" + (f" {' '.join(argv)}" if argv else ""),
        "measured_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "sensors": args.sensors,
        "readings_per_run": len(values),
        "rounds": args.rounds,
        "simulate_to_kafka_per_s": round(max(ours)),
        "raw_kafka_python_per_s": round(max(theirs)),
        "ratio": round(ratio, 3),
        "ratio_per_round": [round(r, 3) for r in paired],
        "ratio_best_of_each": round(max(ours) / max(theirs), 3),
        "target_ratio": TARGET_RATIO,
        "simulator_generate_and_serialize_per_s": round(generate_per_s),
        # Client CPU per reading (this process, kafka-python's I/O thread included): less sensitive to
        # other load on the machine than wall-clock rates. Ours includes making the readings.
        "client_cpu_us_per_reading": {"simulate_to_kafka": round(statistics.median(ours_cpu), 1),
                                      "raw_kafka_python": round(statistics.median(theirs_cpu), 1)},
        "cpu_ratio": round(statistics.median(theirs_cpu) / statistics.median(ours_cpu), 3),
        "runs": {"simulate_to_kafka": [round(x) for x in ours], "raw_kafka_python": [round(x) for x in theirs]},
        "producer": {"linger_ms": config.linger_ms, "batch_bytes": config.batch_bytes, "acks": "all"},
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "produce.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"simulate_to_kafka {max(ours):,.0f} readings/s vs raw kafka-python {max(theirs):,.0f}/s (best runs); "
          f"ratio {ratio:.2f} (median of rounds; target >= {TARGET_RATIO}); "
          f"simulator alone {generate_per_s:,.0f}/s; client CPU per reading {statistics.median(ours_cpu):.1f} us "
          f"vs {statistics.median(theirs_cpu):.1f} us")
    return 0


if __name__ == "__main__":
    sys.exit(main())
