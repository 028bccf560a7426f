"""The broker and database the ingest benchmarks run against, and the processes they start.

The stack is the test suite's: Apache Kafka and TimescaleDB under Docker when an engine
answers (``GXAMI_TEST_STACK=docker|local`` forces the choice), else the local dev stack
(Tansu + PostgreSQL, :class:`gxami_meterlab.devstack.DevStack`) in a temporary folder.
It is started on first use and stopped, with its folder removed, when the run ends.
Each benchmark works in a database of its own, dropped afterwards.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import subprocess
import sys
import tempfile
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from gxami_meterlab.devstack import StackEndpoints
from gxami_meterlab.devstack_session import session_stack

# shared_buffers for the benchmark database: a quarter of a small server's memory is the usual
# rule; the dev stack's 32MB would measure buffer thrashing, not gxami.
BENCH_SHARED_BUFFERS = "2GB"


class BenchStack:
    """One broker and one database for the whole run, started lazily."""

    def __init__(self) -> None:
        self._exit = contextlib.ExitStack()
        self._endpoints: StackEndpoints | None = None
        self.workdir: Path | None = None

    def _root(self) -> Path:
        if self.workdir is None:
            self.workdir = Path(tempfile.mkdtemp(prefix="gxami-bench-"))
            self._exit.callback(shutil.rmtree, self.workdir, ignore_errors=True)
        return self.workdir

    def scratch(self, name: str) -> Path:
        """A folder of this run (logs, fleet files), removed when the run ends."""
        folder = self._root() / name
        folder.mkdir(exist_ok=True)
        return folder

    def endpoints(self) -> StackEndpoints:
        """Start the stack if needed; where its broker and database listen."""
        if self._endpoints is None:
            # A deployment gives PostgreSQL far more than the dev stack's 32MB; measure like one.
            self._endpoints = self._exit.enter_context(
                session_stack(self._root(), postgres_settings={"shared_buffers": BENCH_SHARED_BUFFERS})
            )
        return self._endpoints

    def close(self) -> None:
        """Stop everything this stack started and remove its folder; a no-op when nothing started."""
        self._endpoints = None
        self.workdir = None
        self._exit.close()

    @contextlib.asynccontextmanager
    async def database(self, purpose: str) -> AsyncIterator[str]:
        """DSN of a new empty database for one benchmark, dropped when the block ends."""
        admin_dsn = self.endpoints().database_url
        name = f"bench_{purpose}_{uuid.uuid4().hex[:8]}"
        admin = await asyncpg.connect(admin_dsn, timeout=10)
        try:
            await admin.execute(f'CREATE DATABASE "{name}"')
        finally:
            await admin.close()
        try:
            yield urlunsplit(urlsplit(admin_dsn)._replace(path=f"/{name}"))
        finally:
            admin = await asyncpg.connect(admin_dsn, timeout=10)
            try:
                await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            finally:
                await admin.close()


class ServiceProcess:
    """A gxami service run as ``python -m MODULE`` in its own session, output to a log file."""

    def __init__(self, module: str, env: dict[str, str], log: Path) -> None:
        self.module = module
        self.log = log
        with log.open("wb") as out:
            # Its own session: a Ctrl-C meant for the bench reaches it only through stop().
            self.proc = subprocess.Popen(
                [sys.executable, "-m", module],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def running(self) -> bool:
        return self.proc.poll() is None

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM (the service drains and exits), then SIGKILL after ``timeout``; the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return int(self.proc.returncode)

    def tail(self, lines: int = 20) -> str:
        """The end of its log, for an error message."""
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""
