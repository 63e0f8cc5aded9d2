"""The MQTT -> Kafka bridge against a real mosquitto and the real embedded broker.

Readings arrive in Kafka as sent (none lost), malformed payloads land in the DLQ with
their reason and MQTT topic, and neither a kill -9 of the bridge nor a restart of the
MQTT broker loses a reading (duplicates then, recognisable by sensor id and time).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path

import orjson
import paho.mqtt.client as mqtt
import pytest
from kafka import KafkaConsumer, TopicPartition

from ingest.broker import free_port
from ingest.mqtt_bridge import MqttBridge, reading_of_payload, sensor_id_of_topic
from ingest.schema import FIELDS
from ingest.settings import MqttSettings
from tests.mqtt_support import Mosquitto

REPO = Path(__file__).resolve().parent.parent
T0 = 1_796_000_000.0  # 2026-11


def reading(i: int, devices: int = 100) -> tuple[str, dict]:
    """The i-th reading of a fleet of ``devices``: distinct per (device, time), every value in range."""
    device = f"esp32-{i % devices:03d}"
    doc = {"timestamp": T0 + i, **{f.name: max(f.low, min(f.high, f.low + 1 + (i % 97) * 0.5)) for f in FIELDS}}
    doc["eco2_ppm"] = 400.0 + i % 50
    return device, doc


def publisher(port: int, client_id: str) -> mqtt.Client:
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv311)
    client.max_inflight_messages_set(1000)
    client.max_queued_messages_set(0)
    client.connect("127.0.0.1", port)
    client.loop_start()
    return client


def publish(client: mqtt.Client, messages: list[tuple[str, bytes]]) -> None:
    """Publish at QoS 1 and wait until the broker acknowledged every message."""
    infos = [client.publish(topic, payload, qos=1) for topic, payload in messages]
    for info in infos:
        info.wait_for_publish(timeout=60)
        assert info.is_published()


def read_topic(bootstrap: str, topic: str, until, timeout_s: float = 60.0) -> list:
    """Every record of ``topic`` (all partitions, from the beginning) once ``until(records)`` holds."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest")
    try:
        parts = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        consumer.assign(parts)
        consumer.seek_to_beginning(*parts)
        records: list = []
        deadline = time.monotonic() + timeout_s
        while not until(records) and time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=200, max_records=10_000).values():
                records.extend(batch)
        return records
    finally:
        consumer.close(autocommit=False)


def identity(record) -> tuple[str, float]:
    doc = orjson.loads(record.value)
    return doc["sensor_id"], doc["timestamp"]


def bridge_config(port: int, **changes) -> MqttSettings:
    return MqttSettings(port=port, topics=["sensors/+/reading"], sensor_id_level=1, metrics_port=0,
                        client_id=f"bridge-{os.urandom(3).hex()}", **changes)


@pytest.fixture
def readings_count(request) -> int:
    """The issue's 10,000 readings with --full; 2,000 (the same 100 devices) in the default suite."""
    return 10_000 if request.config.getoption("--full") else 2_000


@pytest.fixture
def mosquitto(tmp_path):
    with Mosquitto(tmp_path / "mqtt") as running:
        yield running


@pytest.fixture
def running_bridge(mosquitto, kafka_settings, broker):
    config = bridge_config(mosquitto.port)
    bridge = MqttBridge(config, kafka_settings, broker.bootstrap_servers)
    bridge.start()
    stop = threading.Event()
    thread = threading.Thread(target=bridge.run, args=(stop,), daemon=True)
    thread.start()
    yield bridge
    stop.set()
    thread.join(30)


def test_topic_and_payload_identities():
    assert sensor_id_of_topic("sites/lab/sensors/esp32-7/reading", 3) == "esp32-7"
    assert sensor_id_of_topic("sensors//reading", 1) is None
    same, problems = reading_of_payload({"sensor_id": "a", "UTC": 1.0}, "a")
    assert same == {"sensor_id": "a", "timestamp": 1.0} and problems == []
    assert reading_of_payload([1], "a") == ([1], [])


