"""The Bytewax baseline of ``bench.stream``: a per-sensor EWMA job on the same topic, one worker.

Run by ``bench.stream`` in a subprocess (so Bytewax's runtime and ours never share
a process), or by hand::

    python -m bench.stream_bytewax --bootstrap-servers 127.0.0.1:9092 --topic T --expect 80000

The dataflow is what a Bytewax user would write for the job: Bytewax's own
Kafka source (confluent-kafka, ``tail=False`` so the bounded topic ends the run),
``orjson`` decoding, ``key_on`` the sensor id, a ``stateful_map`` keeping an EWMA
mean and variance of the 12 measurements per sensor (a z-score per reading), and
a sink that counts. Throughput is readings / (last - first reading seen by the
sink), like ours (first to last ``processed_at``), so start-up is not counted.
Prints one JSON line: ``{"readings": n, "per_s": rate}``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from typing import Any

import orjson

from ingest.schema import MEASUREMENTS

ALPHA = 0.01  # the same order as the stream's EWMA z-score detector


def ewma_step(state: tuple[list[float], list[float]] | None, doc: dict[str, Any]):
    """One reading into a sensor's (mean, variance) per measurement; emits the largest |z|."""
    values = [float(doc[name]) for name in MEASUREMENTS]
    if state is None:
        return (values, [0.0] * len(values)), 0.0
    mean, var = state
    z_max = 0.0
    for j, x in enumerate(values):
        d = x - mean[j]
        if var[j] > 0:
            z_max = max(z_max, abs(d) / math.sqrt(var[j]))
        mean[j] += ALPHA * d
        var[j] = (1 - ALPHA) * (var[j] + ALPHA * d * d)
    return (mean, var), z_max


def build_flow(bootstrap_servers: str, topic: str, counter: dict[str, float]):
    import bytewax.operators as op
    from bytewax.connectors.kafka import KafkaSource
    from bytewax.dataflow import Dataflow
    from bytewax.outputs import DynamicSink, StatelessSinkPartition

    class CountingPartition(StatelessSinkPartition):
        def write_batch(self, items: list) -> None:
            now = time.perf_counter()
            if not counter["n"]:
                counter["first"] = now
            counter["n"] += len(items)
            counter["last"] = now

    class CountingSink(DynamicSink):
        def build(self, step_id: str, worker_index: int, worker_count: int) -> CountingPartition:
            return CountingPartition()

    flow = Dataflow("bench_ewma")
    messages = op.input("kafka", flow, KafkaSource([bootstrap_servers], [topic], tail=False))
    docs = op.map("decode", messages, lambda m: orjson.loads(m.value))
    keyed = op.key_on("by_sensor", docs, lambda d: d["sensor_id"])
    scores = op.stateful_map("ewma", keyed, ewma_step)
    op.output("count", scores, CountingSink())
    return flow


def run(bootstrap_servers: str, topic: str) -> dict[str, float]:
    from bytewax.testing import run_main

    counter = {"n": 0, "first": 0.0, "last": 0.0}
    # run_main: one worker in this thread (what ``python -m bytewax.run -w 1`` runs).
    run_main(build_flow(bootstrap_servers, topic, counter))
    span = counter["last"] - counter["first"]
    return {"readings": counter["n"], "per_s": counter["n"] / span if span > 0 else 0.0}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap-servers", required=True)
    parser.add_argument("--topic", required=True)
    args = parser.parse_args(argv)
    print(json.dumps(run(args.bootstrap_servers, args.topic)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
