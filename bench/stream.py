"""Stream benchmark: our PartitionWorkers beside the raw kafka-python ceiling, in the same run.

    python -m bench.stream              # about 3 minutes on 2 cores
    python -m bench.stream --quick      # smaller numbers, for a smoke check

Measures, against one embedded broker and one local Ray started here:

1. **Throughput** of the stream with detection on (validation, features, engine,
   DLQ/alert producer, lake buffering, checkpoints) over a pre-filled topic,
   beside the **ceiling**: one kafka-python consumer that only polls and
   ``orjson``-decodes the same topic (same process count: one worker against one
   consumer). Ratio = ours / ceiling. Throughput is rows / (last - first
   ``processed_at`` in the lake), so actor start-up is not counted.
   The same topic is then read again by 2 workers (``ratio_2_workers``), and by
   **Bytewax** (one worker, its own Kafka source, a per-sensor EWMA job:
   ``bench.stream_bytewax``, in a subprocess) when the ``bench`` extra is installed
   (``pip install -e '.[bench]'``); ratio = ours / Bytewax.
2. **End-to-end latency** at 1,000 and 5,000 readings/s, paced by a producer in
   this process: per reading, ``processed_at`` (detection done) minus the broker
   record's timestamp (the producer's send time); p50 / p99. Beside it, in the
   same minutes, a bare kafka-python consumer of the same records
   (``bench.stream_raw_consumer``, its own process): poll returned minus the same
   timestamp, the transport's share of the latency on a machine as loaded as it is.
3. **Bytes of state per sensor** at 10,000 sensors: the stream's own estimate
   (``nbytes_per_sensor``), the pickled snapshot size, and the Python heap growth
   measured with ``tracemalloc``.

Results go to ``bench/results/stream.json``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import pickle
import platform
import subprocess
import sys
import time
import tracemalloc
import uuid
from pathlib import Path
from tempfile import TemporaryDirectory

import numpy as np
import orjson
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

ROOT = Path(__file__).resolve().parent.parent
RESULT = ROOT / "bench" / "results" / "stream.json"


def messages(n: int, sensors: int, t0: float) -> list[tuple[bytes, bytes]]:
    from ingest.settings import SimulatorSettings
    from ingest.simulator import FleetSimulator

    sim = FleetSimulator(SimulatorSettings(sensors=sensors, rate=float(sensors), seed=3), start_time=t0)
    out: list[tuple[bytes, bytes]] = []
    for batch in sim.batches(batch_size=5_000):
        out += zip(batch.keys(), batch.messages(), strict=True)
        if len(out) >= n:
            break
    return out[:n]


def fill(bootstrap: str, topic: str, items: list[tuple[bytes, bytes]]) -> float:
    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=20, batch_size=256 * 1024, acks=1)
    started = time.perf_counter()
    for key, value in items:
        producer.send(topic, key=key, value=value)
    producer.flush(120)
    producer.close()
    return len(items) / (time.perf_counter() - started)


def ceiling(bootstrap: str, topic: str, partitions: int, n: int, max_records: int) -> float:
    """One kafka-python consumer: poll and orjson-decode every value, nothing else (the stream's poll size)."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest",
                             fetch_max_wait_ms=100)
    tps = [TopicPartition(topic, p) for p in range(partitions)]
    consumer.assign(tps)
    consumer.seek_to_beginning(*tps)
    seen, first = 0, None
    deadline = time.monotonic() + 120
    while seen < n and time.monotonic() < deadline:
        polled = consumer.poll(timeout_ms=200, max_records=max_records)
        for records in polled.values():
            if first is None:
                first = time.perf_counter()
            for record in records:
                orjson.loads(record.value)
            seen += len(records)
    elapsed = time.perf_counter() - (first or time.perf_counter())
    consumer.close(autocommit=False)
    return seen / elapsed if elapsed > 0 else 0.0


