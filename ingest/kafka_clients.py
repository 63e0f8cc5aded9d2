"""Every Kafka client of the platform, configured in one place from ``kafka.security``.

Two client libraries talk to Kafka: kafka-python (the producers of readings, alerts and
dead letters, the admin client, the scans and ``smoke status``) and confluent-kafka
(librdkafka: the stream workers' reader). Both take their TLS and SASL options from
:func:`kafka_python_options` and :func:`librdkafka_options`, built from one validated
:class:`~ingest.settings.KafkaSecuritySettings`, so a setting cannot reach one client and
miss the other. The factories :func:`producer`, :func:`consumer` and :func:`admin` are the
only places that construct a kafka-python client; ``actors.partition_reader`` merges
:func:`librdkafka_options` into its consumer's configuration.

kafka-python reports a failed TLS or SASL handshake only in its logs and then gives up
with "Unable to bootstrap" once its timeout is spent. :func:`check_connection` asks
librdkafka, with the same settings, to connect once and turns its first TLS or SASL error
into one line naming the address, the cause and the setting to look at
(:class:`~ingest.broker.KafkaSecurityError`); the admin client runs it first whenever the protocol is not
PLAINTEXT, so a wrong CA or password stops a command at start-up within seconds.

Secrets (``ssl_key_password``, ``sasl_password``) stay ``SecretStr`` in the settings and
are unwrapped only into the option dicts handed to a client; no error or log line built
here contains them.
"""

from __future__ import annotations

import logging
import re
import time
from typing import Any

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer

from ingest.broker import BrokerError, KafkaSecurityError
from ingest.settings import KafkaSecuritySettings

PLAINTEXT = KafkaSecuritySettings()

# librdkafka ends each error with "(after 8ms in state SSL_HANDSHAKE)": without it the same
# failure reads the same every time, so it is logged once. Its advice names its own option
# (ssl.ca.location), not ours: the hint of _explain names the setting instead.
_TIMING = re.compile(r"\s*\(after \d+ms in state [A-Z_]+\)(?:\s*\(_[A-Z_]+\))?$")
_OWN_ADVICE = re.compile(r", verify that ssl\.ca\.location .*$")
_ADDRESS = re.compile(r"^[a-z_]+://\S+?/(?:bootstrap|\d+): ")


def kafka_python_options(security: KafkaSecuritySettings) -> dict[str, Any]:
    """The kafka-python keyword arguments for ``security`` (empty for PLAINTEXT: the library's defaults)."""
    if security.protocol == "PLAINTEXT":
        return {}
    options: dict[str, Any] = {"security_protocol": security.protocol}
    if security.uses_tls:
        options["ssl_check_hostname"] = security.ssl_check_hostname
        if security.ssl_cafile is not None:
            options["ssl_cafile"] = str(security.ssl_cafile)
        if security.ssl_certfile is not None:
            options["ssl_certfile"] = str(security.ssl_certfile)
            options["ssl_keyfile"] = str(security.ssl_keyfile)
        if security.ssl_key_password is not None:
            options["ssl_password"] = security.ssl_key_password.get_secret_value()
    if security.uses_sasl:
        options["sasl_mechanism"] = security.sasl_mechanism
        options["sasl_plain_username"] = security.sasl_username
        options["sasl_plain_password"] = security.sasl_password.get_secret_value()
    return options


def librdkafka_options(security: KafkaSecuritySettings) -> dict[str, Any]:
    """The confluent-kafka (librdkafka) configuration entries for ``security``."""
    if security.protocol == "PLAINTEXT":
        return {}
    options: dict[str, Any] = {"security.protocol": security.protocol.lower()}
    if security.uses_tls:
        options["ssl.endpoint.identification.algorithm"] = "https" if security.ssl_check_hostname else "none"
        if security.ssl_cafile is not None:
            options["ssl.ca.location"] = str(security.ssl_cafile)
        if security.ssl_certfile is not None:
            options["ssl.certificate.location"] = str(security.ssl_certfile)
            options["ssl.key.location"] = str(security.ssl_keyfile)
        if security.ssl_key_password is not None:
            options["ssl.key.password"] = security.ssl_key_password.get_secret_value()
    if security.uses_sasl:
        options["sasl.mechanism"] = security.sasl_mechanism
        options["sasl.username"] = security.sasl_username
        options["sasl.password"] = security.sasl_password.get_secret_value()
    return options


def assigned_reader_config(bootstrap_servers: str, group_id: str, client_id: str, fetch_max_wait_ms: int,
                           security: KafkaSecuritySettings | None) -> dict[str, Any]:
    """librdkafka settings of a consumer that owns partitions by explicit assignment, never subscribed.

    The stream's partition reader and the alert router's reader start from these and add
    their callbacks and queue sizes. Offsets are ours to store and commit (a committed offset
    is resumed from, never a reset), the group id only serves ``committed()``/``commit()``, and
    librdkafka's own log is cut to critical lines: it logs every failed reconnect (about 20
    a second while a broker is away), and the readers report an outage once.
    """
    return {
        "bootstrap.servers": bootstrap_servers,
        "group.id": group_id,
        "client.id": client_id,
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "error",
        "enable.partition.eof": False,
        # How long the broker may hold a fetch with no new record: a record waits up to this long.
        "fetch.wait.max.ms": fetch_max_wait_ms,
        "log_level": 2,
        "logger": logging.getLogger("confluent_kafka"),
        **librdkafka_options(security or PLAINTEXT),
    }


