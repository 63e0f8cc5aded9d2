"""The worker's reader (confluent-kafka) against the real embedded broker.

What the loop relies on: records by partition in offset order with the broker
timestamp and key, a poll that returns as soon as records are there, positions only
where we put them, the cached high watermark, and offsets committed under the group
id that standard tools (here kafka-python) read back, also when the reader closes
right after committing.
"""

from __future__ import annotations

import time

from confluent_kafka import KafkaError
from kafka import KafkaConsumer, TopicPartition

from actors.partition_reader import PartitionReader
from actors.worker import StreamLoop
from tests.stream_support import produce, reading


def _poll_until(reader: PartitionReader, count: int, timeout_s: float = 20.0) -> dict[int, list]:
    got: dict[int, list] = {}
    deadline = time.monotonic() + timeout_s
    while sum(len(v) for v in got.values()) < count and time.monotonic() < deadline:
        for p, records in reader.poll(100, 500).items():
            got.setdefault(p, []).extend(zip(records.offsets.tolist(), records.values,
                                             [records.key(i) for i in range(len(records))],
                                             [records.timestamp_ms(i) for i in range(len(records))], strict=True))
    return got


def _kafka_python_committed(bootstrap: str, group_id: str, topic: str, partitions: list[int]) -> dict[int, int]:
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group_id, enable_auto_commit=False)
    try:
        return {p: consumer.committed(TopicPartition(topic, p), timeout_ms=5000) for p in partitions}
    finally:
        consumer.close(autocommit=False)


def test_reader_polls_by_partition_seeks_and_commits_under_the_group(kafka_settings) -> None:
    bootstrap, topic, group = kafka_settings.bootstrap_servers, kafka_settings.topic, kafka_settings.group_id
    items = [(f"pr-{i % 6}".encode(), reading(f"pr-{i % 6}", 1_780_000_000.0 + i, i)) for i in range(600)]
    sent_at_ms = time.time() * 1000
    produce(bootstrap, topic, items)
    reader = PartitionReader(bootstrap, topic, group, "reader-test")
    try:
        assert reader.highwater(0) is None, "no fetch yet: nothing known"
        assert reader.committed(0) is None
        reader.assign({0: None, 1: None, 2: None, 3: None})
        got = _poll_until(reader, 600)
        assert sum(len(v) for v in got.values()) == 600
        for p, rows in got.items():
            offsets = [r[0] for r in rows]
            assert offsets == list(range(len(rows))), f"partition {p}: every offset once, in order"
            assert all(r[1] is not None and r[2] is not None for r in rows)
            assert all(abs(r[3] - sent_at_ms) < 120_000 for r in rows), "broker timestamps in ms"
            assert reader.highwater(p) == len(rows)
        by_value = {v: k for k, v in items}
        assert all(by_value[r[1]] == r[2] for rows in got.values() for r in rows), "keys travel with values"

        # Positions only where we put them: an offset, and the beginning again.
        reader.assign({0: 3})
        again = _poll_until(reader, len(got[0]) - 3)
        assert [r[0] for r in again[0]] == list(range(3, len(got[0])))
        reader.seek_to_beginning(0)
        again = _poll_until(reader, len(got[0]))
        assert [r[0] for r in again[0]] == list(range(len(got[0])))

        # A poll returns as soon as a record is there, not when its timeout is over.
        reader.assign({p: len(rows) for p, rows in got.items()})
        assert reader.poll(200, 500) == {}
        produce(bootstrap, topic, [(b"pr-0", reading("pr-0", 1_780_001_000.0))])
        started = time.monotonic()
        polled: dict = {}
        while not polled and time.monotonic() - started < 10:
            polled = reader.poll(2_000, 500)
        assert polled and time.monotonic() - started < 1.5

        # Commits: answered through a later poll, read back by the reader and by kafka-python.
        answers: list = []
        reader.commit({0: 5}, lambda offsets, error: answers.append((offsets, error)))
        deadline = time.monotonic() + 10
        while not answers and time.monotonic() < deadline:
            reader.poll(100, 500)
        assert answers == [({0: 5}, None)]
        assert reader.committed(0) == 5
        # Closing right after a commit still delivers it.
        reader.commit({1: 7, 2: 9}, lambda offsets, error: None)
    finally:
        reader.close()
    assert _kafka_python_committed(bootstrap, group, topic, [0, 1, 2, 3]) == {0: 5, 1: 7, 2: 9, 3: None}


def test_checkpoint_commits_the_next_offsets_where_lag_tools_read_them(settings) -> None:
    bootstrap, kafka = settings.kafka.bootstrap_servers, settings.kafka
    produce(bootstrap, kafka.topic,
            [(f"lc-{i % 5}".encode(), reading(f"lc-{i % 5}", 1_780_000_000.0 + i, i)) for i in range(200)])
    loop = StreamLoop(settings, bootstrap, "lag-check")
    try:
        loop.set_partitions([0, 1, 2, 3])
        deadline = time.monotonic() + 60
        while loop.totals["processed"] < 200:
            loop.step()
            assert time.monotonic() < deadline, loop.status()
        loop.checkpoint()
        expected = {p: s.next_offset for p, s in loop.states.items() if s.next_offset}
        deadline = time.monotonic() + 10
        while any(loop.states[p].committed_to_kafka != o for p, o in expected.items()):
            loop.step()  # the broker's answer arrives through the reader's poll
            assert time.monotonic() < deadline, "commit never confirmed"
    finally:
        loop.shutdown()
    committed = _kafka_python_committed(bootstrap, kafka.group_id, kafka.topic, sorted(expected))
    assert committed == expected and sum(expected.values()) == 200


def test_a_consumer_error_reaches_the_worker_status_once(settings) -> None:
    """librdkafka reports "offset out of range" as an event, not an exception (Tansu never sends it)."""
    loop = StreamLoop(settings, settings.kafka.bootstrap_servers, "error-check")
    try:
        loop.reader._on_error(KafkaError(KafkaError.OFFSET_OUT_OF_RANGE))  # what librdkafka's error_cb gets
        loop._housekeeping(time.time())
        assert loop.status()["last_error"].startswith("kafka consumer: ")
        assert loop.reader.take_error() is None, "taken once"
        loop.reader._on_error(KafkaError(KafkaError._TRANSPORT))  # reconnects are BrokerWatch's to report
        assert loop.reader.take_error() is None
    finally:
        loop.shutdown()
