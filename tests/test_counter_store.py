"""DLMS invocation counters in PostgreSQL (gxami_collector.counter_store) on the session stack's database.

Windows reserved from many threads and two stores ("pods") never overlap; a meter's session lock
is exclusive across stores and let go when its holder's connections end; the collector's role
may reserve counters and read nothing else; ciphered sessions against a simulator that refuses
a reused counter (fail_on_repeat) share one counter sequence across two stores.
"""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from gxami_collector.counter_store import PgInvocationCounters, split_key
from gxami_meterlab.simulators.dlms import DlmsFleetSimulator, client_security
from gxami_store.migrations import migrate
from gxcore.drivers.dlms import DlmsSession
from gxcore.errors import AccessDeniedError, ConfigurationError
from gxcore.protocols.dlms import CosemValue, DlmsParameters
from gxcore.protocols.dlms.invocation import MAX_COUNTER, InvocationCounterStore, counter_key, key_generation
from gxcore.secrets import Secret

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

SEED = 11


@pytest.fixture
async def migrated(database_url: str) -> str:
    conn = await asyncpg.connect(database_url, timeout=10)
    try:
        await migrate(conn)
    finally:
        await conn.close()
    return database_url


def test_the_key_generation_follows_the_keys_and_never_shows_them() -> None:
    security = client_security(SEED, 0)
    other = dataclasses.replace(security, block_cipher_key=Secret(bytes(16)))
    key = counter_key("tcp://10.0.0.1:4059", 1, security)
    assert split_key(key) == ("tcp://10.0.0.1:4059", 1, security.system_title.hex(), key_generation(security))
    assert key_generation(other) != key_generation(security)
    assert key_generation(security) == key_generation(client_security(SEED, 0))  # stable across processes
    for secret in (security.block_cipher_key, security.authentication_key):
        assert secret.reveal().hex() not in key
    for bad in (
        "meter",
        "m/x/0011223344556677/0011223344556677",
        "m/1/00/0011223344556677",
        "m/1/" + "g" * 16 + "/" + "0" * 16,
    ):
        with pytest.raises(ConfigurationError, match="invocation counter key"):
            split_key(bad)


async def test_windows_never_overlap_across_threads_and_stores(migrated: str) -> None:
    key = counter_key("SIM-X", 1, client_security(SEED, 0))
    a = await PgInvocationCounters.open(migrated, max_sessions=4)
    b = await PgInvocationCounters.open(migrated, max_sessions=4)
    try:
        assert await asyncio.to_thread(a.get, key) is None
        with ThreadPoolExecutor(8) as pool:
            futures = [pool.submit((a if i % 2 else b).reserve, key, 0, 64) for i in range(80)]
            starts = await asyncio.gather(*(asyncio.wrap_future(f) for f in futures))
        windows = sorted(starts)
        assert windows == [i * 64 for i in range(80)], "every window is taken exactly once, none overlaps"
        assert await asyncio.to_thread(b.get, key) == 80 * 64
        # A floor above the mark (the meter's counter) moves the mark up; a lower one changes nothing.
        assert await asyncio.to_thread(a.reserve, key, 100_000, 64) == 100_000
        assert await asyncio.to_thread(b.reserve, key, 5, 64) == 100_064
        # The end of the 32-bit range: the last window is cut short, then the meter needs new keys.
        assert await asyncio.to_thread(a.reserve, key, MAX_COUNTER - 10, 64) == MAX_COUNTER - 10
        assert await asyncio.to_thread(a.get, key) == MAX_COUNTER + 1
        with pytest.raises(AccessDeniedError, match="new keys"):
            await asyncio.to_thread(b.reserve, key, 0, 64)
        # Another key generation of the same meter is a row of its own.
        fresh = counter_key(
            "SIM-X", 1, dataclasses.replace(client_security(SEED, 0), block_cipher_key=Secret(b"k" * 16))
        )
        assert await asyncio.to_thread(a.reserve, fresh, 7, 64) == 7
        # On the event loop the blocking store refuses rather than deadlocks.
        with pytest.raises(RuntimeError, match="worker thread"):
            a.get(key)
    finally:
        await a.close()
        await b.close()


