"""A broker and a database for a test session: real images under Docker if an engine answers, else the local stack.

GXAMI_TEST_STACK=local|docker forces the choice; unset (or `auto`) means Docker when its engine
answers a ping within a second. Under Docker the broker is Apache Kafka (KRaft, Confluent image) with
idempotent producers, and the database is TimescaleDB; locally they are Tansu and plain PostgreSQL.
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Iterator, Mapping
from pathlib import Path

from gxami_meterlab.devstack import DevStack, StackEndpoints
from gxami_meterlab.devstack_postgres import DB_NAME, DB_USER
from gxami_meterlab.devstack_procs import DevStackError

__all__ = ["KAFKA_IMAGE", "TIMESCALE_IMAGE", "docker_reachable", "session_stack", "stack_backend"]

KAFKA_IMAGE = "confluentinc/cp-kafka:7.6.0"  # Kafka 3.6 in KRaft mode; what KafkaContainer's start script drives
TIMESCALE_IMAGE = "timescale/timescaledb:latest-pg16"
_ENV_CHOICE = "GXAMI_TEST_STACK"


def docker_reachable(timeout: float = 1.0) -> bool:
    """True when the Docker engine at $DOCKER_HOST (default: the local unix socket) answers GET /_ping."""
    host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    try:
        if host.startswith("unix://"):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(timeout)
            try:
                sock.connect(host.removeprefix("unix://"))
            except OSError:
                sock.close()
                raise
        elif host.startswith("tcp://"):
            address, _, port = host.removeprefix("tcp://").rstrip("/").rpartition(":")
            sock = socket.create_connection((address, int(port)), timeout=timeout)
            if os.environ.get("DOCKER_TLS_VERIFY"):
                sock.close()  # a TLS engine that accepts TCP is taken as reachable; testcontainers does TLS
                return True
        else:
            return False
        with sock:
            sock.settimeout(timeout)
            sock.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
            first_line = sock.recv(128).split(b"\r\n", 1)[0]
    except (OSError, ValueError):
        return False
    return first_line.startswith(b"HTTP/1.") and b" 200" in first_line


def stack_backend() -> str:
    """`docker` or `local`: $GXAMI_TEST_STACK if set, else whether a Docker engine is reachable."""
    choice = os.environ.get(_ENV_CHOICE, "auto").strip().lower()
    if choice in ("local", "docker"):
        return choice
    if choice not in ("", "auto"):
        raise DevStackError(f"{_ENV_CHOICE} must be local, docker or auto, not {choice!r}")
    return "docker" if docker_reachable() else "local"


@contextlib.contextmanager
def _docker_stack() -> Iterator[StackEndpoints]:
    # Test-only dependencies, imported only on this path.
    from testcontainers.community.kafka import KafkaContainer
    from testcontainers.community.postgres import PostgresContainer

    kafka = KafkaContainer(KAFKA_IMAGE).with_kraft()
    database = PostgresContainer(TIMESCALE_IMAGE, username=DB_USER, password=DB_USER, dbname=DB_NAME, driver=None)
    with kafka, database:
        yield StackEndpoints(
            kafka_bootstrap=kafka.get_bootstrap_server(),
            database_url=database.get_connection_url(),
            kafka_enable_idempotence=True,
        )


@contextlib.contextmanager
def session_stack(tmp_root: Path, *, postgres_settings: Mapping[str, str] | None = None) -> Iterator[StackEndpoints]:
    """Yield endpoints of a broker and a database that exist until the block ends (see module doc).

    ``postgres_settings`` apply to the local PostgreSQL only (the Docker image keeps its own).
    """
    if stack_backend() == "docker":
        with _docker_stack() as endpoints:
            yield endpoints
        return
    with DevStack(tmp_root / "devstack", fresh=True, keep_data=False, postgres_settings=postgres_settings) as stack:
        yield stack.endpoints
