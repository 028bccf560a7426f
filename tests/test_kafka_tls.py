"""Every service's Kafka clients over TLS with SCRAM to the local broker; each wrong setting is one line (issue 8).

The broker is the real Tansu, reached through the dev stack's TLS/SASL front (gxami_meterlab.kafka_front
says why Tansu 0.6.0 cannot terminate TLS or authenticate itself). The clients are the services' own:
their settings classes, ``ensure_topics`` (admin client), ``make_producer`` and ``make_consumer``.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from gxami_collector.settings import CollectorSettings
from gxami_ingest.settings import IngestSettings
from gxami_meterlab.devstack import DevStack
from gxami_meterlab.devstack_kafka import (
    KafkaFrontOptions,
    SecureKafkaFront,
    TansuBroker,
    start_secure_broker,
)
from gxami_meterlab.kafka_front import make_pki
from gxami_reports.settings import ReportsSettings
from gxami_runtime.kafka import ensure_topics, make_consumer, make_producer, start_clients
from gxami_runtime.kafka_security import read_password
from gxami_runtime.service import KafkaStartupError
from gxami_runtime.settings import ServiceSettings
from gxami_scheduler.settings import SchedulerSettings

SERVICES: dict[str, type[ServiceSettings]] = {
    "collector": CollectorSettings,
    "ingest": IngestSettings,
    "scheduler": SchedulerSettings,
}


class SecureBroker:
    def __init__(self, root: Path, options: KafkaFrontOptions) -> None:
        self.tansu, self.broker, self.front = start_secure_broker(root, options, timeout=30.0)

    @property
    def bootstrap(self) -> str:
        return f"localhost:{self.front.port}"  # a name, so the certificate's DNS name is checked too

    @property
    def tansu_bootstrap(self) -> str:
        """The plaintext broker behind the front."""
        return f"127.0.0.1:{self.front.backend_port}"

    def passwords(self) -> list[str]:
        if not self.front.options.sasl:
            return []
        return [self.front.password_file(u).read_text().strip() for u in self.front.options.users]

    def stop(self) -> None:
        self.front.stop(5.0)
        TansuBroker.stop(self.broker, 5.0)


@pytest.fixture(scope="module")
def sasl_ssl(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureBroker]:
    broker = SecureBroker(tmp_path_factory.mktemp("sasl-ssl"), KafkaFrontOptions(tls=True, sasl=True))
    yield broker
    broker.stop()


@pytest.fixture(scope="module")
def mtls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureBroker]:
    broker = SecureBroker(tmp_path_factory.mktemp("mtls"), KafkaFrontOptions(tls=True, sasl=False, mtls=True))
    yield broker
    broker.stop()


def _settings(cls: type[ServiceSettings], bootstrap: str, env: dict[str, str]) -> ServiceSettings:
    saved = {k: v for k, v in os.environ.items() if k.startswith("GXAMI_KAFKA_")}
    for key in saved:
        del os.environ[key]
    os.environ.update(env)
    try:
        return cls(
            kafka_bootstrap=bootstrap,
            kafka_enable_idempotence=False,
            kafka_request_timeout_ms=5000,
            kafka_session_timeout_ms=2000,
            kafka_heartbeat_interval_ms=500,
        )
    finally:
        for key in env:
            os.environ.pop(key, None)
        os.environ.update(saved)


async def _round_trip(settings: ServiceSettings) -> None:
    topic = "ami.readings"
    await ensure_topics(settings, [topic])
    value = uuid.uuid4().hex.encode()
    producer = make_producer(settings)
    await producer.start()
    try:
        await producer.send_and_wait(settings.topic(topic), value, key=b"M1")
    finally:
        await producer.stop()
    consumer = make_consumer(settings, f"tls-check-{uuid.uuid4().hex[:8]}", settings.topic(topic))
    await consumer.start()
    try:
        seen: list[bytes] = []
        for _ in range(20):
            batches = await consumer.getmany(timeout_ms=500)
            seen += [r.value for records in batches.values() for r in records if r.value is not None]
            if value in seen:
                break
    finally:
        await consumer.stop()
    assert value in seen


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-256", "SCRAM-SHA-512", "PLAIN"])
@pytest.mark.parametrize("service", list(SERVICES))
async def test_every_service_round_trips_over_sasl_ssl(sasl_ssl: SecureBroker, service: str, mechanism: str) -> None:
    settings = _settings(SERVICES[service], sasl_ssl.bootstrap, sasl_ssl.front.client_env(service, mechanism))
    assert settings.kafka_security_protocol == "SASL_SSL"
    await _round_trip(settings)


def test_reports_takes_the_same_kafka_settings(sasl_ssl: SecureBroker) -> None:
    """Reports has no Kafka client today; its settings still accept and check the shared GXAMI_KAFKA_* values."""
    settings = _settings(ReportsSettings, sasl_ssl.bootstrap, sasl_ssl.front.client_env("reports"))
    assert read_password(settings.kafka_security()) in sasl_ssl.passwords()


async def test_mtls_round_trips_with_a_client_certificate(mtls: SecureBroker) -> None:
    await _round_trip(_settings(CollectorSettings, mtls.bootstrap, mtls.front.client_env("collector")))


async def _startup_error(settings: ServiceSettings) -> str:
    with pytest.raises(KafkaStartupError) as info:
        await start_clients(settings, "never", "ami.read-jobs")
    # aiokafka drops a refused TLS connection without awaiting its close: let asyncio's TLS shutdown
    # (and its timer) finish before the loop hygiene check looks for leftovers.
    await asyncio.sleep(0.2)
    text = str(info.value)
    assert "\n" not in text
    return text


def _wrong_password_env(front: SecureKafkaFront, tmp_path: Path) -> dict[str, str]:
    wrong = tmp_path / "wrong.password"
    wrong.write_text("not-the-password\n")
    return {**front.client_env("collector"), "GXAMI_KAFKA_SASL_PASSWORD_FILE": str(wrong)}


Case = tuple[str, dict[str, str], str]  # bootstrap, GXAMI_KAFKA_* settings, the cause the message must name


@pytest.fixture(scope="module")
def other_ca(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CA that did not sign the broker's certificate (made outside the event loop)."""
    return make_pki(tmp_path_factory.mktemp("other-pki"), name="some other CA").ca


