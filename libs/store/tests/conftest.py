"""Fixtures for the store tests: PGlite with TimescaleDB behind pglite-socket (deploy/pglite).

The node modules are installed by `make` (`npm ci --prefix deploy/pglite`); nothing is installed
here. Without node or those modules the TimescaleDB tests fail, naming what is missing.
PGlite is one in-memory database serving one session at a time, so the server is shared by the
session's tests; each test uses its own meter ids. Close connections with ``terminate()``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from gxami_store.pglite import PGliteUnavailableError, pglite_server

PGLITE_DIR = Path(__file__).resolve().parents[3] / "deploy" / "pglite"


@pytest.fixture(scope="session")
def pglite_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """DSN of a PGlite + TimescaleDB 2.23 server on 127.0.0.1 (a free port), for this session."""
    log_path = tmp_path_factory.mktemp("pglite") / "server.log"
    with contextlib.ExitStack() as stack:
        try:
            dsn = stack.enter_context(pglite_server(PGLITE_DIR, log_path))
        except PGliteUnavailableError as exc:
            pytest.fail(f"PGlite/TimescaleDB could not start ({exc}); `make install` runs npm ci for it")
        yield dsn
