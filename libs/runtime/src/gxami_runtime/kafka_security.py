"""Kafka over TLS and SASL: the checked settings, the one SSL context, and one-line connect errors.

Settings come from ``ServiceSettings`` (``GXAMI_KAFKA_*``); ``check_security`` refuses a combination
that cannot work before anything connects. A password is read from a file or from an environment
variable whose *name* is a setting, only when a client is built, and it never enters a message.
Hostname checking is always on: there is no setting to turn it off.
"""

from __future__ import annotations

import functools
import logging
import os
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from aiokafka.errors import (
    KafkaConnectionError,
    KafkaError,
    KafkaTimeoutError,
    SaslAuthenticationFailed,
    UnsupportedSaslMechanismError,
)

SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["SCRAM-SHA-256", "SCRAM-SHA-512", "PLAIN"]


@dataclass(frozen=True, slots=True)
class KafkaSecurity:
    """What a Kafka client needs to authenticate; the password stays where it is until ``client_options``."""

    protocol: SecurityProtocol
    mechanism: SaslMechanism | None = None
    username: str | None = None
    password_file: Path | None = None
    password_env: str | None = None
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    key_password_file: Path | None = None

    @property
    def uses_tls(self) -> bool:
        return self.protocol in ("SSL", "SASL_SSL")

    @property
    def uses_sasl(self) -> bool:
        return self.protocol in ("SASL_PLAINTEXT", "SASL_SSL")


def check_security(sec: KafkaSecurity) -> None:
    """Raise ValueError naming the GXAMI_* variables of a combination that cannot work (never a value)."""
    if sec.uses_sasl:
        if sec.mechanism is None:
            raise ValueError(
                f"GXAMI_KAFKA_SASL_MECHANISM (SCRAM-SHA-256, SCRAM-SHA-512 or PLAIN) is required with "
                f"GXAMI_KAFKA_SECURITY_PROTOCOL={sec.protocol}"
            )
        if not sec.username:
            raise ValueError(f"GXAMI_KAFKA_SASL_USERNAME is required with GXAMI_KAFKA_SECURITY_PROTOCOL={sec.protocol}")
        if (sec.password_file is None) == (sec.password_env is None):
            raise ValueError(
                "exactly one of GXAMI_KAFKA_SASL_PASSWORD_FILE and GXAMI_KAFKA_SASL_PASSWORD_ENV is required "
                f"with GXAMI_KAFKA_SECURITY_PROTOCOL={sec.protocol}"
            )
        read_password(sec)  # missing or empty: refused now, not at the first connect
    elif sec.mechanism or sec.username or sec.password_file or sec.password_env:
        raise ValueError(
            f"GXAMI_KAFKA_SASL_* settings need GXAMI_KAFKA_SECURITY_PROTOCOL=SASL_SSL or SASL_PLAINTEXT, "
            f"not {sec.protocol}"
        )
    tls_files = (sec.ca_file, sec.cert_file, sec.key_file, sec.key_password_file)
    if not sec.uses_tls:
        if any(tls_files):
            raise ValueError(
                f"GXAMI_KAFKA_SSL_* settings need GXAMI_KAFKA_SECURITY_PROTOCOL=SSL or SASL_SSL, not {sec.protocol}"
            )
        return
    if (sec.cert_file is None) != (sec.key_file is None):
        raise ValueError("GXAMI_KAFKA_SSL_CERT_FILE and GXAMI_KAFKA_SSL_KEY_FILE go together (client certificate)")
    if sec.key_password_file is not None and sec.key_file is None:
        raise ValueError("GXAMI_KAFKA_SSL_KEY_PASSWORD_FILE needs GXAMI_KAFKA_SSL_KEY_FILE")
    for name, path in _named_files(sec):
        if not path.is_file():
            raise ValueError(f"{name}: no such file {path}")
    try:
        ssl_context(sec)
    except (ssl.SSLError, OSError) as exc:
        # The reason (e.g. "[SSL] PEM lib"), never the file's content or a key password.
        raise ValueError(f"cannot load the Kafka TLS files: {type(exc).__name__}: {_one_line(exc)}") from None


def _named_files(sec: KafkaSecurity) -> Iterator[tuple[str, Path]]:
    for name, path in (
        ("GXAMI_KAFKA_SSL_CA_FILE", sec.ca_file),
        ("GXAMI_KAFKA_SSL_CERT_FILE", sec.cert_file),
        ("GXAMI_KAFKA_SSL_KEY_FILE", sec.key_file),
        ("GXAMI_KAFKA_SSL_KEY_PASSWORD_FILE", sec.key_password_file),
    ):
        if path is not None:
            yield name, path


def _read_secret_file(name: str, path: Path) -> str:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ValueError(f"{name}: cannot read {path}: {exc.strerror or type(exc).__name__}") from None
    value = text.rstrip("\r\n")  # a trailing newline is how files end, not part of the secret
    if not value:
        raise ValueError(f"{name}: {path} is empty")
    return value


def read_password(sec: KafkaSecurity) -> str:
    """The SASL password, from its file or its named environment variable; ValueError names which is missing."""
    if sec.password_file is not None:
        return _read_secret_file("GXAMI_KAFKA_SASL_PASSWORD_FILE", sec.password_file)
    if sec.password_env is None:
        raise ValueError("no SASL password source (GXAMI_KAFKA_SASL_PASSWORD_FILE or GXAMI_KAFKA_SASL_PASSWORD_ENV)")
    value = os.environ.get(sec.password_env, "")
    if not value:
        raise ValueError(f"GXAMI_KAFKA_SASL_PASSWORD_ENV: the variable {sec.password_env} is not set or empty")
    return value


