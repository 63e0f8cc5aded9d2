"""The simulator, CSV replay and the producer against the real embedded broker, read back with kafka-python."""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter

import orjson
import pytest
from kafka import KafkaConsumer, TopicPartition

from cluster.cli import main as smoke
from ingest.broker import EmbeddedBroker, ensure_topics
from ingest.kaggle_generator import write_kaggle_csv
from ingest.producer import ReadingProducer, replay_csv_to_kafka, simulate_to_kafka
from ingest.settings import KafkaSettings, SimulatorSettings
from ingest.simulator import FleetSimulator, read_incident_log
from ingest.validation import validate_messages

pytestmark = pytest.mark.integration
START = 1_700_000_000.0


def consume(bootstrap: str, kafka: KafkaSettings, expected: int, timeout_s: float = 30.0):
    """Every message of the readings topic from the beginning: (partition, key, value) in partition order.

    Counts until ``expected`` arrived (never trusting ``end_offsets()``, which under-reports on
    Tansu), then polls a little longer so that duplicates would show.
    """
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None,
                             auto_offset_reset="earliest", consumer_timeout_ms=1_000)
    parts = [TopicPartition(kafka.topic, p) for p in range(kafka.partitions)]
    consumer.assign(parts)
    consumer.seek_to_beginning(*parts)
    out: list[tuple[int, bytes, bytes]] = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(out) < expected and time.monotonic() < deadline:
            for tp, records in consumer.poll(timeout_ms=500).items():
                out.extend((tp.partition, r.key, r.value) for r in records)
        for tp, records in consumer.poll(timeout_ms=300).items():
            out.extend((tp.partition, r.key, r.value) for r in records)
    finally:
        consumer.close()
    return out


def test_simulated_fleet_arrives_whole_keyed_and_valid(settings, broker, tmp_path):
    config = settings.simulator.model_copy(update={"seed": 12, "incidents_per_sensor_hour": 12,
                                                   "stuck_sensor_share": 0.05})
    settings = settings.model_copy(update={"simulator": config})
    log_path = tmp_path / "incidents.jsonl"
    report = simulate_to_kafka(settings, broker.bootstrap_servers, 300, sensors=40, rate=40, fast=True,
                               start_time=START, incident_log=log_path)
    # The same seed offline gives what must have been sent.
    expected_sim = FleetSimulator(config.model_copy(update={"sensors": 40, "rate": 40}), start_time=START)
    expected = [(k, m) for b in expected_sim.batches(duration_s=300) for k, m in zip(b.keys(), b.messages(),
                                                                                    strict=True)]
    assert report.failed == 0 and report.delivered == len(expected) == 40 * 300 - report.dropped
    got = consume(broker.bootstrap_servers, settings.kafka, len(expected))
    assert Counter((k, v) for _, k, v in got) == Counter(expected)  # nothing lost, nothing duplicated
    batch = validate_messages([v for _, _, v in got])
    assert not batch.rejected
    assert [k.decode() for _, k, _ in got] == batch.sensor_ids
    partitions_of = {}
    for partition, key, _ in got:
        assert partitions_of.setdefault(key, partition) == partition, "one sensor, one partition"
    # The ground-truth log lists exactly the incidents the run injected.
    logged = read_incident_log(log_path)
    assert logged == expected_sim.incidents and report.incidents == len(logged) > 0
    assert {i.sensor_id for i in logged} <= set(batch.sensor_ids)


def test_replayed_csv_arrives_in_order_per_sensor_with_its_bad_rows_for_the_dlq(settings, broker, tmp_path):
    made = write_kaggle_csv(tmp_path / "smoke.csv", rows=1_500, seed=4, bad_rows=5)
    report = replay_csv_to_kafka(settings, broker.bootstrap_servers, tmp_path / "smoke.csv", fast=True,
                                 sensors=2, start_time=START)
    assert report.delivered == 1_500 and report.failed == 0
    got = consume(broker.bootstrap_servers, settings.kafka, 1_500)
    assert len(got) == 1_500
    batch = validate_messages([v for _, _, v in got])
    assert sorted(p.reason for problems in batch.rejected.values() for p in problems) == \
        sorted(made.bad_rows.values())
    for key in {k for _, k, _ in got}:
        times = [orjson.loads(v)["timestamp"] for _, k, v in got if k == key]
        numeric = [t for t in times if isinstance(t, float)]
        assert numeric == sorted(numeric), "per sensor, readings keep their order"


