"""Fixtures for every test in the workspace.

One broker and one database per test session (real images under Docker when an engine
answers, else the local Tansu + PostgreSQL stack started here), a fresh database per
test that wants one, and async hygiene: a test that leaves tasks or timers behind, or blocks the loop, fails.
"""

from __future__ import annotations

import asyncio
import logging
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from gxami_meterlab.devstack import StackEndpoints
from gxami_meterlab.devstack_session import session_stack

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


# A callback (or one step of a coroutine) that holds the loop this long fails its test: it stalls
# every other connection of a service. Far above what a busy 2-core machine adds to honest work.
SLOW_CALLBACK_SECONDS = 1.0


class _SlowCallbacks(logging.Handler):
    """Collects asyncio debug mode's "Executing <handle> took N seconds" reports."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.reports: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if isinstance(record.msg, str) and record.msg.startswith("Executing ") and "took" in record.msg:
            self.reports.append(record.getMessage())


def _pending_timers(loop: asyncio.AbstractEventLoop) -> list[asyncio.TimerHandle]:
    # BaseEventLoop keeps its timers in ``_scheduled``; a cancelled one stays there until the loop prunes it.
    scheduled: list[asyncio.TimerHandle] = getattr(loop, "_scheduled", [])
    return [h for h in scheduled if not h.cancelled()]


@pytest.fixture(autouse=True)
async def _no_leftover_tasks() -> AsyncIterator[None]:
    """Fail a test that leaves tasks or timer handles behind, or blocks the event loop.

    The loop runs in debug mode for the test, so asyncio reports every callback slower than
    SLOW_CALLBACK_SECONDS (and raises on calls into the loop from another thread).
    """
    loop = asyncio.get_running_loop()
    before = set(asyncio.all_tasks())
    timers_before = set(_pending_timers(loop))
    slow = _SlowCallbacks()
    asyncio_log = logging.getLogger("asyncio")
    asyncio_log.addHandler(slow)
    loop.set_debug(True)
    loop.slow_callback_duration = SLOW_CALLBACK_SECONDS
    try:
        yield
        await asyncio.sleep(0)
    finally:
        loop.set_debug(False)
        asyncio_log.removeHandler(slow)
    left = [t for t in asyncio.all_tasks() - before if not t.done() and t is not asyncio.current_task()]
    for t in left:
        t.cancel()
    timers = [h for h in _pending_timers(loop) if h not in timers_before]
    for h in timers:
        h.cancel()
    assert not left, f"test left {len(left)} task(s) running: {[t.get_coro() for t in left][:3]}"
    assert not timers, f"test left {len(timers)} timer handle(s) scheduled: {timers[:3]}"
    assert not slow.reports, f"the event loop was blocked over {SLOW_CALLBACK_SECONDS} s: {slow.reports[:3]}"
