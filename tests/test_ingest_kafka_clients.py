"""kafka.security: validated once, turned into both libraries' options, secrets never shown.

Pure functions only; the same settings against a real TLS endpoint are in
tests/test_ingest_kafka_tls.py. SASL options are checked here because no broker that runs
on this machine completes a SASL handshake (see that module's docstring).
"""

from __future__ import annotations

import doctest
import json
import logging

import pytest
from pydantic import SecretStr

import ingest.kafka_clients
from ingest.kafka_clients import kafka_python_options, librdkafka_options, quiet_library_logs
from ingest.settings import KafkaSecuritySettings, Settings, SettingsError, load_settings

SECRET = "s3cr3t-Value-42"


@pytest.fixture
def pem_files(tmp_path):
    names = {}
    for name in ("ca", "cert", "key"):
        path = tmp_path / f"{name}.pem"
        path.write_text("-----BEGIN PLACEHOLDER-----\n")  # existence is what settings check; TLS reads them
        names[name] = path
    return names


def test_doctests() -> None:
    result = doctest.testmod(ingest.kafka_clients)
    assert result.attempted > 0 and result.failed == 0


def test_plaintext_adds_nothing_to_either_library() -> None:
    assert kafka_python_options(KafkaSecuritySettings()) == {}
    assert librdkafka_options(KafkaSecuritySettings()) == {}


def test_mutual_tls_options_name_the_same_files_in_both_libraries(pem_files) -> None:
    security = KafkaSecuritySettings(protocol="SSL", ssl_cafile=pem_files["ca"], ssl_certfile=pem_files["cert"],
                                     ssl_keyfile=pem_files["key"], ssl_key_password=SecretStr(SECRET),
                                     ssl_check_hostname=False)
    assert kafka_python_options(security) == {
        "security_protocol": "SSL", "ssl_check_hostname": False, "ssl_cafile": str(pem_files["ca"]),
        "ssl_certfile": str(pem_files["cert"]), "ssl_keyfile": str(pem_files["key"]), "ssl_password": SECRET}
    assert librdkafka_options(security) == {
        "security.protocol": "ssl", "ssl.endpoint.identification.algorithm": "none",
        "ssl.ca.location": str(pem_files["ca"]), "ssl.certificate.location": str(pem_files["cert"]),
        "ssl.key.location": str(pem_files["key"]), "ssl.key.password": SECRET}


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"])
def test_sasl_ssl_options_for_each_mechanism(mechanism: str) -> None:
    security = KafkaSecuritySettings(protocol="SASL_SSL", sasl_mechanism=mechanism, sasl_username="svc",
                                     sasl_password=SecretStr(SECRET))
    assert kafka_python_options(security) == {
        "security_protocol": "SASL_SSL", "ssl_check_hostname": True, "sasl_mechanism": mechanism,
        "sasl_plain_username": "svc", "sasl_plain_password": SECRET}
    assert librdkafka_options(security) == {
        "security.protocol": "sasl_ssl", "ssl.endpoint.identification.algorithm": "https",
        "sasl.mechanism": mechanism, "sasl.username": "svc", "sasl.password": SECRET}


def test_sasl_plaintext_has_no_tls_options() -> None:
    security = KafkaSecuritySettings(protocol="SASL_PLAINTEXT", sasl_mechanism="SCRAM-SHA-256",
                                     sasl_username="svc", sasl_password=SecretStr(SECRET))
    assert not any(k.startswith("ssl") for k in kafka_python_options(security))
    assert not any(k.startswith("ssl") for k in librdkafka_options(security))
    assert librdkafka_options(security)["security.protocol"] == "sasl_plaintext"


@pytest.mark.parametrize(("environ", "message"), [
    ({"SMOKE_KAFKA__SECURITY__PROTOCOL": "SASL_SSL", "SMOKE_KAFKA__SECURITY__SASL_PASSWORD": "x"},
     "sasl_username is required with protocol SASL_SSL"),
    ({"SMOKE_KAFKA__SECURITY__PROTOCOL": "SASL_PLAINTEXT", "SMOKE_KAFKA__SECURITY__SASL_USERNAME": "u"},
     "sasl_password is required with protocol SASL_PLAINTEXT"),
    ({"SMOKE_KAFKA__SECURITY__PROTOCOL": "SSL", "SMOKE_KAFKA__SECURITY__SSL_CAFILE": "/no/such/ca.pem"},
     "ssl_cafile '/no/such/ca.pem': no such file"),
    ({"SMOKE_KAFKA__SECURITY__PROTOCOL": "TLS"}, "kafka.security.protocol: Input should be 'PLAINTEXT'"),
    ({"SMOKE_KAFKA__SECURITY__PROTOCOL": "SASL_SSL", "SMOKE_KAFKA__SECURITY__SASL_MECHANISM": "GSSAPI"},
     "kafka.security.sasl_mechanism"),
])
def test_bad_security_settings_stop_start_up_naming_the_setting(environ: dict, message: str) -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings(environ=environ)
    assert message in str(caught.value)
    assert "kafka.security" in str(caught.value)


def test_tls_files_need_a_tls_protocol_and_a_certificate_needs_its_key(pem_files) -> None:
    with pytest.raises(ValueError, match="ssl_cafile set but protocol PLAINTEXT does not use TLS"):
        KafkaSecuritySettings(ssl_cafile=pem_files["ca"])
    with pytest.raises(ValueError, match="ssl_certfile and ssl_keyfile go together"):
        KafkaSecuritySettings(protocol="SSL", ssl_certfile=pem_files["cert"])


def test_relative_tls_paths_become_absolute(pem_files, monkeypatch) -> None:
    # Stream workers run in Ray's working directory: a relative path must not change meaning there.
    monkeypatch.chdir(pem_files["ca"].parent)
    security = KafkaSecuritySettings(protocol="SSL", ssl_cafile="ca.pem")
    assert security.ssl_cafile == pem_files["ca"]


def test_environment_overrides_reach_the_section_and_secrets_are_never_shown() -> None:
    settings = load_settings(environ={
        "SMOKE_KAFKA__SECURITY__PROTOCOL": "SASL_SSL", "SMOKE_KAFKA__SECURITY__SASL_MECHANISM": "SCRAM-SHA-512",
        "SMOKE_KAFKA__SECURITY__SASL_USERNAME": "svc", "SMOKE_KAFKA__SECURITY__SASL_PASSWORD": SECRET})
    security = settings.kafka.security
    assert security.sasl_password.get_secret_value() == SECRET
    assert librdkafka_options(security)["sasl.password"] == SECRET
    shown = [repr(settings), str(settings), repr(security), settings.model_dump_json(),
             json.dumps(settings.model_dump(mode="json")), str(settings.model_dump())]
    for text in shown:
        assert SECRET not in text
    # A settings object sent to a Ray actor is pickled: the secret survives, still hidden.
    import pickle

    copy = pickle.loads(pickle.dumps(settings))
    assert copy.kafka.security.sasl_password.get_secret_value() == SECRET and SECRET not in repr(copy)


def test_the_default_is_plaintext_so_the_embedded_broker_needs_nothing() -> None:
    assert Settings().kafka.security.protocol == "PLAINTEXT"


def test_quiet_library_logs_is_the_one_place_that_mutes_kafka_python() -> None:
    logger = logging.getLogger("kafka")
    before = logger.level
    try:
        quiet_library_logs(logging.ERROR)
        assert logger.level == logging.ERROR
        quiet_library_logs()
        assert logger.level == logging.CRITICAL
    finally:
        logger.setLevel(before)
