"""A dev stack on disk: `<root>/state.json`, `<root>/dev.env`, and the lock that serialises starts and stops."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gxami_meterlab.devstack_kafka import HOST
from gxami_meterlab.devstack_postgres import DB_NAME, DB_USER
from gxami_meterlab.devstack_procs import DevStackError, ProcessRef

__all__ = [
    "ENV_FILE",
    "STATE_FILE",
    "StackEndpoints",
    "StackState",
    "forget_state",
    "read_state",
    "root_lock",
    "write_state",
]

STATE_FILE = "state.json"
ENV_FILE = "dev.env"
_LOCK_FILE = ".lock"
_STATE_VERSION = 1


@dataclass(frozen=True, slots=True)
class StackEndpoints:
    """Where the broker and the database listen, and whether the broker supports idempotent producers."""

    kafka_bootstrap: str
    database_url: str
    kafka_enable_idempotence: bool = False

    def env(self) -> dict[str, str]:
        """The GXAMI_* settings that point a service at this stack."""
        env = {
            "GXAMI_KAFKA_BOOTSTRAP": self.kafka_bootstrap,
            "GXAMI_DATABASE_URL": self.database_url,
            "GXAMI_KAFKA_ENABLE_IDEMPOTENCE": "true" if self.kafka_enable_idempotence else "false",
        }
        if not self.kafka_enable_idempotence:
            # Tansu completes a consumer-group join only after about half the session timeout;
            # short timeouts keep local starts and rebalances near a second. Real Kafka keeps defaults.
            env["GXAMI_KAFKA_SESSION_TIMEOUT_MS"] = "2000"
            env["GXAMI_KAFKA_HEARTBEAT_INTERVAL_MS"] = "500"
        return env


@dataclass(slots=True)
class StackState:
    """What state.json records: who owns the stack (None when detached), and each component's port and process."""

    detached: bool
    owner: ProcessRef | None
    kafka_port: int
    broker: ProcessRef | None
    pg_port: int
    postmaster: ProcessRef | None

    def endpoints(self) -> StackEndpoints:
        """The endpoints these ports give."""
        return StackEndpoints(
            kafka_bootstrap=f"{HOST}:{self.kafka_port}",
            database_url=f"postgresql://{DB_USER}@{HOST}:{self.pg_port}/{DB_NAME}",
        )

    def to_json(self) -> dict[str, Any]:
        """The JSON document written to state.json."""
        return {
            "version": _STATE_VERSION,
            "detached": self.detached,
            "owner": self.owner.to_json() if self.owner else None,
            "kafka": {"port": self.kafka_port, "process": self.broker.to_json() if self.broker else None},
            "postgres": {"port": self.pg_port, "process": self.postmaster.to_json() if self.postmaster else None},
        }

    @classmethod
    def from_json(cls, data: Any) -> StackState | None:
        """Parse state.json; a document of another version or shape reads as no state."""
        if not isinstance(data, dict) or data.get("version") != _STATE_VERSION:
            return None
        kafka, pg = data.get("kafka"), data.get("postgres")
        if not isinstance(kafka, dict) or not isinstance(pg, dict):
            return None
        kafka_port, pg_port = kafka.get("port"), pg.get("port")
        if not isinstance(kafka_port, int) or not isinstance(pg_port, int):
            return None
        return cls(
            detached=data.get("detached") is True,
            owner=ProcessRef.from_json(data.get("owner")),
            kafka_port=kafka_port,
            broker=ProcessRef.from_json(kafka.get("process")),
            pg_port=pg_port,
            postmaster=ProcessRef.from_json(pg.get("process")),
        )


def read_state(root: Path) -> StackState | None:
    """The state recorded in `<root>/state.json`, or None."""
    try:
        return StackState.from_json(json.loads((root / STATE_FILE).read_text()))
    except (OSError, ValueError):
        return None


def write_state(root: Path, state: StackState) -> None:
    """Replace state.json atomically and rewrite dev.env."""
    tmp = root / f".{STATE_FILE}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(state.to_json(), indent=2) + "\n")
    os.replace(tmp, root / STATE_FILE)
    env = "".join(f"{key}={value}\n" for key, value in state.endpoints().env().items())
    (root / ENV_FILE).write_text(env)


def forget_state(root: Path) -> None:
    """Remove state.json and dev.env."""
    for name in (STATE_FILE, ENV_FILE):
        with contextlib.suppress(FileNotFoundError):
            (root / name).unlink()


@contextlib.contextmanager
def root_lock(root: Path, timeout: float = 60.0) -> Iterator[None]:
    """Serialise starts and stops on one root across processes (flock on `<root>/.lock`)."""
    root.mkdir(parents=True, exist_ok=True)
    with (root / _LOCK_FILE).open("a") as fh:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise DevStackError(f"dev stack in {root} is locked by another start/stop") from None
                time.sleep(0.05)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