def test_undeliverable_readings_are_resent_then_counted_as_failed_with_one_log_line(caplog):
    config = SimulatorSettings(delivery_attempts=2, retry_backoff_ms=20, delivery_timeout_s=1.0, linger_ms=0)
    kafka = KafkaSettings(topic="lonely", partitions=1)
    with EmbeddedBroker() as private:
        ensure_topics(private.bootstrap_servers, kafka)
        producer = ReadingProducer(private.bootstrap_servers, kafka.topic, config)
        producer.send([b"s-1"], [b'{"warm": "up"}'])
        producer.flush(timeout_s=10)
    # The broker is gone: every send times out, is resent once, then fails.
    from ingest.producer import publish

    with caplog.at_level(logging.ERROR, logger="ingest.producer"):
        report = publish(producer, [([b"s-1"] * 3, [b"{}"] * 3)])
    producer._producer.close(timeout=1)
    assert (report.delivered, report.failed, report.resent) == (1, 3, 3)
    assert report.last_error and "Timeout" in report.last_error
    errors = [r for r in caplog.records if r.levelno == logging.ERROR and r.name == "ingest.producer"]
    assert len(errors) == 1 and "3 of 3 readings could not be delivered" in errors[0].getMessage()


def test_readings_sent_while_the_broker_restarts_are_resent_and_arrive_once():
    config = SimulatorSettings(delivery_attempts=5, retry_backoff_ms=200, delivery_timeout_s=1.0, linger_ms=0)
    kafka = KafkaSettings(topic="blip", partitions=1)
    first = EmbeddedBroker().start()
    second = EmbeddedBroker(port=first.port)
    try:
        ensure_topics(first.bootstrap_servers, kafka)
        producer = ReadingProducer(first.bootstrap_servers, kafka.topic, config)
        producer.send([b"s-1"], [b'{"n": 0}'])
        producer.flush(timeout_s=10)
        first.stop()  # memory only: the restarted broker knows neither the topic nor the producer id
        producer.send([b"s-1"] * 5, [b'{"n": %d}' % n for n in range(1, 6)])
        time.sleep(1.2)
        second.start()
        ensure_topics(second.bootstrap_servers, kafka)
        producer.close()
        assert (producer.report.delivered, producer.report.failed) == (6, 0)
        assert producer.report.resent >= 5
        got = consume(second.bootstrap_servers, kafka, 5)
        assert sorted(orjson.loads(v)["n"] for _, _, v in got) == [1, 2, 3, 4, 5]
    finally:
        first.stop()
        second.stop()


def test_cli_simulate_and_replay_against_a_given_broker(settings, broker, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SMOKE_KAFKA__TOPIC", settings.kafka.topic)
    monkeypatch.setenv("SMOKE_KAFKA__PARTITIONS", str(settings.kafka.partitions))
    monkeypatch.setenv("SMOKE_SIMULATOR__OUT_DIR", str(tmp_path / "sim"))
    assert smoke(["simulate", "--bootstrap-servers", broker.bootstrap_servers, "--sensors", "10", "--rate", "20",
                  "--duration", "5", "--fast", "--seed", "3"]) == 0
    assert f"readings to {settings.kafka.topic}" in capsys.readouterr().out
    assert smoke(["sample-csv", str(tmp_path / "s.csv"), "--rows", "200", "--seed", "1"]) == 0
    assert smoke(["replay", str(tmp_path / "s.csv"), "--fast", "--bootstrap-servers", broker.bootstrap_servers]) == 0
    out = capsys.readouterr().out
    assert "200 readings to " + settings.kafka.topic in out
    got = consume(broker.bootstrap_servers, settings.kafka, 300)
    assert 295 <= len(got) <= 300
    assert list((tmp_path / "sim").glob("incidents-*.jsonl"))


def test_a_detached_simulator_stopped_with_sigterm_flushes_and_reports(settings, broker, tmp_path):
    env = {**os.environ, "SMOKE_KAFKA__TOPIC": settings.kafka.topic,
           "SMOKE_KAFKA__PARTITIONS": str(settings.kafka.partitions),
           "SMOKE_SIMULATOR__DROPOUT_PROBABILITY": "0", "SMOKE_RAY__RUN_DIR": str(tmp_path / "run")}
    process = subprocess.Popen(
        [sys.executable, "-m", "cluster.cli", "simulate", "--bootstrap-servers", broker.bootstrap_servers,
         "--sensors", "50", "--rate", "200", "--time-scale", "1", "--incident-log", str(tmp_path / "i.jsonl")],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while not consume(broker.bootstrap_servers, settings.kafka, 1, timeout_s=1):
            assert time.monotonic() < deadline and process.poll() is None, process.stderr.read()
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, err
    sent = int(re.search(r"([\d,]+) readings to", out).group(1).replace(",", ""))
    assert sent > 0
    assert len(consume(broker.bootstrap_servers, settings.kafka, sent)) == sent


def test_cli_load_reports_and_fails_clearly(tmp_path, capsys):
    write_kaggle_csv(tmp_path / "s.csv", rows=500, seed=1, bad_rows=2)
    assert smoke(["load", str(tmp_path / "s.csv"), "--lake", str(tmp_path / "lake")]) == 0
    assert "498 rows into the lake, 2 rejected" in capsys.readouterr().out
    (tmp_path / "wrong.csv").write_text("a,b\n1,2\n")
    assert smoke(["load", str(tmp_path / "wrong.csv"), "--lake", str(tmp_path / "lake")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not the Kaggle smoke CSV header" in err[0]