def test_readings_of_100_devices_arrive_as_sent_and_malformed_ones_in_the_dlq(mosquitto, running_bridge,
                                                                               kafka_settings, broker,
                                                                               readings_count):
    sent = {}
    messages = []
    for i in range(readings_count):
        device, doc = reading(i)
        sent[(device, doc["timestamp"])] = doc
        messages.append((f"sensors/{device}/reading", orjson.dumps(doc)))
    # The original project's field names and the Kaggle headers are readings too.
    kaggle = {"": 7, "UTC": T0 - 1, "CNT": 7, "Fire Alarm": 0,
              **{f.kaggle: sent[next(iter(sent))][f.name] for f in FIELDS}}
    seed = {"timestamp": T0 - 2, **{f.seed: sent[next(iter(sent))][f.name] for f in FIELDS}}
    messages[readings_count // 2:readings_count // 2] = [("sensors/kaggle-1/reading", orjson.dumps(kaggle)),
                           ("sensors/seed-1/reading", orjson.dumps(seed))]
    good = {**seed, "timestamp": T0 - 3}
    malformed = {
        "sensors/bad-json/reading": (b"{not json", "not_json"),
        "sensors/bad-field/reading": (orjson.dumps({k: v for k, v in good.items() if k != "Humidity"}),
                                      "missing_field"),
        "sensors/bad-time/reading": (orjson.dumps({**good, "timestamp": "2026-12-02 05:20:51"}), "bad_timestamp"),
        "sensors/bad-id/reading": (orjson.dumps({**good, "sensor_id": "someone-else"}), "bad_sensor_id"),
        "sensors/bad-range/reading": (orjson.dumps({**good, "Temperature": 900.0}), "out_of_range"),
        "sensors/bad-size/reading": (b" " * 70_000 + orjson.dumps(good), "too_large"),
    }
    for k, (topic, (payload, _)) in enumerate(malformed.items()):
        messages.insert(100 + k * (readings_count // 7), (topic, payload))
    client = publisher(mosquitto.port, "test-publisher")
    try:
        publish(client, messages)
    finally:
        client.loop_stop()
        client.disconnect()

    records = read_topic(broker.bootstrap_servers, kafka_settings.topic, lambda r: len(r) >= len(sent) + 2)
    assert len(records) == len(sent) + 2
    arrived = {identity(r): orjson.loads(r.value) for r in records}
    assert len(arrived) == len(records)  # no duplicate without a restart
    for key, doc in sent.items():
        assert arrived[key] == {"sensor_id": key[0], **doc}
    assert all(r.key.decode() == identity(r)[0] for r in records)
    assert arrived[("kaggle-1", T0 - 1)]["temperature_c"] == kaggle["Temperature[C]"]
    assert ("seed-1", T0 - 2) in arrived

    dead = read_topic(broker.bootstrap_servers, kafka_settings.dlq_topic, lambda r: len(r) >= len(malformed))
    assert len(dead) == len(malformed)
    by_topic = {dict(r.headers)["mqtt_topic"].decode(): r for r in dead}
    for topic, (payload, reason) in malformed.items():
        headers = dict(by_topic[topic].headers)
        assert reason in headers["reason"].decode().split(","), (topic, headers)
        assert int(headers["source_size"]) == len(payload)
        assert by_topic[topic].value == payload[:64 * 1024]

    metrics = urllib.request.urlopen(f"http://127.0.0.1:{running_bridge.http_port}/metrics").read().decode()
    assert f"smoke_mqtt_forwarded_total {float(len(sent) + 2)}" in metrics
    assert f"smoke_mqtt_received_total {float(len(messages))}" in metrics
    assert 'smoke_mqtt_rejected_total{reason="not_json"} 1.0' in metrics
    health = json.load(urllib.request.urlopen(f"http://127.0.0.1:{running_bridge.http_port}/health"))
    assert health["status"] == "ok" and health["pending"] == 0


def test_broker_restart_the_bridge_reconnects_and_loses_nothing(tmp_path, kafka_settings, broker, readings_count):
    with Mosquitto(tmp_path / "mqtt") as mosquitto:
        config = bridge_config(mosquitto.port, reconnect_max_delay_s=1.0)
        bridge = MqttBridge(config, kafka_settings, broker.bootstrap_servers)
        bridge.start()
        stop = threading.Event()
        thread = threading.Thread(target=bridge.run, args=(stop,), daemon=True)
        thread.start()
        try:
            docs = [reading(i) for i in range(readings_count)]
            half = readings_count // 2
            client = publisher(mosquitto.port, "pub-1")
            publish(client, [(f"sensors/{d}/reading", orjson.dumps(doc)) for d, doc in docs[:half]])
            client.loop_stop()
            client.disconnect()
            mosquitto.stop()
            # The bridge learns of the lost connection from its network loop: wait for it, a few seconds at most.
            deadline = time.monotonic() + 10
            while True:
                health = json.load(_get(f"http://127.0.0.1:{bridge.http_port}/health"))
                if health["status"] == "degraded" or time.monotonic() > deadline:
                    break
                time.sleep(0.1)
            assert health["status"] == "degraded" and "disconnected" in health["causes"][0]
            mosquitto.start()
            client = publisher(mosquitto.port, "pub-2")
            publish(client, [(f"sensors/{d}/reading", orjson.dumps(doc)) for d, doc in docs[half:]])
            client.loop_stop()
            client.disconnect()
            expected = {(d, doc["timestamp"]) for d, doc in docs}
            records = read_topic(broker.bootstrap_servers, kafka_settings.topic,
                                 lambda r: {identity(x) for x in r} >= expected)
            assert {identity(r) for r in records} == expected
            assert bridge.metrics.reconnects._value.get() >= 2
        finally:
            stop.set()
            thread.join(30)


def _get(url: str):
    try:
        return urllib.request.urlopen(url)
    except urllib.error.HTTPError as err:  # 503 while degraded: the body says why
        return err


def test_kill_9_of_the_bridge_mid_stream_loses_nothing(mosquitto, kafka_settings, broker, tmp_path, readings_count):
    client_id = f"bridge-{os.urandom(3).hex()}"
    env = {**os.environ, "SMOKE_MQTT__PORT": str(mosquitto.port), "SMOKE_MQTT__CLIENT_ID": client_id,
           "SMOKE_MQTT__METRICS_PORT": str(free_port()), "SMOKE_KAFKA__TOPIC": kafka_settings.topic,
           "SMOKE_KAFKA__DLQ_TOPIC": kafka_settings.dlq_topic, "PYTHONPATH": str(REPO)}
    command = [sys.executable, "-m", "cluster.cli", "bridge", "mqtt", "--bootstrap-servers",
               broker.bootstrap_servers]

    log = tmp_path / "bridge.log"

    def start_bridge() -> subprocess.Popen:
        # Output to a file: a pipe nobody reads could fill and stall the bridge.
        with open(log, "a") as out:
            process = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 120
        while f"bridging mqtt://127.0.0.1:{mosquitto.port}" not in log.read_text().split("killed")[-1]:
            assert process.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        return process

    bridge = start_bridge()
    docs = [reading(i) for i in range(readings_count)]
    expected = {(d, doc["timestamp"]) for d, doc in docs}
    client = publisher(mosquitto.port, "pub-kill")
    try:
        publishing = threading.Thread(target=publish, args=(client, [
            (f"sensors/{d}/reading", orjson.dumps(doc)) for d, doc in docs]))
        publishing.start()
        before = read_topic(broker.bootstrap_servers, kafka_settings.topic, lambda r: len(r) >= readings_count // 4)
        assert readings_count // 4 <= len(before) < readings_count  # killed mid-stream
        os.kill(bridge.pid, signal.SIGKILL)
        bridge.wait(10)
        with open(log, "a") as out:
            out.write("killed\n")
        publishing.join(120)
        bridge = start_bridge()
        records = read_topic(broker.bootstrap_servers, kafka_settings.topic,
                             lambda r: {identity(x) for x in r} >= expected, timeout_s=120)
        seen = Counter(identity(r) for r in records)
        assert set(seen) == expected
        # Duplicates come only from the kill: what Kafka had taken but MQTT had not been told.
        duplicates = sum(n - 1 for n in seen.values())
        assert duplicates <= readings_count // 2
    finally:
        client.loop_stop()
        client.disconnect()
        bridge.send_signal(signal.SIGTERM)
        bridge.wait(30)


def test_smoke_up_part_starts_the_bridge_and_status_tells_its_health(mosquitto, kafka_settings, broker, tmp_path,
                                                                     monkeypatch):
    from cluster.health import check_mqtt_bridge
    from cluster.processes import session_pids, stop_session
    from cluster.stack import StackError, UpOptions, start_mqtt_bridge
    from cluster.stack_state import StackState
    from ingest.progress import Steps
    from ingest.settings import load_settings

    for name, value in {"SMOKE_MQTT__PORT": mosquitto.port, "SMOKE_MQTT__METRICS_PORT": free_port(),
                        "SMOKE_MQTT__CLIENT_ID": f"up-{os.urandom(3).hex()}",
                        "SMOKE_KAFKA__TOPIC": kafka_settings.topic,
                        "SMOKE_KAFKA__DLQ_TOPIC": kafka_settings.dlq_topic, "SMOKE_RAY__RUN_DIR": tmp_path / "var",
                        "PYTHONPATH": REPO}.items():
        monkeypatch.setenv(name, str(value))
    settings = load_settings()
    state = StackState(bootstrap_servers=broker.bootstrap_servers)
    with Steps() as steps, steps.step("mqtt_bridge") as step:
        start_mqtt_bridge(settings, state, UpOptions(), step)
    try:
        assert session_pids(state.bridge_pid)
        check = check_mqtt_bridge(state)
        assert check.healthy, check.detail
        mosquitto.stop()
        deadline = time.monotonic() + 30
        while check_mqtt_bridge(state).healthy and time.monotonic() < deadline:
            time.sleep(0.2)
        down = check_mqtt_bridge(state)
        assert down.healthy is False and "disconnected" in down.detail, down.detail
    finally:
        stop_session(state.bridge_pid, grace_s=10.0)
    assert not state.bridge_running()
    assert check_mqtt_bridge(state).healthy is False  # gone: not silently ok
    # No MQTT broker at all: `smoke up` says why the part is missing, in one line.
    monkeypatch.setenv("SMOKE_MQTT__PORT", str(free_port()))
    refused = "did not start: smoke bridge mqtt: cannot connect to the MQTT broker"
    with pytest.raises(StackError, match=refused), Steps() as steps, steps.step("mqtt_bridge") as step:
        start_mqtt_bridge(load_settings(), StackState(bootstrap_servers=broker.bootstrap_servers), UpOptions(), step)