def ssl_context(sec: KafkaSecurity) -> ssl.SSLContext:
    """The one SSLContext of this TLS configuration (built once per process, shared by every client)."""
    return _ssl_context(sec.ca_file, sec.cert_file, sec.key_file, sec.key_password_file)


@functools.lru_cache(maxsize=8)
def _ssl_context(
    ca_file: Path | None, cert_file: Path | None, key_file: Path | None, key_password_file: Path | None
) -> ssl.SSLContext:
    # create_default_context: CERT_REQUIRED and check_hostname on, TLS 1.2 at least; without a CA
    # file the system's trust store (a managed Kafka with a public certificate).
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(ca_file) if ca_file else None)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if cert_file is not None:
        password = (
            _read_secret_file("GXAMI_KAFKA_SSL_KEY_PASSWORD_FILE", key_password_file) if key_password_file else None
        )
        ctx.load_cert_chain(str(cert_file), str(key_file) if key_file else None, password=password)
    return ctx


def client_options(sec: KafkaSecurity) -> dict[str, Any]:
    """aiokafka's security keyword arguments for ``sec``."""
    opts: dict[str, Any] = {"security_protocol": sec.protocol}
    CONNECT_FAILURES.reset(sec)
    if sec.uses_tls:
        opts["ssl_context"] = ssl_context(sec)
    if sec.uses_sasl:
        opts["sasl_mechanism"] = sec.mechanism
        opts["sasl_plain_username"] = sec.username
        opts["sasl_plain_password"] = read_password(sec)
    return opts


# --- one-line connect errors -------------------------------------------------------------------

_ONE_LINE_MAX = 300


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:_ONE_LINE_MAX]


class _ConnectFailures(logging.Filter):
    """Keeps the reason aiokafka logged for its last failed connection; drops those records while quiet.

    aiokafka's bootstrap logs each node's failure and then raises a bare "Unable to bootstrap":
    the reason (certificate, password, refused) is only in that log record.
    """

    def __init__(self) -> None:
        super().__init__()
        self.last: BaseException | None = None
        self.quiet = 0
        self.security: KafkaSecurity | None = None  # of the last client built: names the user in a SASL error

    def reset(self, security: KafkaSecurity) -> None:
        self.last = None
        self.security = security

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        failed = str(record.msg).startswith(("Unable connect to", "Unable to request metadata"))
        if failed and isinstance(args, tuple) and args and isinstance(args[-1], BaseException):
            self.last = args[-1]
        return self.quiet == 0


CONNECT_FAILURES = _ConnectFailures()
logging.getLogger("aiokafka").addFilter(CONNECT_FAILURES)  # aiokafka.client logs to "aiokafka" itself


def connect_cause(exc: BaseException, sec: KafkaSecurity | None = None) -> str:
    """Why a Kafka client could not connect, in words and without secrets (one line)."""
    sec = sec or CONNECT_FAILURES.security
    seen = exc
    if isinstance(exc, KafkaConnectionError) and CONNECT_FAILURES.last is not None:
        seen = CONNECT_FAILURES.last
    cause = _describe(seen, sec)
    if sec is not None and sec.uses_sasl:
        try:
            secret = read_password(sec)
        except ValueError:
            secret = ""
        if secret:
            cause = cause.replace(secret, "***")
    return cause


def _describe(exc: BaseException, sec: KafkaSecurity | None) -> str:
    tls = sec is not None and sec.uses_tls
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"TLS certificate verify failed: {exc.verify_message or _one_line(exc)}"
    if isinstance(exc, (ssl.SSLEOFError, ssl.SSLZeroReturnError)) or (tls and isinstance(exc, ConnectionResetError)):
        return "the broker closed the connection during the TLS handshake (is it a plaintext listener?)"
    if isinstance(exc, ssl.SSLError):
        reason = exc.reason or _one_line(exc)
        if "WRONG_VERSION_NUMBER" in str(reason).upper() or "record layer failure" in str(reason):
            return f"TLS handshake failed: {reason} (is it a plaintext listener?)"
        return f"TLS handshake failed: {reason}"
    if isinstance(exc, SaslAuthenticationFailed):
        who = f" for user {sec.username!r} with {sec.mechanism}" if sec is not None and sec.username else ""
        return f"SASL authentication failed{who}: {_one_line(exc)}"
    if isinstance(exc, UnsupportedSaslMechanismError):
        return f"the broker does not offer this SASL mechanism: {_one_line(exc)}"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, (TimeoutError, KafkaTimeoutError)):
        # A plaintext Kafka listener reads a TLS ClientHello as the start of a huge frame and waits.
        return "timed out during connect or TLS handshake (is it a plaintext listener?)" if tls else "timed out"
    if isinstance(exc, KafkaConnectionError) and "closed" in str(exc):
        # With TLS 1.3 a refused client certificate is only seen as a close after the handshake.
        if tls:
            return "the broker closed the connection after the TLS handshake (does it want a client certificate?)"
        return "the broker closed the connection (does it expect TLS or SASL?)"
    if isinstance(exc, KafkaConnectionError):
        return "connection failed"
    if isinstance(exc, (KafkaError, OSError)):
        return f"{type(exc).__name__}: {_one_line(exc)}"
    return type(exc).__name__