def _failure_cases(broker: SecureBroker, mtls: SecureBroker, tmp_path: Path, other_ca: Path) -> dict[str, Case]:
    front = broker.front
    return {
        "wrong-password": (broker.bootstrap, _wrong_password_env(front, tmp_path), "SASL authentication failed"),
        "unknown-user": (
            broker.bootstrap,
            {**front.client_env("collector"), "GXAMI_KAFKA_SASL_USERNAME": "mallory"},
            "SASL authentication failed for user 'mallory'",
        ),
        "unknown-ca": (
            broker.bootstrap,
            {**front.client_env("collector"), "GXAMI_KAFKA_SSL_CA_FILE": str(other_ca)},
            "TLS certificate verify failed",
        ),
        "plaintext-to-tls": (broker.bootstrap, {"GXAMI_KAFKA_SECURITY_PROTOCOL": "PLAINTEXT"}, "closed the connection"),
        "tls-to-plaintext": (
            broker.tansu_bootstrap,
            {**front.client_env("collector"), "GXAMI_KAFKA_SECURITY_PROTOCOL": "SSL"}
            | {"GXAMI_KAFKA_SASL_MECHANISM": "", "GXAMI_KAFKA_SASL_USERNAME": "", "GXAMI_KAFKA_SASL_PASSWORD_FILE": ""},
            "plaintext listener",
        ),
        "no-client-certificate": (
            mtls.bootstrap,
            {"GXAMI_KAFKA_SECURITY_PROTOCOL": "SSL", "GXAMI_KAFKA_SSL_CA_FILE": str(mtls.front.pki.ca)}
            if mtls.front.pki
            else {},
            "client certificate",
        ),
        "unreachable": ("127.0.0.1:1", front.client_env("collector"), "connection refused"),
    }


CASES = [
    "wrong-password",
    "unknown-user",
    "unknown-ca",
    "plaintext-to-tls",
    "tls-to-plaintext",
    "no-client-certificate",
    "unreachable",
]


def _clean(env: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in env.items() if v}


@pytest.mark.parametrize("case", CASES)
async def test_each_wrong_connection_is_one_line_naming_the_broker_and_the_cause(
    sasl_ssl: SecureBroker, mtls: SecureBroker, tmp_path: Path, other_ca: Path, case: str
) -> None:
    bootstrap, env, cause = _failure_cases(sasl_ssl, mtls, tmp_path, other_ca)[case]
    text = await _startup_error(_settings(CollectorSettings, bootstrap, _clean(env)))
    assert text.startswith(f"cannot reach the Kafka broker at {bootstrap}: "), text
    assert cause in text, text
    for secret in sasl_ssl.passwords():
        assert secret not in text


@pytest.mark.parametrize("case", ["wrong-password", "unknown-ca", "plaintext-to-tls", "tls-to-plaintext"])
def test_a_service_with_a_wrong_connection_exits_2_with_one_line(
    sasl_ssl: SecureBroker, mtls: SecureBroker, tmp_path: Path, other_ca: Path, case: str
) -> None:
    bootstrap, env, cause = _failure_cases(sasl_ssl, mtls, tmp_path, other_ca)[case]
    base = {k: v for k, v in os.environ.items() if not k.startswith("GXAMI_KAFKA_")}
    proc = subprocess.run(
        [sys.executable, "-m", "gxami_cli", "collector"],
        env={**base, **_clean(env), "GXAMI_KAFKA_BOOTSTRAP": bootstrap, "GXAMI_KAFKA_REQUEST_TIMEOUT_MS": "5000"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"gxami collector: cannot reach the Kafka broker at {bootstrap}: "), lines[0]
    assert cause in lines[0], lines[0]
    assert "Traceback" not in proc.stderr
    for secret in [*sasl_ssl.passwords(), "not-the-password"]:
        assert secret not in proc.stderr + proc.stdout


@pytest.fixture
def secure_dev_stack(tmp_path: Path) -> Iterator[DevStack]:
    with DevStack(tmp_path / "dev", kafka_security=KafkaFrontOptions()) as stack:  # started outside the loop
        yield stack


async def test_the_dev_stack_can_run_its_broker_behind_tls_and_scram(secure_dev_stack: DevStack) -> None:
    """``DevStack(kafka_security=...)``: one user per service, the broker reachable only through the front."""
    stack = secure_dev_stack
    env = stack.kafka_env("ingest", "SCRAM-SHA-256")
    assert env["GXAMI_KAFKA_SECURITY_PROTOCOL"] == "SASL_SSL"
    assert env["GXAMI_KAFKA_BOOTSTRAP"] == stack.kafka_bootstrap != stack.endpoints.kafka_bootstrap
    front = stack.kafka_front
    assert front is not None
    assert front.password_file("ingest").stat().st_mode & 0o077 == 0  # the password file is private
    kafka_env = {k: v for k, v in env.items() if k.startswith("GXAMI_KAFKA_") and k != "GXAMI_KAFKA_BOOTSTRAP"}
    await _round_trip(_settings(IngestSettings, env["GXAMI_KAFKA_BOOTSTRAP"], kafka_env))
