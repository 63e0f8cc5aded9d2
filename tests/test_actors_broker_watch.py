"""The embedded broker is memory-only: when it restarts, its offsets start again below our checkpoint.

The workers must notice (one warning line), read the new log from its beginning
under a new log epoch (so lake keys of the new log never overwrite the old
one's), and never crash. This test starts its own broker so that restarting it
does not disturb the session's.
"""

from __future__ import annotations

import time

import pytest
import ray

from ingest.broker import EmbeddedBroker, ensure_topics
from tests.stream_support import lake_rows, produce, reading, running_stream, stream_settings, wait_for

pytestmark = pytest.mark.integration


def test_broker_restart_is_detected_and_the_new_log_is_read_from_its_beginning(ray_cluster, settings,
                                                                                reliability_record) -> None:
    own = EmbeddedBroker().start()
    try:
        kafka = settings.kafka.model_copy(update={"bootstrap_servers": own.bootstrap_servers})
        ensure_topics(own.bootstrap_servers, kafka)
        s = stream_settings(settings.model_copy(update={"kafka": kafka}), workers=2, reset_grace_s=1.0)

        def batch(first: int, n: int) -> list[tuple[bytes, bytes]]:
            return [(f"rs-{i % 8}".encode(), reading(f"rs-{i % 8}", 1_780_000_000.0 + i, i))
                    for i in range(first, first + n)]

        def epoch_rows(epoch: int) -> int:
            lake = lake_rows(s)
            return int((lake["log_epoch"] == epoch).sum())

        with running_stream(s) as supervisor:
            produce(own.bootstrap_servers, kafka.topic, batch(0, 400))
            wait_for(lambda: epoch_rows(0) == 400, 60, what="400 rows of the first log in the lake")

            own.stop()
            own = EmbeddedBroker(port=own.port).start()  # same address, empty memory
            ensure_topics(own.bootstrap_servers, kafka)
            restarted_at = time.monotonic()
            produce(own.bootstrap_servers, kafka.topic, batch(400, 120))

            wait_for(lambda: epoch_rows(1) == 120, 90, what="120 rows of the new log in the lake as epoch 1")
            new_log_in_lake_s = round(time.monotonic() - restarted_at, 2)
            status = ray.get(supervisor.status.remote())
            assert status["restarts"] == 0, "the reset must not kill workers"
            resets = sum(w["totals"]["resets"] for w in status["workers"].values())
            assert resets == 4, f"each of the 4 partitions resets once: {resets}"
            assert epoch_rows(0) == 400, "the first log's rows stay in the lake"
            lake = lake_rows(s)
            new = lake[lake["log_epoch"] == 1]
            assert not new.duplicated(["kafka_partition", "kafka_offset"]).any()
        reliability_record("stream.broker_reset", partitions=4, resets_detected=resets, worker_restarts=0,
                           old_log_rows_kept=400, new_log_rows=120, new_log_in_lake_s=new_log_in_lake_s)
    finally:
        own.stop()
