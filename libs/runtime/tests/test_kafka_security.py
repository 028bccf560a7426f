"""Kafka TLS/SASL settings (issue 8): refused combinations, password sources, the one SSL context, error causes."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest
from aiokafka.errors import KafkaConnectionError, SaslAuthenticationFailed
from pydantic import ValidationError

from gxami_meterlab.kafka_front import Pki, make_pki
from gxami_runtime.kafka import consumer_options, producer_options
from gxami_runtime.kafka_security import CONNECT_FAILURES, KafkaSecurity, client_options, connect_cause, ssl_context
from gxami_runtime.service import kafka_startup_error
from gxami_runtime.settings import ServiceSettings

SECRET = "hunter2-Kafka-secret"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def password_file(tmp_path: Path) -> Path:
    path = tmp_path / "kafka.password"
    path.write_text(SECRET + "\n")
    return path


def _settings(monkeypatch: pytest.MonkeyPatch, **env: str) -> ServiceSettings:
    for key in list(__import__("os").environ):
        if key.startswith("GXAMI_KAFKA_"):
            monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return ServiceSettings()


def _refusal(monkeypatch: pytest.MonkeyPatch, **env: str) -> str:
    with pytest.raises(ValidationError) as info:
        _settings(monkeypatch, **env)
    text = str(info.value)
    assert SECRET not in text
    return text


def test_sasl_ssl_with_scram_and_a_password_file_builds_tls_and_sasl_options(
    monkeypatch: pytest.MonkeyPatch, pki: Pki, password_file: Path
) -> None:
    s = _settings(
        monkeypatch,
        GXAMI_KAFKA_SECURITY_PROTOCOL="SASL_SSL",
        GXAMI_KAFKA_SASL_MECHANISM="SCRAM-SHA-512",
        GXAMI_KAFKA_SASL_USERNAME="collector",
        GXAMI_KAFKA_SASL_PASSWORD_FILE=str(password_file),
        GXAMI_KAFKA_SSL_CA_FILE=str(pki.ca),
    )
    opts = producer_options(s)
    assert opts["security_protocol"] == "SASL_SSL"
    assert opts["sasl_mechanism"] == "SCRAM-SHA-512"
    assert opts["sasl_plain_username"] == "collector"
    assert opts["sasl_plain_password"] == SECRET  # the trailing newline of the file is not part of it
    ctx = opts["ssl_context"]
    assert isinstance(ctx, ssl.SSLContext)
    assert ctx.check_hostname is True
    assert ctx.verify_mode == ssl.CERT_REQUIRED
    # one context for every client of this configuration: producers, consumers, admin clients
    assert consumer_options(s, "g")["ssl_context"] is ctx
    assert client_options(s.kafka_security())["ssl_context"] is ctx
    # the password is in no repr or dump of the settings
    assert SECRET not in repr(s) + str(s.model_dump()) + repr(s.kafka_security())


def test_the_password_can_come_from_a_named_environment_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MY_KAFKA_PW", SECRET)
    s = _settings(
        monkeypatch,
        GXAMI_KAFKA_SECURITY_PROTOCOL="SASL_PLAINTEXT",
        GXAMI_KAFKA_SASL_MECHANISM="SCRAM-SHA-256",
        GXAMI_KAFKA_SASL_USERNAME="ingest",
        GXAMI_KAFKA_SASL_PASSWORD_ENV="MY_KAFKA_PW",
    )
    opts = producer_options(s)
    assert opts["sasl_plain_password"] == SECRET
    assert "ssl_context" not in opts
    assert SECRET not in repr(s)


def test_mtls_loads_the_client_certificate(monkeypatch: pytest.MonkeyPatch, pki: Pki) -> None:
    s = _settings(
        monkeypatch,
        GXAMI_KAFKA_SECURITY_PROTOCOL="SSL",
        GXAMI_KAFKA_SSL_CA_FILE=str(pki.ca),
        GXAMI_KAFKA_SSL_CERT_FILE=str(pki.client_cert),
        GXAMI_KAFKA_SSL_KEY_FILE=str(pki.client_key),
    )
    ctx = producer_options(s)["ssl_context"]
    assert ctx.check_hostname is True
    # the certificate is in the context: a TLS server that requires one accepts this context
    assert ctx is ssl_context(s.kafka_security())
    with pytest.raises(ssl.SSLError):  # a key that does not match the certificate is refused at load
        ssl_context(KafkaSecurity("SSL", ca_file=pki.ca, cert_file=pki.client_cert, key_file=pki.server_key))


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"GXAMI_KAFKA_SECURITY_PROTOCOL": "SASL_SSL"}, "GXAMI_KAFKA_SASL_MECHANISM"),
        (
            {"GXAMI_KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "GXAMI_KAFKA_SASL_MECHANISM": "SCRAM-SHA-256"},
            "GXAMI_KAFKA_SASL_USERNAME",
        ),
        (
            {
                "GXAMI_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
                "GXAMI_KAFKA_SASL_MECHANISM": "SCRAM-SHA-256",
                "GXAMI_KAFKA_SASL_USERNAME": "u",
            },
            "GXAMI_KAFKA_SASL_PASSWORD_FILE",
        ),
        (
            {
                "GXAMI_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
                "GXAMI_KAFKA_SASL_MECHANISM": "SCRAM-SHA-256",
                "GXAMI_KAFKA_SASL_USERNAME": "u",
                "GXAMI_KAFKA_SASL_PASSWORD_FILE": "/nonexistent/kafka.password",
            },
            "GXAMI_KAFKA_SASL_PASSWORD_FILE",
        ),
        (
            {
                "GXAMI_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
                "GXAMI_KAFKA_SASL_MECHANISM": "PLAIN",
                "GXAMI_KAFKA_SASL_USERNAME": "u",
                "GXAMI_KAFKA_SASL_PASSWORD_ENV": "GXAMI_TEST_UNSET_VARIABLE",
            },
            "GXAMI_TEST_UNSET_VARIABLE",
        ),
        ({"GXAMI_KAFKA_SECURITY_PROTOCOL": "SSL", "GXAMI_KAFKA_SSL_CA_FILE": "/nonexistent/ca.pem"}, "CA_FILE"),
        ({"GXAMI_KAFKA_SECURITY_PROTOCOL": "SSL", "GXAMI_KAFKA_SSL_CERT_FILE": "/x.pem"}, "GXAMI_KAFKA_SSL_KEY_FILE"),
        ({"GXAMI_KAFKA_SASL_MECHANISM": "PLAIN"}, "GXAMI_KAFKA_SECURITY_PROTOCOL"),
        ({"GXAMI_KAFKA_SSL_CA_FILE": "/x.pem"}, "GXAMI_KAFKA_SECURITY_PROTOCOL"),
        ({"GXAMI_KAFKA_SECURITY_PROTOCOL": "TLS"}, "kafka_security_protocol"),
        ({"GXAMI_KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "GXAMI_KAFKA_SASL_MECHANISM": "GSSAPI"}, "sasl_mechanism"),
        ({"GXAMI_KAFKA_SASL_PASSWORD": SECRET}, "GXAMI_KAFKA_SASL_PASSWORD_FILE"),
    ],
)
def test_a_combination_that_cannot_work_is_a_bad_setting(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], named: str
) -> None:
    monkeypatch.delenv("GXAMI_TEST_UNSET_VARIABLE", raising=False)
    assert named in _refusal(monkeypatch, **env)


def test_a_ca_file_that_is_not_a_certificate_is_a_bad_setting(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    garbage = tmp_path / "ca.pem"
    garbage.write_text("not a certificate\n")
    text = _refusal(monkeypatch, GXAMI_KAFKA_SECURITY_PROTOCOL="SSL", GXAMI_KAFKA_SSL_CA_FILE=str(garbage))
    assert "cannot load the Kafka TLS files" in text
    assert "not a certificate" not in text


def test_connect_causes_are_one_line_and_name_what_failed(password_file: Path) -> None:
    sec = KafkaSecurity("SASL_SSL", "SCRAM-SHA-256", "ingest", password_file=password_file)
    CONNECT_FAILURES.reset(sec)
    verify = ssl.SSLCertVerificationError(1, "certificate verify failed")
    verify.verify_message = "unable to get local issuer certificate"
    cases: list[tuple[BaseException, str]] = [
        (verify, "TLS certificate verify failed: unable to get local issuer certificate"),
        (ssl.SSLEOFError(8, "EOF occurred in violation of protocol"), "plaintext listener"),
        (SaslAuthenticationFailed("invalid credentials"), "SASL authentication failed for user 'ingest'"),
        (ConnectionRefusedError(111, "refused"), "connection refused"),
        (KafkaConnectionError("Connection at 127.0.0.1:1 closed"), "closed the connection"),
    ]
    for exc, expected in cases:
        cause = connect_cause(exc, sec)
        assert expected in cause, cause
        assert "\n" not in cause
    # aiokafka's bare "Unable to bootstrap" takes the reason it logged for the node
    CONNECT_FAILURES.last = SaslAuthenticationFailed(f"echo {SECRET}")
    err = kafka_startup_error("broker.example:9093", KafkaConnectionError("Unable to bootstrap"), sec)
    assert str(err).startswith("cannot reach the Kafka broker at broker.example:9093: SASL authentication failed")
    assert SECRET not in str(err)  # even a server that echoes the password does not get it into the message
    CONNECT_FAILURES.last = None
