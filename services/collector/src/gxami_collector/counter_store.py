"""DLMS invocation counters in PostgreSQL, for any number of collector pods (GXAMI_INVOCATION_COUNTERS_DSN).

Implements :class:`gxcore.protocols.dlms.invocation.InvocationCounterStore` (see there why a
counter is never reused) on asyncpg, over the ``invocation_counters`` table of migration 0017:

* a window is reserved by one atomic ``INSERT ... ON CONFLICT DO UPDATE ... RETURNING`` per
  (meter, client address, client system title, key generation); the row lock orders concurrent
  reservations from every pod, and the window is committed before any counter of it is used,
  so a SIGKILL, a restart or a rebalance wastes the rest of a window but never repeats one;
* a meter's session lock is a PostgreSQL advisory lock on a pooled connection: it is held for
  the session and dropped by the server when the holder's connection ends (a killed pod
  included); a full pool reads as "busy" and the session polls, as it does for a held meter.

The store protocol is synchronous (gxcore's sans-IO core calls it while building requests), and
a DLMS session calls a store that says ``blocking = True`` in a worker thread
(``asyncio.to_thread``). This store runs its queries on the event loop it was opened on: a worker
thread hands each call to that loop and waits for it, bounded by ``timeout``. Calling it on the
loop itself is refused (it would deadlock); releasing a hold there is scheduled instead.

The collector's database role needs only the ``gxami_collector`` grants of migration 0017.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Coroutine
from typing import Final, TypeVar

import asyncpg

from gxcore.errors import AccessDeniedError, ConfigurationError, GxError
from gxcore.protocols.dlms.invocation import MAX_COUNTER, MeterHold, checked_counter, window_bounds

T = TypeVar("T")

_RESERVE: Final = """
INSERT INTO invocation_counters AS c
    (meter, client_address, system_title, key_generation, next_counter, window_start)
VALUES ($1, $2, $3, $4, LEAST($5::bigint + $6::bigint, $7::bigint), $5::bigint)
ON CONFLICT (meter, client_address, system_title, key_generation) DO UPDATE SET
    window_start = GREATEST(c.next_counter, EXCLUDED.window_start),
    next_counter = LEAST(GREATEST(c.next_counter, EXCLUDED.window_start) + $6::bigint, $7::bigint),
    updated_at = now()
