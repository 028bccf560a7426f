"""The readings roll-ups at 15 minutes, 1 hour and 1 day, and keeping them up to date.

On TimescaleDB they are continuous aggregates with real-time aggregation and refresh policies:
nothing needs to call :func:`refresh_aggregates` except after a bulk back-fill older than the
policies' window. On plain PostgreSQL they are materialized views: call it on a schedule (for
example every 15 minutes from one service); readers are not blocked while it runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import datetime, timedelta

import asyncpg

from gxami_store.migrations import storage_kind

log = logging.getLogger(__name__)

AGGREGATES = ("readings_15m", "readings_1h", "readings_1d")

_REFRESH_LOCK = 0x67_78_72_6F_6C  # "gxrol": one refresh at a time across pods


async def refresh_aggregates(
    conn: asyncpg.Connection, *, start: datetime | None = None, end: datetime | None = None
) -> list[str]:
    """Refresh the roll-ups (the window applies on TimescaleDB only); returns those refreshed.

    Returns an empty list when another process holds the refresh lock: that one does the work.
    Must not run inside a transaction (TimescaleDB refreshes refuse to).
    """
    storage = await storage_kind(conn)
    if not await conn.fetchval("SELECT pg_try_advisory_lock($1)", _REFRESH_LOCK):
        return []
    done: list[str] = []
    try:
        for name in AGGREGATES:
            if storage == "timescaledb":
                await conn.execute(
                    "CALL refresh_continuous_aggregate($1::text::regclass, $2::timestamptz, $3::timestamptz)",
                    name,
                    start,
                    end,
                )
            else:
                # Names come from the constant above, never from input.
                await conn.execute(f"REFRESH MATERIALIZED VIEW CONCURRENTLY {name}")
            done.append(name)
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", _REFRESH_LOCK)
    log.info("refreshed aggregates", extra={"aggregates": done, "storage": storage})
    return done


async def refresh_aggregates_periodically(dsn: str, every: timedelta, stop: asyncio.Event) -> None:
    """On plain PostgreSQL, refresh the roll-ups every ``every`` until ``stop``; on TimescaleDB return at once."""
    conn: asyncpg.Connection | None = None
    try:
        while not stop.is_set():
            try:
                if conn is None or conn.is_closed():
                    conn = await asyncpg.connect(dsn, timeout=10)
                if await storage_kind(conn) == "timescaledb":
                    return  # the continuous aggregate policies do this
                await refresh_aggregates(conn)
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
                log.warning("refreshing aggregates failed; will retry", extra={"error": repr(exc)})
                if conn is not None:
                    conn.terminate()
                    conn = None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), every.total_seconds())
    finally:
        if conn is not None:
            await conn.close()
