"""Fixtures for every test in the workspace.

One broker and one database per test session (real images under Docker when an engine
answers, else the local Tansu + PostgreSQL stack started here), a fresh database per
test that wants one, and async hygiene: a test that leaves tasks behind fails.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from gxami_runtime.devstack import StackEndpoints
from gxami_runtime.devstack_session import session_stack

# Hypothesis: a bounded, reproducible budget in CI; more with HYPOTHESIS_PROFILE=fuzz (make bench).
try:
    from hypothesis import HealthCheck, settings

    settings.register_profile(
        "ci", max_examples=200, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
    )
    settings.register_profile("fuzz", max_examples=20_000, deadline=None)
    settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
except ImportError:  # pragma: no cover - hypothesis is a dev dependency
    pass


@pytest.fixture(scope="session", autouse=True)
def _private_state_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """DLMS invocation counters (and meter locks) of CLIs and services under test: not in ~/.local/state."""
    saved = os.environ.get("XDG_STATE_HOME")
    os.environ["XDG_STATE_HOME"] = str(tmp_path_factory.mktemp("xdg-state"))
    yield
    if saved is None:
        os.environ.pop("XDG_STATE_HOME", None)
    else:
        os.environ["XDG_STATE_HOME"] = saved


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StackEndpoints]:
    """The session's broker and database; started on first use, stopped at the end."""
    root: Path = tmp_path_factory.mktemp("stack")
    with session_stack(root) as endpoints:
        yield endpoints


def _with_db(dsn: str, name: str) -> str:
    parts = urlsplit(dsn)
    return urlunsplit(parts._replace(path=f"/{name}"))


@pytest.fixture
async def database_url(stack: StackEndpoints) -> AsyncIterator[str]:
    """DSN of a new, empty database for this test only (dropped afterwards)."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(stack.database_url, timeout=10)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    yield _with_db(stack.database_url, name)
    admin = await asyncpg.connect(stack.database_url, timeout=10)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@pytest.fixture
def topic_prefix() -> str:
    """A unique prefix so tests sharing the session broker never see each other's messages."""
    return f"t{uuid.uuid4().hex[:8]}."


@pytest.fixture(autouse=True)
async def _no_leftover_tasks() -> AsyncIterator[None]:
    """Fail a test that leaves asyncio tasks running behind it."""
    before = set(asyncio.all_tasks())
    yield
    await asyncio.sleep(0)
    left = [t for t in asyncio.all_tasks() - before if not t.done() and t is not asyncio.current_task()]
    for t in left:
        t.cancel()
    assert not left, f"test left {len(left)} task(s) running: {[t.get_coro() for t in left][:3]}"
