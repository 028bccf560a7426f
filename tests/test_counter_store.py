"""DLMS invocation counters in PostgreSQL (gxami_collector.counter_store) on the session stack's database.

Windows reserved from many threads and two stores ("pods") never overlap; a meter's session lock
is exclusive across stores and let go when its holder's connections end; the collector's role
may reserve counters and read nothing else; ciphered sessions against a simulator that refuses
a reused counter (fail_on_repeat) share one counter sequence across two stores.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
import yaml

from gxami_collector.counter_store import PgInvocationCounters, split_key
from gxami_meterlab.cli_procs import ServiceProcess, gxami_argv, service_env
from gxami_meterlab.devstack import StackEndpoints
from gxami_meterlab.devstack_procs import free_port
from gxami_meterlab.simulators.dlms import DlmsFleetSimulator, client_security, meter_secrets, meter_system_title
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


# -- end to end: three collector processes, SIGKILLed and rebalanced ----------------------

E2E_METERS = 12
E2E_SEED = 23


class _SimulatorThread:
    """A high-gmac fleet simulator on its own event loop in a thread, so it outlives collector kills
    and keeps every counter each meter ever saw (``repeats`` lists any seen twice)."""

    def __init__(self, meters: int, seed: int) -> None:
        self.sim = DlmsFleetSimulator(meters, seed=seed, authentication="high-gmac", fail_on_repeat=False)
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = threading.Thread(target=asyncio.run, args=(self._main(),), daemon=True)

    async def _main(self) -> None:
        self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        async with self.sim:
            self._ready.set()
            await self._stop.wait()

    def __enter__(self) -> DlmsFleetSimulator:
        self._thread.start()
        assert self._ready.wait(30), "the simulator did not start"
        return self.sim

    def __exit__(self, *exc: object) -> None:
        assert self._loop is not None and self._stop is not None
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)

    def counters_seen(self) -> int:
        return sum(len(state.counters.seen) for state in list(self.sim.states))


async def _meters_done(dsn: str) -> int:
    conn = await asyncpg.connect(dsn, timeout=5)
    try:
        return int(await conn.fetchval("SELECT count(*) FROM meter_schedule WHERE last_success_at IS NOT NULL"))
    finally:
        await conn.close()


def test_three_collectors_killed_and_rebalanced_never_repeat_a_counter(
    stack: StackEndpoints, database_url: str, topic_prefix: str, tmp_path: Path
) -> None:
    logs = tmp_path / "logs"
    fleet_file, secrets_file = tmp_path / "fleet.yaml", tmp_path / "secrets.yaml"
    topics = ("ami.read-jobs", "ami.readings", "ami.job-results", "ami.events", "ami.commands", "ami.command-results")
    base = {
        **stack.env(),
        "GXAMI_DATABASE_URL": database_url,
        "GXAMI_INVOCATION_COUNTERS_DSN": database_url,
        "GXAMI_TOPIC_OVERRIDES": json.dumps({n: f"{topic_prefix}{n}" for n in (*topics, "ami.dead-letter")}),
        "GXAMI_KAFKA_SESSION_TIMEOUT_MS": "2000",
        "GXAMI_KAFKA_HEARTBEAT_INTERVAL_MS": "500",
        "GXAMI_HISTORY_DAYS": "2",
        "GXAMI_SECRETS_FILE": str(secrets_file),
        "GXAMI_LOG_LEVEL": "INFO",
    }
    procs: list[ServiceProcess] = []

    def spawn(name: str, argv: list[str], **extra: str) -> ServiceProcess:
        p = ServiceProcess(name, argv, service_env(base, free_port(), name, **extra), logs / f"{name}.log")
        p.start()
        procs.append(p)
        return p

    def collector(n: int) -> ServiceProcess:
        # Each its own file store path: were the database store not used, the file would not be shared.
        return spawn(
            f"collector-{n}",
            gxami_argv("collector"),
            GXAMI_CONSUMER_GROUP=f"{topic_prefix}collector",
            GXAMI_INVOCATION_COUNTERS_FILE=str(tmp_path / f"unused-{n}" / "counters.json"),
        )

    simulator = _SimulatorThread(E2E_METERS, E2E_SEED)
    with simulator as sim:
        meter_ids = {m.meter_id for m in sim.meters}
        fleet_file.write_text(
            yaml.safe_dump(
                {
                    "meters": [
                        {
                            "meter_id": m.meter_id,
                            "protocol": "dlms",
                            "address": f"tcp://127.0.0.1:{m.port}",
                            "profile": "generic-dlms",
                            "group": "counters",
                            "schedule": "1m",
                            "options": {
                                "authentication": "high-gmac",
                                "client": 1,
                                "server_system_title": meter_system_title(E2E_SEED, m.index).hex(),
                            },
                        }
                        for m in sim.meters
                    ]
                }
            )
        )
        secrets_file.write_text(
            yaml.safe_dump(
                {"default": {}, "meters": {m.meter_id: meter_secrets(E2E_SEED, m.index) for m in sim.meters}}
            )
        )
        try:
            for step in (("db", "migrate"), ("fleet", "import", str(fleet_file))):
                p = ServiceProcess(step[0], gxami_argv(*step), service_env(base, 0, step[0]), logs / f"{step[0]}.log")
                p.start()
                assert p.proc is not None
                assert p.proc.wait(60) == 0, p.log_path.read_text()
            collectors = [collector(n) for n in range(3)]
            spawn("scheduler", gxami_argv("scheduler"), GXAMI_RESULTS_GROUP=f"{topic_prefix}scheduler")
            # Kill a collector with SIGKILL each time the meters have taken more counters, and
            # start a new one: its partitions (and jobs it had not committed) go to the others.
            for kill in range(3):
                seen = simulator.counters_seen()
                deadline = time.monotonic() + 180
                while simulator.counters_seen() <= seen + 20:
                    assert time.monotonic() < deadline, f"meters took no counters before kill {kill}"
                    for p in procs:
                        assert p.alive(), f"{p.name} died; log: {p.log_path.read_text()[-3000:]}"
                    time.sleep(0.1)
                victim = collectors.pop(kill % len(collectors))
                victim.kill()
                procs.remove(victim)
                collectors.append(collector(3 + kill))
            deadline = time.monotonic() + 240
            while asyncio.run(_meters_done(database_url)) < E2E_METERS:
                assert time.monotonic() < deadline, "not every meter was read after the kills"
                for p in procs:
                    assert p.alive(), f"{p.name} died; log: {p.log_path.read_text()[-3000:]}"
                time.sleep(0.3)
        finally:
            for p in reversed(procs):
                p.stop()
        repeats = sim.repeats
    assert repeats == [], f"a meter saw an invocation counter twice: {repeats[:5]}"
    assert all(state.counters.seen for state in sim.states), "every meter was read with ciphered requests"
    rows = asyncio.run(_counter_rows(database_url))
    assert rows == meter_ids, "every meter's counters are in the database store"
    for n in range(6):
        assert not (tmp_path / f"unused-{n}" / "counters.json").exists(), "no collector fell back to the file"


async def _counter_rows(dsn: str) -> set[str]:
    conn = await asyncpg.connect(dsn, timeout=5)
    try:
        return {r["meter"] for r in await conn.fetch("SELECT DISTINCT meter FROM invocation_counters")}
    finally:
        await conn.close()
