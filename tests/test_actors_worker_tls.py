"""The stream over TLS: the worker loop reads, alerts, dead-letters and checkpoints through stunnel.

The :class:`StreamLoop` is the code inside a PartitionWorker actor, run in this process against
the embedded broker behind stunnel4 (tests/tls_broker.py); every client it makes (the
confluent-kafka reader, the kafka-python producer of alerts and dead letters, the restore
scans, the admin client of a reset) gets ``kafka.security`` from the settings it is given.
Then the same through the real Ray stream (supervisor and worker actors), and
``smoke stream start`` refusing an untrusted broker before it starts any actor.
"""

from __future__ import annotations

import time
import uuid

import orjson
import pytest

from actors.worker import StreamLoop
from ingest import kafka_clients
from ingest.broker import ensure_topics
from ingest.settings import KafkaSecuritySettings, KafkaSettings, load_settings
from tests.stream_support import consume_all, reading
from tests.tls_broker import TlsBroker

HOT = {"temperature_c": 80.0, "pm2_5_ugm3": 2500.0, "pm1_0_ugm3": 2000.0, "nc0_5_per_cm3": 5000.0,
       "tvoc_ppb": 5000.0, "eco2_ppm": 5000.0}


def test_the_worker_loop_reads_alerts_and_dead_letters_through_tls(tmp_path) -> None:
    with TlsBroker(tmp_path / "tls") as tls:
        security = KafkaSecuritySettings(protocol="SSL", ssl_cafile=tls.ca)
        suffix = uuid.uuid4().hex[:8]
        kafka = KafkaSettings(bootstrap_servers=tls.bootstrap_servers, topic=f"r_{suffix}",
                              alerts_topic=f"a_{suffix}", dlq_topic=f"r_{suffix}.dlq", partitions=2,
                              group_id=f"g_{suffix}", security=security)
        base = load_settings(environ={})
        settings = base.model_copy(update={"kafka": kafka, "stream": base.stream.model_copy(update={
            "checkpoint_dir": str(tmp_path / "ck"), "lake_dir": str(tmp_path / "lake")})})
        ensure_topics(tls.bootstrap_servers, kafka)

        t0 = 1_780_000_000.0
        messages = [(b"calm", reading("calm", t0 + i, i)) for i in range(30)]
        messages += [(b"hot", reading("hot", t0 + i, i, **(HOT if i >= 20 else {}))) for i in range(40)]
        messages.append((b"bad", b"{not json"))
        producer = kafka_clients.producer(tls.bootstrap_servers, security, acks="all")
        for key, value in messages:
            producer.send(kafka.topic, key=key, value=value)
        producer.flush(30)
        producer.close()

        loop = StreamLoop(settings, tls.bootstrap_servers, "tls-worker")
        try:
            loop.set_partitions([0, 1])
            deadline = time.monotonic() + 60
            while loop.totals["processed"] + loop.totals["rejected"] < len(messages):
                assert time.monotonic() < deadline, loop.status()
                loop.step()
            loop.checkpoint()
            assert loop.totals["rejected"] == 1 and loop.last_error is None, loop.status()
        finally:
            loop.shutdown()

        alerts = [orjson.loads(r.value)
                  for r in consume_all(tls.bootstrap_servers, kafka.alerts_topic, 1, security=security)]
        assert [(a["sensor_id"], a["kind"], a["state"]) for a in alerts] == [("hot", "fire", "raised")]
        (dead,) = consume_all(tls.bootstrap_servers, kafka.dlq_topic, 1, security=security)
        assert dead.value == b"{not json"

        # A successor restores through TLS too, and its scans find the outputs already written.
        successor = StreamLoop(settings, tls.bootstrap_servers, "tls-successor")
        try:
            successor.set_partitions([0, 1])
            assert sum(s.sensors() for s in successor.states.values()) == 2
        finally:
            successor.shutdown()


def test_stream_start_refuses_an_untrusted_broker_before_starting_any_actor(ray_cluster, tmp_path) -> None:
    from actors.supervisor import get_stream, start_stream
    from ingest.broker import KafkaSecurityError

    with TlsBroker(tmp_path / "tls") as tls:
        base = load_settings(environ={})
        settings = base.model_copy(update={
            "kafka": KafkaSettings(bootstrap_servers=tls.bootstrap_servers,
                                   security=KafkaSecuritySettings(protocol="SSL", ssl_cafile=tls.other_ca)),
            "stream": base.stream.model_copy(update={"supervisor_name": f"tls-{uuid.uuid4().hex[:8]}"})})
        started = time.monotonic()
        with pytest.raises(KafkaSecurityError, match="certificate verify failed"):
            start_stream(settings, tls.bootstrap_servers)
        assert time.monotonic() - started < 5.0
        assert get_stream(settings) is None


def test_the_ray_stream_runs_over_tls(ray_cluster, tmp_path) -> None:
    # The settings travel to the supervisor and worker actors (pickled, password still hidden) and every
    # client they make connects through TLS; the readings and the fire alert go through stunnel.
    import ray

    from tests.stream_support import running_stream, stream_settings, wait_for

    with TlsBroker(tmp_path / "tls") as tls:
        security = KafkaSecuritySettings(protocol="SSL", ssl_cafile=tls.ca)
        suffix = uuid.uuid4().hex[:8]
        kafka = KafkaSettings(bootstrap_servers=tls.bootstrap_servers, topic=f"rs_{suffix}",
                              alerts_topic=f"as_{suffix}", dlq_topic=f"rs_{suffix}.dlq", partitions=2,
                              group_id=f"gs_{suffix}", security=security)
        base = load_settings(environ={})
        settings = stream_settings(base.model_copy(update={"kafka": kafka, "stream": base.stream.model_copy(update={
            "checkpoint_dir": str(tmp_path / "ck"), "lake_dir": str(tmp_path / "lake")})}), workers=1)
        ensure_topics(tls.bootstrap_servers, kafka)
        with running_stream(settings) as supervisor:
            t0 = 1_780_000_000.0
            producer = kafka_clients.producer(tls.bootstrap_servers, security, acks="all")
            for i in range(40):
                producer.send(kafka.topic, key=b"hot", value=reading("hot", t0 + i, i, **(HOT if i >= 20 else {})))
            producer.send(kafka.topic, key=b"bad", value=b"{not json")
            producer.flush(30)
            producer.close()

            def totals() -> dict:
                status = ray.get(supervisor.status.remote(), timeout=60)
                workers = status["workers"].values()
                return {k: sum(w.get("totals", {}).get(k, 0) for w in workers) for k in ("processed", "rejected")}

            wait_for(lambda: totals() == {"processed": 40, "rejected": 1}, 60, what="41 readings through TLS")
            alerts = [orjson.loads(r.value)
                  for r in consume_all(tls.bootstrap_servers, kafka.alerts_topic, 1, security=security)]
            assert [(a["sensor_id"], a["kind"], a["state"]) for a in alerts] == [("hot", "fire", "raised")]
            (dead,) = consume_all(tls.bootstrap_servers, kafka.dlq_topic, 1, security=security)
            assert dead.value == b"{not json"
