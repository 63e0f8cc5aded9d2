"""PartitionReader: how a worker reads its partitions (confluent-kafka, i.e. librdkafka).

The loop used kafka-python's ``KafkaConsumer`` until 2026-11-30; its pure-Python
record decoding into ``ConsumerRecord`` objects was 41% of the loop (py-spy). Consuming
and ``orjson``-decoding the same topic, librdkafka read 3.2-4.5x as fast as kafka-python
in the same run (410-548k /s against 121-126k /s, 100k readings, Tansu 0.6.0). This
module is the only place that knows which client is behind the loop; it offers what
the loop needs and nothing else:

- :meth:`assign` / :meth:`seek_to_beginning`: every position is set by us (snapshot,
  committed offset or beginning). ``auto.offset.reset`` is ``error``: the broker never
  moves a partition silently (kafka-python's ``auto_offset_reset="none"``). An
  out-of-range error is logged and the partition waits (its lag grows); the worker's
  reset detection (next offset beyond the high watermark, or our committed offset gone)
  decides what to do, as before.
- :meth:`poll` returns records grouped by partition, as soon as any are there (a bare
  ``consume(n, timeout)`` waits out its timeout unless ``n`` messages arrive: measured,
  it would add up to ``poll_timeout_ms`` to every reading's latency at low rates).
- :meth:`highwater`: the high watermark of the partition's last fetch response, no
  request (the broker's ``ListOffsets`` under-reports on Tansu, see docs/architecture.md).
- :meth:`committed` / :meth:`commit`: offsets under the group id, visible to standard
  lag tools. Commits are asynchronous: a synchronous librdkafka commit blocked 45 s
  with the broker away (measured) and has no timeout of its own; the result arrives
  through a callback served by a later :meth:`poll`, on the loop's thread.

Not thread-safe by contract: the loop's thread is the only user (librdkafka would
allow more; the loop does not need it).
"""

from __future__ import annotations

import logging
import operator
from collections import deque
from collections.abc import Callable, Mapping

import numpy as np
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Message, TopicPartition

from ingest.kafka_clients import assigned_reader_config, error_text
from ingest.settings import KafkaSecuritySettings

log = logging.getLogger(__name__)

# Message accessors applied to a whole batch with map(): C calls, no Python loop per record.
_VALUE, _OFFSET, _PARTITION, _TIMESTAMP, _ERROR = (
    Message.value, Message.offset, Message.partition, Message.timestamp, Message.error)
_SECOND = operator.itemgetter(1)  # Message.timestamp() is (type, milliseconds)

# Errors librdkafka reports as events while it reconnects or refreshes metadata by itself.
_TRANSIENT = {KafkaError._TRANSPORT, KafkaError._ALL_BROKERS_DOWN, KafkaError._PARTITION_EOF,
              KafkaError._TIMED_OUT, KafkaError._MSG_TIMED_OUT, KafkaError._RESOLVE}

CommitDone = Callable[[dict[int, int], str | None], None]


class Records:
    """One partition's records from one poll, in offset order, as columns."""

    __slots__ = ("_messages", "offsets", "timestamps_ms", "values")

    def __init__(self, messages: list[Message]) -> None:
        n = len(messages)
        self._messages = messages
        self.values: list[bytes | None] = list(map(_VALUE, messages))
        self.offsets = np.fromiter(map(_OFFSET, messages), dtype=np.int64, count=n)
        # The broker record's timestamp (producer create time), -1 when the record has none.
        self.timestamps_ms = np.fromiter(map(_SECOND, map(_TIMESTAMP, messages)), dtype=np.int64, count=n)

    def __len__(self) -> int:
        return len(self._messages)

    def key(self, i: int) -> bytes | None:
        return self._messages[i].key()

    def timestamp_ms(self, i: int) -> int | None:
        ts = int(self.timestamps_ms[i])
        return ts if ts >= 0 else None

    def since(self, offset: int) -> Records:
        """The records at ``offset`` and after (a re-fetch after a seek can start earlier)."""
        start = int(np.searchsorted(self.offsets, offset))
        return self if start == 0 else Records(self._messages[start:])