WHERE GREATEST(c.next_counter, EXCLUDED.window_start) <= $7::bigint - 1
RETURNING window_start
"""
_GET: Final = """
SELECT next_counter FROM invocation_counters
WHERE meter = $1 AND client_address = $2 AND system_title = $3 AND key_generation = $4
"""
_TRY_LOCK: Final = "SELECT pg_try_advisory_lock(hashtextextended('gxami meter session:' || $1, 0))"


class CounterStoreUnavailableError(GxError):
    """The counter database did not answer in time or refused: the session does not start (no counter is used)."""

    remote = False

    @property
    def kind(self) -> str:
        return "counter-store-unavailable"


def split_key(key: str) -> tuple[str, int, str, str]:
    """``<meter>/<client>/<system title>/<key generation>`` (gxcore's ``counter_key``) as its four columns."""
    parts = key.rsplit("/", 3)
    if len(parts) != 4 or not parts[0] or not parts[1].isdigit():
        raise ConfigurationError(f"invocation counter key {key!r} is not meter/client/system-title/key-generation")
    meter, client, title, generation = parts
    if len(title) != 16 or len(generation) != 16 or not all(c in "0123456789abcdef" for c in title + generation):
        raise ConfigurationError(f"invocation counter key {key!r}: system title or key generation is not 16 hex digits")
    return meter, int(client), title, generation


class _PgHold:
    """A meter's advisory lock on one pooled connection; giving the connection back unlocks it
    (asyncpg's reset runs ``pg_advisory_unlock_all()``), and so does the connection ending."""

    def __init__(self, store: PgInvocationCounters, conn: asyncpg.pool.PoolConnectionProxy[asyncpg.Record]) -> None:
        self._store: PgInvocationCounters | None = store
        self._conn = conn

    def release(self) -> None:
        store, self._store = self._store, None
        if store is not None:
            store._give_back(self._conn)


class PgInvocationCounters:
    """The counter store on PostgreSQL (see the module doc); open with :meth:`open`, end with :meth:`close`."""

    blocking = True  # database I/O: sessions call it in a worker thread, which hands it to the loop

    def __init__(self, pool: asyncpg.Pool[asyncpg.Record], *, timeout: float) -> None:
        self._pool = pool
        self._timeout = timeout
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._releasing: set[asyncio.Task[None]] = set()
        self._held: set[asyncpg.pool.PoolConnectionProxy[asyncpg.Record]] = set()

    @classmethod
    async def open(cls, dsn: str, *, max_sessions: int, timeout: float = 10.0) -> PgInvocationCounters:
        """Connect (``max_sessions`` meter locks at once, plus two connections for reservations) and
        check the table is there and ours to use. ConfigurationError, naming the cause, when not."""
        try:
            pool = await asyncpg.create_pool(
                dsn, min_size=1, max_size=max_sessions + 2, timeout=timeout, command_timeout=timeout
            )
        except (TimeoutError, OSError, asyncpg.PostgresError, ValueError) as exc:
            raise ConfigurationError(f"invocation counter database: cannot connect ({type(exc).__name__})") from None
        try:
            await pool.fetchval("SELECT count(*) FROM invocation_counters WHERE false")
        except asyncpg.UndefinedTableError:
            await pool.close()
            raise ConfigurationError(
                "invocation counter database has no invocation_counters table (run gxami db migrate)"
            ) from None
        except asyncpg.InsufficientPrivilegeError:
            await pool.close()
            raise ConfigurationError(
                "invocation counter database: this role may not read invocation_counters (GRANT gxami_collector)"
            ) from None
        except (TimeoutError, OSError, asyncpg.PostgresError) as exc:
            await pool.close()
            raise ConfigurationError(f"invocation counter database: {type(exc).__name__}") from None
        return cls(pool, timeout=timeout)

    async def close(self) -> None:
        """Let go of every meter still held (their sessions are over once the service stops), then disconnect."""
        for conn in list(self._held):
            self._give_back(conn)
        if self._releasing:
            await asyncio.gather(*self._releasing, return_exceptions=True)
        try:
            await asyncio.wait_for(self._pool.close(), self._timeout)
        except TimeoutError:
            self._pool.terminate()  # the server drops any advisory lock with the connection

    # -- async API (the loop's own callers) ---------------------------------------------
    async def aget(self, key: str) -> int | None:
        value = await self._pool.fetchval(_GET, *split_key(key), timeout=self._timeout)
        return None if value is None else int(value)

    async def areserve(self, key: str, floor: int, count: int) -> int:
        window_bounds(None, floor, count)  # the arguments checked, and a floor past 2^32-1 refused
        meter, client, title, generation = split_key(key)
        start = await self._pool.fetchval(
            _RESERVE, meter, client, title, generation, checked_counter(floor), count, MAX_COUNTER + 1,
            timeout=self._timeout,
        )  # fmt: skip
        if start is None:  # the row's mark is past 2^32-1: the WHERE refused the update
            raise AccessDeniedError("invocation counter exhausted: the meter needs new keys")
        return int(start)

    async def atry_hold(self, meter: str) -> MeterHold | None:
        try:
            conn = await self._pool.acquire(timeout=min(self._timeout, 0.5))
        except TimeoutError:
            return None  # every connection holds a meter: busy, the session polls again
        try:
            locked = await conn.fetchval(_TRY_LOCK, meter, timeout=self._timeout)
        except BaseException:
            await self._pool.release(conn)
            raise
        if not locked:
            await self._pool.release(conn)
            return None
        self._held.add(conn)
        return _PgHold(self, conn)

    # -- the store protocol (called from worker threads) ---------------------------------
    def get(self, key: str) -> int | None:
        return self._call(self.aget(key))

    def reserve(self, key: str, floor: int, count: int) -> int:
        return self._call(self.areserve(key, floor, count))

    def try_hold(self, meter: str) -> MeterHold | None:
        return self._call(self.atry_hold(meter))

    def _call(self, work: Coroutine[object, object, T]) -> T:
        if threading.get_ident() == self._loop_thread:
            work.close()
            raise RuntimeError("the PostgreSQL counter store is blocking: call it in a worker thread")
        future = asyncio.run_coroutine_threadsafe(work, self._loop)
        try:
            return future.result(timeout=self._timeout + 1)
        except (TimeoutError, concurrent.futures.TimeoutError):
            future.cancel()
            raise CounterStoreUnavailableError(
                f"invocation counter database: no answer within {self._timeout:g} s"
            ) from None
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            # The type only: a driver message may quote the statement's parameters.
            raise CounterStoreUnavailableError(f"invocation counter database: {type(exc).__name__}") from None

    def _give_back(self, conn: asyncpg.pool.PoolConnectionProxy[asyncpg.Record]) -> None:
        if conn not in self._held:
            return  # already given back (close() came first)
        self._held.discard(conn)
        if threading.get_ident() == self._loop_thread:
            task = self._loop.create_task(self._pool.release(conn))
            self._releasing.add(task)
            task.add_done_callback(self._releasing.discard)
        else:
            self._call(self._pool.release(conn))
