"""Every Kafka client through a real TLS endpoint (the embedded broker behind stunnel4, see tests/tls_broker.py).

The admin client, the readings producer, the confluent-kafka reader of the stream workers,
the scan of written outputs and ``smoke status``'s broker and alert checks run through TLS
with the test CA; a wrong CA, a missing client certificate and a refused SASL handshake each
fail within seconds with one line naming the address, the cause and the setting, and never
the password. SASL itself cannot succeed here: Tansu 0.6.0 answers every SaslHandshake with
UNSUPPORTED_SASL_MECHANISM while listing the mechanism asked for (PLAIN is not offered at
all), so only the refusal is tested end to end; the SASL options are unit-tested in
tests/test_ingest_kafka_clients.py.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterator

import pytest
from pydantic import SecretStr

from actors.partition_reader import PartitionReader
from actors.sinks import scan_written
from cluster.health import check_broker, recent_alerts
from cluster.stack_state import StackState
from ingest.broker import BrokerError, KafkaSecurityError, ensure_topics, partition_count
from ingest.kafka_clients import check_connection
from ingest.producer import ReadingProducer
from ingest.settings import KafkaSecuritySettings, KafkaSettings, SimulatorSettings
from tests.stream_support import reading
from tests.tls_broker import TlsBroker

PASSWORD = "pw-" + uuid.uuid4().hex  # must never appear in an error or a log line


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsBroker]:
    with TlsBroker(tmp_path_factory.mktemp("tls")) as endpoint:
        yield endpoint


def topics(bootstrap: str, security: KafkaSecuritySettings) -> KafkaSettings:
    suffix = uuid.uuid4().hex[:8]
    return KafkaSettings(bootstrap_servers=bootstrap, topic=f"tls_{suffix}", alerts_topic=f"tls_alerts_{suffix}",
                         dlq_topic=f"tls_{suffix}.dlq", partitions=2, security=security)


def read_all(reader: PartitionReader, expect: int, timeout_s: float = 20.0) -> list[bytes]:
    values: list[bytes] = []
    deadline = time.monotonic() + timeout_s
    while len(values) < expect and time.monotonic() < deadline:
        for records in reader.poll(200, 1000).values():
            values += records.values
    return values


def test_producer_admin_reader_scan_and_status_work_through_tls(tls: TlsBroker) -> None:
    security = KafkaSecuritySettings(protocol="SSL", ssl_cafile=tls.ca)
    kafka = topics(tls.bootstrap_servers, security)
    ensure_topics(tls.bootstrap_servers, kafka)
    assert partition_count(tls.bootstrap_servers, kafka.topic, security=security) == 2

    sent = [reading(f"tls-{i % 5}", 1_780_000_000.0 + i, i) for i in range(200)]
    with ReadingProducer(tls.bootstrap_servers, kafka.topic, SimulatorSettings(linger_ms=5),
                         security=security) as producer:
        producer.send([v[:20] for v in sent], sent)
    assert producer.report.delivered == len(sent) and producer.report.failed == 0

    reader = PartitionReader(tls.bootstrap_servers, kafka.topic, f"g-{kafka.topic}", "tls-reader", security=security)
    try:
        reader.assign({0: None, 1: None})
        assert sorted(read_all(reader, len(sent))) == sorted(sent)
        assert reader.take_error() is None
    finally:
        reader.close()

    written = scan_written(tls.bootstrap_servers, kafka.topic, 0, None, lambda r: r.offset, security=security)
    assert written and min(written) == 0

    # smoke alerts / smoke status read the alerts topic with the same client: any topic of JSON will do.
    assert len(recent_alerts(tls.bootstrap_servers, kafka.topic, 3600, security=security)) == len(sent)

    state = StackState(bootstrap_servers=tls.bootstrap_servers, topics=[kafka.topic, kafka.alerts_topic])
    check = check_broker(state, security)
    assert check.healthy is True, check.detail
    # The same port without TLS is no Kafka: every connection above went through stunnel.
    with pytest.raises(BrokerError):
        check_connection(tls.bootstrap_servers, KafkaSecuritySettings(), timeout_s=2.0)


def test_an_untrusted_certificate_fails_at_start_up_with_one_line(tls: TlsBroker) -> None:
    security = KafkaSecuritySettings(protocol="SSL", ssl_cafile=tls.other_ca)
    started = time.monotonic()
    with pytest.raises(KafkaSecurityError) as caught:
        ensure_topics(tls.bootstrap_servers, topics(tls.bootstrap_servers, security))
    message = str(caught.value)
    assert time.monotonic() - started < 5.0
    assert "\n" not in message
    assert tls.bootstrap_servers in message and "certificate verify failed" in message
    assert f"kafka.security.ssl_cafile={tls.other_ca}" in message

    # The stream's reader reports it as its error (logged once, shown in the worker's status).
    reader = PartitionReader(tls.bootstrap_servers, "any", "g", "tls-wrong-ca", security=security)
    try:
        reader.assign({0: None})
        deadline = time.monotonic() + 10
        error = None
        while error is None and time.monotonic() < deadline:
            reader.poll(200, 10)
            error = reader.take_error()
        assert error is not None and "certificate verify failed" in error
        assert "after" not in error.rsplit(":", 1)[-1], error  # no varying timing: one log line per cause
    finally:
        reader.close()


def test_a_refused_sasl_handshake_is_one_line_without_the_password(tls: TlsBroker, caplog) -> None:
    security = KafkaSecuritySettings(protocol="SASL_SSL", ssl_cafile=tls.ca, sasl_mechanism="SCRAM-SHA-512",
                                     sasl_username="smoke", sasl_password=SecretStr(PASSWORD))
    caplog.set_level(logging.DEBUG)
    started = time.monotonic()
    with pytest.raises(KafkaSecurityError) as caught:
        ensure_topics(tls.bootstrap_servers, topics(tls.bootstrap_servers, security))
    message = str(caught.value)
    assert time.monotonic() - started < 5.0
    assert "\n" not in message and tls.bootstrap_servers in message
    assert "SASL" in message and "kafka.security.sasl_username=smoke" in message
    assert PASSWORD not in message and PASSWORD not in caplog.text
    assert PASSWORD not in repr(security) and PASSWORD not in str(security)


def test_mutual_tls_needs_the_client_certificate(tmp_path) -> None:
    with TlsBroker(tmp_path / "mtls", client_certs=True) as mtls:
        with_cert = KafkaSecuritySettings(protocol="SSL", ssl_cafile=mtls.ca, ssl_certfile=mtls.client_cert,
                                          ssl_keyfile=mtls.client_key)
        kafka = topics(mtls.bootstrap_servers, with_cert)
        ensure_topics(mtls.bootstrap_servers, kafka)
        with ReadingProducer(mtls.bootstrap_servers, kafka.topic, SimulatorSettings(linger_ms=5),
                             security=with_cert) as producer:
            producer.send([b"m"], [reading("m", 1_780_000_000.0)])
        assert producer.report.delivered == 1

        without = KafkaSecuritySettings(protocol="SSL", ssl_cafile=mtls.ca)
        started = time.monotonic()
        with pytest.raises(KafkaSecurityError) as caught:
            ensure_topics(mtls.bootstrap_servers, topics(mtls.bootstrap_servers, without))
        message = str(caught.value)
        assert time.monotonic() - started < 5.0
        assert mtls.bootstrap_servers in message and "\n" not in message
        assert "certificate required" in message and "ssl_certfile" in message
