"""The latency baseline of ``bench.stream``: a bare kafka-python consumer on the same paced topic.

Started by ``bench.stream`` in its own process beside the stream's workers while
the producer paces readings, so its figures share the run's machine load. Per
record: the time ``poll()`` returned it minus the record's timestamp (the
producer's send time) — what the transport alone costs (producer, broker, fetch),
the floor under the stream's end-to-end latency. It prints ``ready`` once it is
positioned at the end of every partition, then, after ``--seconds`` or
``--expect`` records, one JSON line with p50/p99/max in ms.

    python -m bench.stream_raw_consumer --bootstrap-servers HOST:PORT --topic T --partitions 4 --expect 5000
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np
from kafka import KafkaConsumer, TopicPartition


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap-servers", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--partitions", type=int, required=True)
    parser.add_argument("--expect", type=int, required=True, help="stop after this many records")
    parser.add_argument("--timeout-s", type=float, default=120.0)
    args = parser.parse_args(argv)
    # The stream's consumer settings (fetch_max_wait_ms, poll size and timeout), nothing else.
    consumer = KafkaConsumer(bootstrap_servers=args.bootstrap_servers, enable_auto_commit=False,
                             auto_offset_reset="earliest", fetch_max_wait_ms=100)
    tps = [TopicPartition(args.topic, p) for p in range(args.partitions)]
    consumer.assign(tps)
    consumer.seek_to_end(*tps)
    for tp in tps:
        consumer.position(tp, timeout_ms=10_000)
    print("ready", flush=True)
    latencies: list[float] = []
    deadline = time.monotonic() + args.timeout_s
    while len(latencies) < args.expect and time.monotonic() < deadline:
        polled = consumer.poll(timeout_ms=100, max_records=2000)
        now = time.time()
        latencies += [now - r.timestamp / 1000 for records in polled.values() for r in records]
    consumer.close(autocommit=False)
    lat = np.array(latencies) if latencies else np.array([np.nan])
    print(json.dumps({"readings": len(latencies), "p50_ms": round(float(np.percentile(lat, 50)) * 1000, 1),
                      "p99_ms": round(float(np.percentile(lat, 99)) * 1000, 1),
                      "max_ms": round(float(lat.max()) * 1000, 1)}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