async def test_a_meter_is_held_by_one_session_and_let_go_when_the_holder_ends(migrated: str) -> None:
    a = await PgInvocationCounters.open(migrated, max_sessions=2)
    b = await PgInvocationCounters.open(migrated, max_sessions=2)
    try:
        held = await asyncio.to_thread(a.try_hold, "SIM-H")
        assert held is not None
        assert await asyncio.to_thread(b.try_hold, "SIM-H") is None
        assert await asyncio.to_thread(a.try_hold, "SIM-H") is None  # also within one store
        other = await asyncio.to_thread(b.try_hold, "SIM-OTHER")
        assert other is not None
        await asyncio.to_thread(held.release)
        again = await asyncio.to_thread(b.try_hold, "SIM-H")
        assert again is not None
        other.release()  # on the loop: scheduled, awaited by close()
        # A holder that dies (its connections end, nothing released) lets go too.
        assert await asyncio.to_thread(a.try_hold, "SIM-H") is None
        b._pool.terminate()
        b = await PgInvocationCounters.open(migrated, max_sessions=2)
        taken = await asyncio.to_thread(a.try_hold, "SIM-H")
        assert taken is not None
        await asyncio.to_thread(taken.release)
    finally:
        await a.close()
        await b.close()


async def test_the_collector_role_reserves_counters_and_reads_nothing_else(migrated: str) -> None:
    login = f"collector_{uuid.uuid4().hex[:8]}"
    password = uuid.uuid4().hex
    admin = await asyncpg.connect(migrated, timeout=10)
    try:
        await admin.execute(f"CREATE ROLE {login} LOGIN PASSWORD '{password}' IN ROLE gxami_collector")
        parts = urlsplit(migrated)
        host = parts.hostname or "127.0.0.1"
        netloc = f"{login}:{password}@{host}" + (f":{parts.port}" if parts.port else "")
        dsn = urlunsplit(parts._replace(netloc=netloc))
        store = await PgInvocationCounters.open(dsn, max_sessions=1)
        try:
            key = counter_key("SIM-R", 1, client_security(SEED, 0))
            assert await asyncio.to_thread(store.reserve, key, 0, 64) == 0
            assert await asyncio.to_thread(store.try_hold, "SIM-R") is not None
        finally:
            await store.close()
        conn = await asyncpg.connect(dsn, timeout=10)
        try:
            for table in ("readings", "meters", "api_tokens"):
                with pytest.raises(asyncpg.InsufficientPrivilegeError):
                    await conn.fetchval(f"SELECT count(*) FROM {table}")
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.execute("DELETE FROM invocation_counters")  # counters only ever grow
        finally:
            await conn.close()
    finally:
        await admin.execute(f"DROP OWNED BY {login}")
        await admin.execute(f"DROP ROLE {login}")
        await admin.close()


async def test_a_database_without_the_table_is_one_clear_error(database_url: str) -> None:
    with pytest.raises(ConfigurationError, match="gxami db migrate"):
        await PgInvocationCounters.open(database_url, max_sessions=1)


async def _read(port: int, store: InvocationCounterStore) -> float:
    p = DlmsParameters(client_address=1, authentication="high-gmac", security=client_security(SEED, 0))
    async with DlmsSession(f"tcp://127.0.0.1:{port}", p, timeout=5, counters=store, meter_key="SIM-S") as s:
        await s.read_clock()
        return (await s.read_value(CosemValue("1.0.1.8.0.255")))[0]


async def test_ciphered_sessions_from_two_stores_never_repeat_a_counter(migrated: str) -> None:
    a = await PgInvocationCounters.open(migrated, max_sessions=4)
    b = await PgInvocationCounters.open(migrated, max_sessions=4)
    try:
        # fail_on_repeat: leaving the block raises NonceReuseError if any counter came twice.
        async with DlmsFleetSimulator(1, seed=SEED, authentication="high-gmac") as sim:
            port = sim.meters[0].port
            values = await asyncio.gather(*(_read(port, a if i % 2 else b) for i in range(6)))
            assert all(v > 0 for v in values)
            assert sim.repeats == []
            assert sim.states[0].counters.highest_accepted() > 0
        key = counter_key("SIM-S", 1, client_security(SEED, 0))
        mark = await asyncio.to_thread(a.get, key)
        assert mark is not None and mark > sim.states[0].counters.highest_accepted()
    finally:
        await a.close()
        await b.close()
