"""MQTT -> Kafka bridge throughput, beside a bare paho-mqtt subscriber, in the same run.

Both drain the same backlog: N readings published at QoS 1 to mosquitto (Debian's
binary, started here on a free port) while their persistent sessions were
disconnected, so the broker has them queued. Ours: :class:`ingest.mqtt_bridge.MqttBridge`
receives, validates, produces to the embedded Kafka broker and acknowledges each
message only once Kafka accepted it. Baseline: a bare paho-mqtt client on a persistent
session that only receives (paho acknowledges at once). Each round times both, one
after the other; the headline is the median over rounds of ours / baseline.

    python -m bench.mqtt_bridge            # writes bench/results/mqtt_bridge.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import paho.mqtt.client as mqtt

from ingest.broker import EmbeddedBroker, ensure_topics
from ingest.mqtt_bridge import MqttBridge
from ingest.settings import MqttSettings, load_settings
from ingest.simulator import FleetSimulator
from tests.mqtt_support import Mosquitto

RESULTS = Path(__file__).resolve().parent / "results"
TOPIC = "sensors/+/reading"


def backlog(port: int, messages: list[tuple[str, bytes]]) -> None:
    """Publish every message at QoS 1 and wait for the broker's acknowledgements."""
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="bench-publisher", protocol=mqtt.MQTTv311)
    client.max_inflight_messages_set(1000)
    client.max_queued_messages_set(0)
    client.connect("127.0.0.1", port)
    client.loop_start()
    try:
        for info in [client.publish(topic, payload, qos=1) for topic, payload in messages]:
            info.wait_for_publish(timeout=120)
    finally:
        client.loop_stop()
        client.disconnect()


def bare_session(port: int, client_id: str, on_message=None) -> mqtt.Client:
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=False,
                         protocol=mqtt.MQTTv311)
    subscribed = threading.Event()
    client.on_connect = lambda c, *_: c.subscribe(TOPIC, 1)
    client.on_subscribe = lambda *_: subscribed.set()
    if on_message:
        client.on_message = on_message
    client.connect("127.0.0.1", port)
    client.loop_start()
    subscribed.wait(10)
    return client


def drain_bare(port: int, client_id: str, n: int) -> float:
    """Readings per second a bare subscriber receives from its queued session."""
    count = [0]
    done = threading.Event()

    def on_message(*_) -> None:
        count[0] += 1
        if count[0] >= n:
            done.set()

    started = time.perf_counter()
    client = bare_session(port, client_id, on_message)
    done.wait(300)
    elapsed = time.perf_counter() - started
    client.loop_stop()
    client.disconnect()
    if count[0] < n:
        raise RuntimeError(f"bare subscriber received {count[0]} of {n}")
    return n / elapsed


def drain_bridge(config: MqttSettings, kafka, bootstrap: str, n: int) -> float:
    """Readings per second the bridge takes from its queued session into Kafka (acknowledged)."""
    bridge = MqttBridge(config, kafka, bootstrap)
    started = time.perf_counter()
    bridge.start()
    try:
        deadline = time.monotonic() + 300
        while bridge.settled < n and time.monotonic() < deadline:
            bridge.step(timeout_s=0.01)
        elapsed = time.perf_counter() - started
        settled = bridge.settled
    finally:
        bridge.close()
    if settled < n:
        raise RuntimeError(f"the bridge took {settled} of {n} into Kafka")
    return n / elapsed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--readings", type=int, default=10_000, help="readings per round")
    parser.add_argument("--sensors", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)

    base = load_settings(environ={})
    config = base.simulator.model_copy(update={"sensors": args.sensors, "rate": float(args.sensors),
                                               "dropout_probability": 0.0})
    messages = []
    for batch in FleetSimulator(config, start_time=1_700_000_000.0).batches(batch_size=2_000,
                                                                          duration_s=args.readings / args.sensors):
        for key, value in zip(batch.keys(), batch.wire_messages(), strict=True):
            messages.append((f"sensors/{key.decode()}/reading", value))
    messages = messages[:args.readings]
    n = len(messages)
    ours, theirs = [], []
    with tempfile.TemporaryDirectory() as tmp, Mosquitto(Path(tmp)) as broker_mqtt, EmbeddedBroker() as kafka_broker:
        for round_ in range(args.rounds):
            kafka = base.kafka.model_copy(update={"topic": f"bench_mqtt_{round_}",
                                                  "dlq_topic": f"bench_mqtt_{round_}.dlq"})
            ensure_topics(kafka_broker.bootstrap_servers, kafka)
            bridge_config = MqttSettings(port=broker_mqtt.port, topics=[TOPIC], metrics_port=0,
                                         client_id=f"bench-bridge-{round_}")
            bare_id = f"bench-bare-{round_}"
            # Both sessions exist (subscribed, then disconnected) before the backlog is published.
            drain_bridge_session = MqttBridge(bridge_config, kafka, kafka_broker.bootstrap_servers)
            drain_bridge_session.start()
            time.sleep(0.5)
            drain_bridge_session.close()
            client = bare_session(broker_mqtt.port, bare_id)
            client.loop_stop()
            client.disconnect()
            backlog(broker_mqtt.port, messages)
            theirs.append(drain_bare(broker_mqtt.port, bare_id, n))
            ours.append(drain_bridge(bridge_config, kafka, kafka_broker.bootstrap_servers, n))
            print(f"round {round_ + 1}: bare paho-mqtt {theirs[-1]:,.0f}/s, bridge to Kafka {ours[-1]:,.0f}/s "
                  f"({ours[-1] / theirs[-1]:.2f})", flush=True)
    paired = sorted(o / t for o, t in zip(ours, theirs, strict=True))
    ratio = statistics.median(paired)
    result = {
        "command": "python -m bench.mqtt_bridge" + (f" {' '.join(argv)}" if argv else ""),
        "measured_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "readings_per_round": n,
        "sensors": args.sensors,
        "rounds": args.rounds,
        "bridge_per_s": round(statistics.median(ours)),
        "bare_paho_subscriber_per_s": round(statistics.median(theirs)),
        "ratio": round(ratio, 3),
        "ratio_per_round": [round(r, 3) for r in paired],
        "runs": {"bridge": [round(x) for x in ours], "bare_paho_subscriber": [round(x) for x in theirs]},
        "mosquitto": {"max_inflight_messages": 1000, "qos": 1},
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "mqtt_bridge.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"bridge {result['bridge_per_s']:,} readings/s into Kafka vs bare paho-mqtt subscriber "
          f"{result['bare_paho_subscriber_per_s']:,}/s; ratio {ratio:.2f} (median of rounds)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
