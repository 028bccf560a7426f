"""Commands through every service (issue 9 tests): API -> scheduler -> ami.commands -> collector -> meter -> back.

The real scheduler (in-process, its clock shifted on demand), a real collector process, and
ciphered DLMS meters simulated in a thread of their own so the test can look into them: the
relay, the clock and the log of every command a meter carried out. A disconnect posted five
times opens the relay once and the audit holds what the collector read back; a command that
expires waiting in the scheduler never reaches its meter; a meter whose clock drifts gets a
clock-sync from the scheduler itself, which the meter carries out.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
import pytest_asyncio
import yaml

from gxami_meterlab.cli_procs import ServiceProcess, gxami_argv, service_env
from gxami_meterlab.devstack import StackEndpoints
from gxami_meterlab.devstack_procs import free_port
from gxami_meterlab.simulators.dlms import DlmsFleetSimulator, meter_secrets, meter_system_title
from gxami_runtime.auth import Role, create_token
from gxami_scheduler.app import serve
from gxami_scheduler.fleet import parse_fleet
from gxami_scheduler.registry import import_fleet
from gxami_scheduler.settings import SchedulerSettings
from gxami_store import migrate
from gxcore.profiles import ProfileCatalog

pytestmark = [pytest.mark.e2e, pytest.mark.integration, pytest.mark.timeout(600)]

SEED = 31
RELAY, LATE, DRIFTING = range(3)
DRIFT = timedelta(minutes=7)
TOPICS = (
    "ami.read-jobs",
    "ami.readings",
    "ami.job-results",
    "ami.events",
    "ami.commands",
    "ami.command-results",
    "ami.dead-letter",
)
TIMEOUT = aiohttp.ClientTimeout(total=15)


@dataclass
class Shifted:
    shift: timedelta = timedelta(0)

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.shift


class Meters:
    """Three simulated DLMS meters served by an event loop in a thread of their own; only one drifts."""

    def __init__(self) -> None:
        self.sim = DlmsFleetSimulator(3, seed=SEED, authentication="high-gmac")
        self.sim.states[DRIFTING].clock_offset = DRIFT
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._stop = asyncio.Event()
        self._thread = threading.Thread(target=self._run, name="meters", daemon=True)
        self._failure: BaseException | None = None

    def __enter__(self) -> Meters:
        self._thread.start()
        assert self._ready.wait(20), "the simulated meters did not start"
        if self._failure is not None:
            raise self._failure
        return self

    def __exit__(self, *exc: object) -> None:
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(20)
        if self._failure is not None:
            raise self._failure

    def _run(self) -> None:
        try:
            self._loop.run_until_complete(self._main())
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            self._failure = exc
            self._ready.set()
        finally:
            self._loop.close()

    async def _main(self) -> None:
        async with self.sim:
            self._ready.set()
            await self._stop.wait()

    async def on_loop(self, fn: Callable[[], Any]) -> Any:
        done: Future[Any] = Future()

        def call() -> None:
            try:
                done.set_result(fn())
            except BaseException as exc:  # noqa: BLE001 - handed to the caller
                done.set_exception(exc)

        self._loop.call_soon_threadsafe(call)
        return await asyncio.wait_for(asyncio.wrap_future(done), 10)

    async def actions(self, index: int) -> list[str]:
        """What meter ``index`` itself logged having done, oldest first."""
        return [e.action for e in await self.on_loop(lambda: list(self.sim.states[index].executed))]

    def meter_id(self, index: int) -> str:
        return self.sim.meters[index].meter_id

    def fleet(self) -> str:
        rows = [
            {
                "meter_id": self.meter_id(i),
                "protocol": "dlms",
                "address": f"tcp://127.0.0.1:{self.sim.meters[i].port}",
                "profile": "generic-dlms",
                "schedule": "1d",
                "options": {
                    "authentication": "high-gmac",
                    "client": 1,
                    "server_system_title": meter_system_title(SEED, i).hex(),
                },
            }
            for i in range(3)
        ]
        return yaml.safe_dump({"meters": rows})


async def _eventually(what: str, check: Callable[[], Awaitable[bool]], timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.2)


@pytest_asyncio.fixture(loop_scope="function")
async def db(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(database_url, timeout=10)
    try:
        await migrate(conn)
        yield conn
    finally:
        await conn.close()


async def test_commands_reach_the_meters_through_every_service(
    stack: StackEndpoints,
    db: asyncpg.Connection,
    database_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for key, value in stack.env().items():
        monkeypatch.setenv(key, value)
    prefix = f"t{uuid.uuid4().hex[:8]}."
    overrides = {t: prefix + t for t in TOPICS}
    operator = (await create_token(db, "op-a", Role.OPERATOR, "pytest")).token
    headers = {"Authorization": f"Bearer {operator}"}
    clock = Shifted()
    with Meters() as meters:
        catalog = ProfileCatalog()
        await import_fleet(db, parse_fleet("f.yaml", meters.fleet(), catalog), clock(), [catalog.get("generic-dlms")])
        # No meter is due for a day: the only read is the one the test asks for.
        await db.execute("UPDATE meter_schedule SET next_due_at = $1", clock() + timedelta(days=1))
        secrets = {meters.meter_id(i): meter_secrets(SEED, i) for i in range(3)}
        (tmp_path / "secrets.yaml").write_text(yaml.safe_dump({"meters": secrets}))
        collector_port = free_port()
        env = service_env(
            stack.env(),
            collector_port,
            "collector-e2e",
            GXAMI_TOPIC_OVERRIDES=json.dumps(overrides),
            GXAMI_CONSUMER_GROUP=f"{prefix}collector",
            GXAMI_SECRETS_FILE=str(tmp_path / "secrets.yaml"),
            GXAMI_INVOCATION_COUNTERS_FILE=str(tmp_path / "counters.json"),
            GXAMI_COMMAND_RECORDS_DIR=str(tmp_path / "command-runs"),
            GXAMI_EXCHANGE_TIMEOUT_S="3",
            GXAMI_KAFKA_SESSION_TIMEOUT_MS="2000",
            GXAMI_KAFKA_HEARTBEAT_INTERVAL_MS="500",
        )
        port = free_port()
        settings = SchedulerSettings(
            kafka_bootstrap=stack.kafka_bootstrap,
            database_url=database_url,
            topic_overrides=overrides,
            tick_seconds=0.2,
            results_group=prefix + "scheduler",
            command_results_group=prefix + "scheduler-commands",
            clock_sync_threshold_s=60,
            http_port=port,
        )
        stop = asyncio.Event()
        scheduler = asyncio.create_task(serve(settings, stop, clock=clock))
        base = f"http://127.0.0.1:{port}"
        collector = ServiceProcess("collector", gxami_argv("collector"), env, tmp_path / "collector.log")
        try:
            async with aiohttp.ClientSession(timeout=TIMEOUT, headers=headers) as http:

                async def up() -> bool:
                    try:
                        async with http.get(f"{base}/ready") as resp:
                            return resp.status == 200
                    except aiohttp.ClientError:
                        return False

                await _eventually("the scheduler", up)
                collector.start()

                async def show(command_id: str) -> dict[str, Any]:
                    async with http.get(f"{base}/commands/{command_id}") as resp:
                        assert resp.status == 200
                        body: dict[str, Any] = await resp.json()
                        return body

                def final(command_id: str) -> Callable[[], Awaitable[bool]]:
                    async def check() -> bool:
                        assert collector.alive(), collector.log_path.read_text()[-3000:]
                        return (await show(command_id))["state"] in ("succeeded", "failed", "expired")

                    return check

                # A disconnect posted five times: the relay opens once, and the read-back is audited.
                relay = meters.meter_id(RELAY)
                body = {"command_id": "off-1", "kind": "disconnect", "meter": relay}
                for _ in range(5):
                    async with http.post(f"{base}/commands", json=body) as resp:
                        assert resp.status in (200, 201)
                await _eventually("the disconnect", final("off-1"))
                off = await show("off-1")
                assert off["state"] == "succeeded", off
                assert off["meters"][0]["result_state"] == "disconnected"
                assert await meters.on_loop(lambda: meters.sim.states[RELAY].connected) is False
                assert await meters.actions(RELAY) == ["remote-disconnect"]
                assert [h["state"] for h in off["history"]] == ["requested", "approved", "queued", "sent", "succeeded"]

                # Expired while waiting in the scheduler (not_before not reached): never at the meter.
                late = {
                    "command_id": "late-1",
                    "kind": "disconnect",
                    "meter": meters.meter_id(LATE),
                    "not_before": (clock() + timedelta(minutes=1)).isoformat(),
                    "expires_at": (clock() + timedelta(minutes=2)).isoformat(),
                }
                async with http.post(f"{base}/commands", json=late) as resp:
                    assert resp.status == 201
                clock.shift = timedelta(minutes=3)
                await _eventually("the expiry", final("late-1"))
                assert (await show("late-1"))["state"] == "expired"

                # A drifting clock seen by a read: the scheduler syncs it, as the system.
                async with http.post(f"{base}/meters/{meters.meter_id(DRIFTING)}/read") as resp:
                    assert resp.status == 202

                async def synced() -> bool:
                    assert collector.alive(), collector.log_path.read_text()[-3000:]
                    return bool(
                        await db.fetchval(
                            "SELECT count(*) FROM command_audit WHERE actor = 'system:clock-sync' AND meter_id = $1",
                            meters.meter_id(DRIFTING),
                        )
                    )

                await _eventually("the automatic clock sync", synced)
                drift = await db.fetchval(
                    "SELECT clock_drift_s FROM job_results WHERE meter_id = $1", meters.meter_id(DRIFTING)
                )
                assert abs(drift - DRIFT.total_seconds()) < 30
                audit = await db.fetchrow("SELECT kind, result FROM command_audit WHERE actor = 'system:clock-sync'")
                assert (audit["kind"], audit["result"]) == ("clock-sync", "succeeded")
                assert await meters.actions(DRIFTING) == ["clock-set"]
                offset = await meters.on_loop(lambda: meters.sim.states[DRIFTING].clock_offset)
                assert abs(offset.total_seconds()) < 30, offset
            assert await meters.actions(LATE) == []
            assert collector.alive(), collector.log_path.read_text()[-3000:]
        finally:
            code = await asyncio.to_thread(collector.stop) if collector.alive() else 0
            stop.set()
            await asyncio.wait_for(scheduler, 30)
        log = collector.log_path.read_text()
        assert code == 0, log[-3000:]
        for keys in secrets.values():  # no key reached the collector's log
            assert all(k not in log for k in keys.values())