class PartitionReader:
    """The worker's consumer: manual assignment of partitions of one topic, offsets under a group."""

    def __init__(self, bootstrap_servers: str, topic: str, group_id: str, client_id: str,
                 fetch_max_wait_ms: int = 25, queued_max_kbytes: int = 16 * 1024,
                 security: KafkaSecuritySettings | None = None) -> None:
        self.topic = topic
        self.last_error: str | None = None
        self._unreported_error: str | None = None  # for take_error(): the worker's status
        self._commits: deque[tuple[dict[int, int], CommitDone]] = deque()
        self._tps: dict[int, TopicPartition] = {}
        self._consumer = Consumer({
            **assigned_reader_config(bootstrap_servers, group_id, client_id, fetch_max_wait_ms, security),
            # fetch.wait.max.ms: Tansu holds an idle fetch that long even when records arrive meanwhile:
            # at 1,000 readings/s, poll minus broker timestamp was p50 30 ms / p99 84 ms with 100 ms,
            # 14 / 49 ms with 25 ms (kafka-python with 100 ms: 22 / 63 ms), for 40 empty fetches a
            # second when idle (CPU 2.9% of a core against 1.5%).
            # Prefetched records held in memory (default 64 MB); 16 MB is about 50k readings, 10 polls.
            "queued.max.messages.kbytes": queued_max_kbytes,
            # Over that, a partition's next fetch waits this long (default 1 s: the loop drained the
            # queue and then sat idle; catching up on 200k readings went 63k /s -> 91k /s with 20 ms).
            "fetch.queue.backoff.ms": 20,
            # The worker's BrokerWatch logs an outage once (librdkafka's own log is cut to critical lines).
            "error_cb": self._on_error,
            "on_commit": self._on_commit,
        })

    def _tp(self, partition: int, offset: int | None = None) -> TopicPartition:
        if offset is not None:
            return TopicPartition(self.topic, partition, offset)
        tp = self._tps.get(partition)
        if tp is None:
            tp = self._tps[partition] = TopicPartition(self.topic, partition)
        return tp

    # Positions ------------------------------------------------------------------------------

    def assign(self, positions: Mapping[int, int | None]) -> None:
        """Own exactly these partitions, each read from its offset (None: from the beginning)."""
        self._consumer.assign([self._tp(p, OFFSET_BEGINNING if offset is None else offset)
                               for p, offset in sorted(positions.items())])

    def seek_to_beginning(self, partition: int) -> None:
        """Read an assigned partition again from its first record; records fetched before are dropped."""
        self._consumer.seek(self._tp(partition, OFFSET_BEGINNING))

    # Reading ---------------------------------------------------------------------------------

    def poll(self, timeout_ms: int, max_records: int) -> dict[int, Records]:
        """Up to ``max_records`` records by partition; waits up to ``timeout_ms`` only when none are ready."""
        messages = self._consumer.consume(max_records, 0)
        if not messages:
            first = self._consumer.poll(timeout_ms / 1000)
            if first is None:
                return {}
            messages = [first, *self._consumer.consume(max_records - 1, 0)] if max_records > 1 else [first]
        if any(map(_ERROR, messages)):
            messages = self._without_errors(messages)
            if not messages:
                return {}
        partitions = np.fromiter(map(_PARTITION, messages), dtype=np.int64, count=len(messages))
        first_partition = int(partitions[0])
        if (partitions == first_partition).all():
            return {first_partition: Records(messages)}
        # librdkafka's queue keeps each partition's records in offset order; a stable split keeps it too.
        return {p: Records([messages[i] for i in np.flatnonzero(partitions == p).tolist()])
                for p in np.unique(partitions).tolist()}

    def _without_errors(self, messages: list[Message]) -> list[Message]:
        kept = []
        for m in messages:
            err = m.error()
            if err is None:
                kept.append(m)
            elif err.code() not in _TRANSIENT:
                self._note_error(f"partition {m.partition()}: {err.str()}")
        return kept

    def highwater(self, partition: int) -> int | None:
        """The partition's end as of its last fetch response; None before the first one."""
        _, high = self._consumer.get_watermark_offsets(self._tp(partition), cached=True)
        return high if high >= 0 else None

    # Offsets under the group id ---------------------------------------------------------------

    def committed(self, partition: int, timeout_s: float = 5.0) -> int | None:
        """The group's committed offset for the partition; None if there is none. Raises on timeout."""
        (tp,) = self._consumer.committed([self._tp(partition)], timeout=timeout_s)
        if tp.error is not None:
            raise KafkaException(tp.error)
        return tp.offset if tp.offset >= 0 else None

    def commit(self, offsets: Mapping[int, int], done: CommitDone) -> None:
        """Commit next offsets by partition without waiting. ``done(offsets, error or None)`` is
        called on this thread from a later :meth:`poll` (or :meth:`close`) once the broker answered."""
        wanted = dict(offsets)
        self._commits.append((wanted, done))
        try:
            self._consumer.commit(offsets=[self._tp(p, o) for p, o in wanted.items()], asynchronous=True)
        except KafkaException as err:
            self._commits.pop()
            done(wanted, str(err))

    def _on_commit(self, err: KafkaError | None, partitions: list[TopicPartition]) -> None:
        answered = {tp.partition: tp.offset for tp in partitions}
        # Answers come in order; matching by content also copes with one that never comes.
        for i, (wanted, done) in enumerate(self._commits):  # noqa: B007 (used after the break)
            if wanted == answered:
                del self._commits[i]
                break
        else:
            if not self._commits:
                return
            wanted, done = self._commits.popleft()
        failed = [f"{tp.partition}: {tp.error}" for tp in partitions if tp.error is not None]
        error = str(err) if err is not None else ("; ".join(failed) if failed else None)
        try:
            done(wanted, error)
        except Exception:  # a callback must not break librdkafka's dispatch
            log.exception("commit callback failed")

    # Errors and shutdown ------------------------------------------------------------------------

    def _on_error(self, err: KafkaError) -> None:
        # Connection errors are retried by librdkafka itself; the worker's BrokerWatch reports outages.
        if err.code() not in _TRANSIENT:
            self._note_error(error_text(err.str()))  # a TLS or SASL failure repeats: logged once

    def _note_error(self, text: str) -> None:
        if text != self.last_error:
            log.warning("kafka consumer (%s): %s", self.topic, text)
            self._unreported_error = text
        self.last_error = text

    def take_error(self) -> str | None:
        """A consumer error not taken before (once per distinct error), else None.

        librdkafka reports errors such as "offset out of range" as events, not exceptions:
        nothing in the loop fails, so the loop takes them from here into its status.
        """
        error, self._unreported_error = self._unreported_error, None
        return error

    def close(self) -> None:
        """Close the client; librdkafka waits for commits in flight first."""
        self._consumer.close()