def bytewax_rate(bootstrap: str, topic: str) -> dict[str, float] | None:
    """Bytewax's per-sensor EWMA job over the topic (``bench.stream_bytewax``); None if not installed."""
    if importlib.util.find_spec("bytewax") is None:
        print("bytewax is not installed (pip install -e '.[bench]'): skipping the Bytewax comparison", flush=True)
        return None
    out = subprocess.run([sys.executable, "-m", "bench.stream_bytewax", "--bootstrap-servers", bootstrap,
                          "--topic", topic], cwd=ROOT, capture_output=True, text=True, timeout=600, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def run_stream(settings, items_or_none, rate: float | None, expect: int, timeout_s: float = 120.0):
    """Start a stream, optionally produce paced traffic, wait until ``expect`` rows are processed,
    stop (final checkpoint) and return the lake's rows, the alert count and, with paced traffic,
    the latency of a bare consumer reading the same records meanwhile (``bench.stream_raw_consumer``)."""
    from actors.supervisor import start_stream, stop_stream, stream_status
    from ingest.lake import read_lake

    start_stream(settings, settings.kafka.bootstrap_servers)
    raw = None
    try:
        if items_or_none is not None:
            raw = subprocess.Popen(
                [sys.executable, "-m", "bench.stream_raw_consumer", "--bootstrap-servers",
                 settings.kafka.bootstrap_servers, "--topic", settings.kafka.topic, "--partitions",
                 str(settings.kafka.partitions), "--expect", str(expect)],
                cwd=ROOT, stdout=subprocess.PIPE, text=True)
            raw.stdout.readline()  # "ready": positioned at the end of every partition
            producer = KafkaProducer(bootstrap_servers=settings.kafka.bootstrap_servers, linger_ms=1, acks=1)
            started = time.monotonic()
            for i, (key, value) in enumerate(items_or_none):
                delay = started + i / rate - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                producer.send(settings.kafka.topic, key=key, value=value)
            producer.flush(60)
            producer.close()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            status = stream_status(settings) or {}
            done = sum(w.get("totals", {}).get("processed", 0) + w.get("totals", {}).get("rejected", 0)
                       for w in status.get("workers", {}).values())
            if done >= expect:
                break
            time.sleep(0.5)
        alerts = sum(w.get("totals", {}).get("alerts", 0) for w in status.get("workers", {}).values())
    finally:
        stop_stream(settings)
    baseline = None
    if raw is not None:
        out, _ = raw.communicate(timeout=180)
        baseline = json.loads(out.strip().splitlines()[-1])
    lake = read_lake(settings.stream.lake_dir, columns=["kafka_offset", "arrival_time", "processed_at"])
    return lake, alerts, baseline


def state_bytes(settings, sensors: int) -> dict[str, float]:
    from actors.checkpoint_store import CheckpointStore
    from actors.ownership import engine_factory
    from actors.state import PartitionState
    from ingest.validation import validate_messages

    items = messages(sensors * 12, sensors, 1_780_000_000.0)
    batches = [validate_messages([v for _, v in items[i:i + sensors]]) for i in range(0, len(items), sensors)]
    store = CheckpointStore(settings.stream.checkpoint_dir)
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    state = PartitionState("bench", 0, engine_factory(settings, None)(None))
    for b in batches:
        state.process(b.sensor_ids, b.timestamps, b.values, b.timestamps, store)
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    snapshot = pickle.dumps(state.snapshot(), protocol=5)
    return {
        "sensors": state.sensors(),
        "estimate_bytes_per_sensor": state.nbytes_per_sensor(),
        "heap_bytes_per_sensor": (after - before) / state.sensors(),
        "snapshot_bytes_per_sensor": len(snapshot) / state.sensors(),
        "engine": type(state.engine).__name__ if state.engine is not None else "none",
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller numbers (smoke check)")
    args = parser.parse_args(argv)
    # 300k readings: about 2 s of our single worker at full speed, so the rate is a sustained one
    # (checkpoints included), not the first burst; the whole script takes about 80 s.
    n = 30_000 if args.quick else 300_000
    latency_s = 5.0 if args.quick else 8.0

    import ray

    from ingest.broker import EmbeddedBroker, ensure_topics
    from ingest.settings import KafkaSettings, load_settings

    base = load_settings(environ={})
    result: dict[str, object] = {
        "command": "python -m bench.stream" + (" --quick" if args.quick else ""),
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "python": platform.python_version(),
    }
    from actors.supervisor import STREAM_NODE_ENV

    # As `smoke up` and the `ray up` configs run it: the raylet reads the workers' niceness at start.
    os.environ.update(STREAM_NODE_ENV)
    result["ray_node_env"] = STREAM_NODE_ENV
    with EmbeddedBroker() as broker, TemporaryDirectory() as tmp:
        # address="local": always a fresh Ray of our own, never a cluster someone else started.
        ray.init(address="local", num_cpus=4, include_dashboard=False, namespace="bench-stream",
                 log_to_driver=False)
        try:
            def settings_for(tag: str, workers: int, topic: str | None = None):
                suffix = f"{tag}-{uuid.uuid4().hex[:6]}"
                kafka = KafkaSettings(bootstrap_servers=broker.bootstrap_servers, topic=topic or f"bench_{suffix}",
                                      alerts_topic=f"bench_alerts_{suffix}", dlq_topic=f"bench_{suffix}.dlq",
                                      partitions=4, group_id=f"bench-{suffix}")
                ensure_topics(broker.bootstrap_servers, kafka)
                stream = base.stream.model_copy(update={
                    "workers": workers, "supervisor_name": f"bench-{suffix}", "checkpoint_interval_s": 2.0,
                    "checkpoint_dir": f"{tmp}/{suffix}/ck", "lake_dir": f"{tmp}/{suffix}/lake"})
                train = base.train.model_copy(update={"registry_dir": f"{tmp}/registry"})
                return base.model_copy(update={"kafka": kafka, "stream": stream, "train": train})

            # 1. Throughput beside the ceiling, over the same pre-filled topic.
            items = messages(n, 1_000, 1_780_000_000.0)
            s1 = settings_for("tput", workers=1)
            produce_rate = fill(broker.bootstrap_servers, s1.kafka.topic, items)
            poll_size = s1.stream.poll_max_records
            ceiling_rate = ceiling(broker.bootstrap_servers, s1.kafka.topic, 4, n, poll_size)
            lake, alerts, _ = run_stream(s1, None, None, n)
            span = float(lake["processed_at"].max() - lake["processed_at"].min())
            ours = len(lake) / span if span > 0 else 0.0
            ceiling_after = ceiling(broker.bootstrap_servers, s1.kafka.topic, 4, n, poll_size)
            ceiling_best = max(ceiling_rate, ceiling_after)
            result["throughput"] = {
                "readings": n, "sensors": 1_000, "workers": 1,
                "stream_per_s": round(ours), "ceiling_per_s": round(ceiling_best),
                "ceiling_runs_per_s": [round(ceiling_rate), round(ceiling_after)],
                "ratio": round(ours / ceiling_best, 3) if ceiling_best else None,
                "alerts": alerts, "producer_fill_per_s": round(produce_rate),
                "detection": state_engine_name(s1),
            }
            # The same topic again with 2 workers (the machine has 2 cores): how far the stream scales.
            s2 = settings_for("tput2", workers=2, topic=s1.kafka.topic)
            lake, _, _ = run_stream(s2, None, None, n)
            span = float(lake["processed_at"].max() - lake["processed_at"].min())
            ours2 = len(lake) / span if span > 0 else 0.0
            result["throughput"]["stream_2_workers_per_s"] = round(ours2)
            result["throughput"]["ratio_2_workers"] = round(ours2 / ceiling_best, 3) if ceiling_best else None
            bytewax = bytewax_rate(broker.bootstrap_servers, s1.kafka.topic)
            if bytewax is not None:
                result["throughput"]["bytewax_per_s"] = round(bytewax["per_s"])
                result["throughput"]["bytewax_readings"] = bytewax["readings"]
                result["throughput"]["ratio_bytewax"] = round(ours / bytewax["per_s"], 3) if bytewax["per_s"] else None
                # Bytewax reads through confluent-kafka (librdkafka, C), not kafka-python: its rate
                # beside the kafka-python ceiling shows how much of the gap is the client alone.
                result["throughput"]["bytewax_over_ceiling"] = round(bytewax["per_s"] / ceiling_best, 3)
            print("throughput", result["throughput"], flush=True)

            # 2. End-to-end latency at paced rates.
            result["latency"] = {}
            for rate in (1_000, 5_000):
                s = settings_for(f"lat{rate}", workers=2)
                count = int(rate * latency_s)
                paced = messages(count, 1_000, 1_780_100_000.0)
                lake, _, raw = run_stream(s, paced, rate, count)
                lat = (lake["processed_at"] - lake["arrival_time"]).to_numpy()
                p99 = round(float(np.percentile(lat, 99)) * 1000, 1)
                result["latency"][f"{rate}_per_s"] = {
                    "readings": len(lat), "workers": 2,
                    "p50_ms": round(float(np.percentile(lat, 50)) * 1000, 1),
                    "p99_ms": p99,
                    "max_ms": round(float(lat.max()) * 1000, 1),
                    # The transport alone in the same minutes: a bare consumer of the same records.
                    "raw_consumer": raw,
                    "p99_over_raw_consumer_p99": round(p99 / raw["p99_ms"], 2) if raw and raw["p99_ms"] else None,
                }
                print("latency", rate, result["latency"][f"{rate}_per_s"], flush=True)
        finally:
            ray.shutdown()
        # 3. State per sensor.
        state_settings = base.model_copy(update={"stream": base.stream.model_copy(
            update={"checkpoint_dir": f"{tmp}/state-ck"})})
        result["state_10k_sensors"] = state_bytes(state_settings, 10_000)
        print("state", result["state_10k_sensors"], flush=True)
    result["targets"] = {"throughput_ratio_min": 0.8, "bytewax_ratio_min": 1.5, "p99_ms_at_5000_max": 250}
    RESULT.parent.mkdir(parents=True, exist_ok=True)
    RESULT.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {RESULT}")
    return 0


def state_engine_name(settings) -> str:
    from actors.ownership import engine_factory

    engine = engine_factory(settings, None)(None)
    return type(engine).__name__ if engine is not None else "none (actors.detection missing)"


if __name__ == "__main__":
    sys.exit(main())