def producer(bootstrap_servers: str, security: KafkaSecuritySettings | None, **options: Any) -> KafkaProducer:
    """A kafka-python producer with ``options`` (acks, linger_ms, ...) and the security settings."""
    return KafkaProducer(bootstrap_servers=bootstrap_servers, **options,
                         **kafka_python_options(security or PLAINTEXT))


def consumer(bootstrap_servers: str, security: KafkaSecuritySettings | None, **options: Any) -> KafkaConsumer:
    """A kafka-python consumer (scans and ``smoke status``; the stream reads with confluent-kafka)."""
    return KafkaConsumer(bootstrap_servers=bootstrap_servers, **options,
                         **kafka_python_options(security or PLAINTEXT))


def admin(bootstrap_servers: str, security: KafkaSecuritySettings | None, **options: Any) -> KafkaAdminClient:
    """A kafka-python admin client; with TLS or SASL the handshake is checked first (:func:`check_connection`)."""
    security = security or PLAINTEXT
    if security.protocol != "PLAINTEXT":
        check_connection(bootstrap_servers, security)
    return KafkaAdminClient(bootstrap_servers=bootstrap_servers, **options, **kafka_python_options(security))


def error_text(text: str) -> str:
    """A librdkafka error without its varying timing suffix.

    >>> error_text("ssl://h:1/bootstrap: SSL handshake failed: x (after 8ms in state SSL_HANDSHAKE)")
    'ssl://h:1/bootstrap: SSL handshake failed: x'
    """
    return _TIMING.sub("", text)


def check_connection(bootstrap_servers: str, security: KafkaSecuritySettings, timeout_s: float = 10.0) -> None:
    """Connect once with ``security`` and fetch metadata; raise ``KafkaSecurityError`` on a TLS/SASL failure.

    Returns as soon as metadata arrives. The first TLS or authentication error librdkafka
    reports ends the wait at once (a wrong CA or password is not retried for ``timeout_s``).
    Other failures (nothing listens, a timeout) raise :class:`~ingest.broker.BrokerError`.
    """
    from confluent_kafka import KafkaError, KafkaException
    from confluent_kafka.admin import AdminClient

    fatal = {KafkaError._SSL, KafkaError._AUTHENTICATION, KafkaError.SASL_AUTHENTICATION_FAILED,
             KafkaError.UNSUPPORTED_SASL_MECHANISM, KafkaError.ILLEGAL_SASL_STATE}
    errors: list[Any] = []
    client = AdminClient({"bootstrap.servers": bootstrap_servers, "client.id": "smoke-connection-check",
                          "error_cb": errors.append, "log_level": 0, "socket.timeout.ms": int(timeout_s * 1000),
                          **librdkafka_options(security)})
    deadline = time.monotonic() + timeout_s
    last = "no answer"
    while time.monotonic() < deadline:
        try:
            client.list_topics(timeout=min(0.5, max(0.05, deadline - time.monotonic())))
            return
        except KafkaException as err:
            last = error_text(err.args[0].str()) if err.args else str(err)
        client.poll(0)
        for err in errors:
            # A TLS alert from the broker (a client certificate it requires, or refuses) arrives as a
            # transport error carrying OpenSSL's words.
            tls_alert = err.code() == KafkaError._TRANSPORT and "SSL routines" in err.str()
            if err.code() in fatal or tls_alert:
                raise KafkaSecurityError(_explain(bootstrap_servers, security,
                                                  err.code() == KafkaError._SSL or tls_alert, err.str())) from None
        if errors:
            last = error_text(errors[-1].str())
    raise BrokerError(f"cannot connect to Kafka at {bootstrap_servers} with protocol {security.protocol}: {last}")


def _explain(bootstrap_servers: str, security: KafkaSecuritySettings, tls: bool, cause: str) -> str:
    """One line: where, what failed (librdkafka's words, without its address and advice), which settings decide it.

    >>> cause = "ssl://h:1/bootstrap: SSL handshake failed: bad cert, verify that ssl.ca.location is correct"
    >>> print(_explain("h:1", PLAINTEXT, True, cause + " (after 3ms in state SSL_HANDSHAKE)"))  # doctest: +ELLIPSIS
    Kafka at h:1 refused the PLAINTEXT handshake: SSL handshake failed: bad cert (check kafka.security.ssl_cafile=...)
    """
    cause = _OWN_ADVICE.sub("", _ADDRESS.sub("", error_text(cause)))
    if tls:
        hint = f"kafka.security.ssl_cafile={security.ssl_cafile or 'the system CAs'}"
        if "hostname" in cause.lower() or "mismatch" in cause.lower():
            hint += ", kafka.security.ssl_check_hostname"
        if security.ssl_certfile is not None:
            hint += f", kafka.security.ssl_certfile={security.ssl_certfile}"
        elif "certificate required" in cause.lower():
            hint = "kafka.security.ssl_certfile and ssl_keyfile: the broker requires a client certificate"
    else:
        hint = (f"kafka.security.sasl_mechanism={security.sasl_mechanism}, "
                f"kafka.security.sasl_username={security.sasl_username}, kafka.security.sasl_password")
    return f"Kafka at {bootstrap_servers} refused the {security.protocol} handshake: {cause} (check {hint})"


def quiet_library_logs(level: int = logging.CRITICAL) -> None:
    """Raise kafka-python's log level: it logs every connection at INFO and every failed reconnect at
    ERROR (about ten lines a second while a broker is away), and warns about the admin API version
    pinned for the embedded broker. Our own lines carry the cause once (BrokerWatch, failed
    iterations, ``KafkaSecurityError``); ``-v`` on the CLI leaves the library's lines on."""
    logging.getLogger("kafka").setLevel(level)
