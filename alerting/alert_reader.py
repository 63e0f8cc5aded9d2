"""How the alert router reads ``smoke_alerts``: librdkafka (confluent-kafka) by explicit assignment.

The router sets every position itself, from the store's committed offsets (or
the beginning), so ``auto.offset.reset`` is ``error``: the broker never moves a
partition silently; the router's reset check decides what an offset beyond the
end means. It is the stream's reading pattern (``actors/partition_reader.py``)
cut down to what the router needs, on the same client settings
(``ingest.kafka_clients.assigned_reader_config``, with ``kafka.security``); alerting
may not import the stream (docs/architecture.md, "Imports run one way").

Offsets are also committed under a group id, asynchronously, only so that lag
tools see the router's position; the store holds the truth.

Not thread-safe: the router's loop thread is the only user.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition

from ingest.kafka_clients import assigned_reader_config
from ingest.settings import KafkaSecuritySettings

log = logging.getLogger(__name__)

# Errors librdkafka reports while it reconnects or refreshes metadata by itself.
_TRANSIENT = {KafkaError._TRANSPORT, KafkaError._ALL_BROKERS_DOWN, KafkaError._PARTITION_EOF,
              KafkaError._TIMED_OUT, KafkaError._MSG_TIMED_OUT, KafkaError._RESOLVE}


@dataclass(frozen=True)
class AlertRecord:
    """One message of the alerts topic."""

    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


class AlertReader:
    """A consumer of one topic's partitions at positions we set."""

    def __init__(self, bootstrap_servers: str, topic: str, group_id: str, client_id: str,
                 fetch_max_wait_ms: int = 25, security: KafkaSecuritySettings | None = None) -> None:
        self.topic = topic
        self.last_error: str | None = None
        self._unreported_error: str | None = None
        self._consumer = Consumer({
            # An idle fetch waits fetch_max_wait_ms: an alert is recorded within about that of being sent.
            **assigned_reader_config(bootstrap_servers, group_id, client_id, fetch_max_wait_ms, security),
            "error_cb": self._on_error,  # reconnect attempts are logged once, not 20 times a second
            "on_commit": self._on_commit,
        })

    def assign(self, positions: Mapping[int, int | None]) -> None:
        """Own exactly these partitions, each read from its offset (None: from the beginning)."""
        self._consumer.assign([TopicPartition(self.topic, p, OFFSET_BEGINNING if o is None else o)
                               for p, o in sorted(positions.items())])

    def seek(self, partition: int, offset: int) -> None:
        """Read an assigned partition again from ``offset``; records fetched before are dropped."""
        self._consumer.seek(TopicPartition(self.topic, partition, offset))

    def seek_to_beginning(self, partition: int) -> None:
        self._consumer.seek(TopicPartition(self.topic, partition, OFFSET_BEGINNING))

    def poll(self, timeout_ms: int, max_records: int) -> dict[int, list[AlertRecord]]:
        """Up to ``max_records`` records by partition, in offset order; waits only when none are ready."""
        messages = self._consumer.consume(max_records, 0)
        if not messages:
            first = self._consumer.poll(timeout_ms / 1000)
            if first is None:
                return {}
            messages = [first, *self._consumer.consume(max_records - 1, 0)] if max_records > 1 else [first]
        out: dict[int, list[AlertRecord]] = {}
        for m in messages:
            err = m.error()
            if err is not None:
                if err.code() not in _TRANSIENT:
                    self._note_error(f"partition {m.partition()}: {err.str()}")
                continue
            out.setdefault(m.partition(), []).append(AlertRecord(m.partition(), m.offset(), m.key(), m.value()))
        return out

    def highwater(self, partition: int) -> int | None:
        """The partition's end as of its last fetch response (no request); None before the first one."""
        _, high = self._consumer.get_watermark_offsets(TopicPartition(self.topic, partition), cached=True)
        return high if high >= 0 else None

    def committed(self, partition: int, timeout_s: float = 5.0) -> int | None:
        """The group's committed offset for the partition; None if there is none. Raises on timeout."""
        (tp,) = self._consumer.committed([TopicPartition(self.topic, partition)], timeout=timeout_s)
        if tp.error is not None:
            raise KafkaException(tp.error)
        return tp.offset if tp.offset >= 0 else None

    def commit(self, offsets: Mapping[int, int]) -> None:
        """Commit next offsets under the group without waiting (for lag tools only)."""
        try:
            self._consumer.commit(offsets=[TopicPartition(self.topic, p, o) for p, o in offsets.items()],
                                  asynchronous=True)
        except KafkaException as err:
            log.debug("alert reader: commit failed: %s", err)

    def _on_commit(self, err: KafkaError | None, partitions: list[TopicPartition]) -> None:
        if err is not None:
            log.debug("alert reader: commit of %s failed: %s", [tp.partition for tp in partitions], err)

    def _on_error(self, err: KafkaError) -> None:
        if err.code() not in _TRANSIENT:
            self._note_error(err.str())

    def _note_error(self, text: str) -> None:
        if text != self.last_error:
            log.warning("kafka consumer (%s): %s", self.topic, text)
            self._unreported_error = text
        self.last_error = text

    def take_error(self) -> str | None:
        """A consumer error not taken before (once per distinct error), else None."""
        error, self._unreported_error = self._unreported_error, None
        return error

    def close(self) -> None:
        self._consumer.close()
