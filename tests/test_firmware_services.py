"""Firmware rollouts through the running services (issue 9, item 5): API -> scheduler -> ami.commands ->
collector (fetches the image by hash) -> DLMS meter -> results -> the rollout's progress and next wave.

The real scheduler (in-process, its clock shifted on demand), a real collector process (killed with
SIGKILL once mid-transfer), simulated DLMS meters in a thread of their own so the test can look
into them: the firmware they run and the log of every image transfer step they carried out.

* ``north``: waves ``1,100`` (one meter, then the other two); every meter ends with the new
  active firmware, and the second wave was created only after the first one's meter activated.
* ``west``: every meter fails verification; the first wave's failure halts the rollout and the
  meters of the later wave are never touched.
* ``south``: activation at a time, and a transfer interrupted by SIGKILL of the collector. The
  meter takes blocks slowly; progress is visible in the rollout while it runs; the collector is
  killed, restarted, and the redelivered command resumes from the first missing block (the
  meter's log: one initiate, every block exactly once); the meter stops at ``verified`` because
  ``activate_at`` is an hour ahead, and activates once the scheduler's clock passes it.
"""

from __future__ import annotations

import asyncio
import hashlib
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
from gxami_meterlab.dlms.image_transfer import DEFAULT_FIRMWARE, FirmwareFaults, ImageTransferState
from gxami_meterlab.simulators.dlms import DlmsFleetSimulator
from gxami_runtime.auth import Role, create_token
from gxami_scheduler.app import serve
from gxami_scheduler.fleet import parse_fleet
from gxami_scheduler.registry import import_fleet
from gxami_scheduler.settings import SchedulerSettings
from gxami_store import migrate
from gxcore.profiles import ProfileCatalog

pytestmark = [pytest.mark.e2e, pytest.mark.integration, pytest.mark.timeout(600)]

SEED = 47
GROUPS = {"north": (0, 1, 2), "west": (3, 4, 5), "south": (6,)}
SLOW = 6  # the south meter: small blocks, each taken slowly, so the collector can be killed mid-transfer
SLOW_BLOCK = 16
IMAGE = hashlib.sha256(b"gxami firmware 2").digest() * 100  # 3200 bytes: 200 blocks of 16 for the slow meter
IDENT = "GXSIM-2.0.0"
KILL_AFTER = 40  # blocks on the slow meter before the collector is killed
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


class SlowTransfer(ImageTransferState):
    """A meter that takes a while over each image block (a slow radio link)."""

    def _block(self, parameters: object) -> int:
        time.sleep(0.02)  # blocks only the simulator's own thread; 200 blocks take 4 s or more
        return super()._block(parameters)


class Meters:
    """Simulated DLMS meters served by an event loop in a thread of their own."""

    def __init__(self) -> None:
        self.sim = DlmsFleetSimulator(7, seed=SEED)
        for index in GROUPS["west"]:
            self.sim.states[index].firmware.faults = FirmwareFaults(verify_failure_rate=1.0)
        slow = SlowTransfer(block_size=SLOW_BLOCK)
        slow.rng = self.sim.states[SLOW].firmware.rng
        self.sim.states[SLOW].firmware = slow
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

    async def log(self, index: int) -> list[tuple[str, object]]:
        """What meter ``index``'s image transfer object carried out, oldest first."""
        return list(await self.on_loop(lambda: list(self.sim.states[index].firmware.log)))

    async def active(self, index: int) -> bytes:
        return bytes(await self.on_loop(lambda: self.sim.states[index].firmware.active))

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
                "group": group,
            }
            for group, members in GROUPS.items()
            for i in members
        ]
        return yaml.safe_dump({"meters": rows})


async def _eventually(what: str, check: Callable[[], Awaitable[bool]], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


def _blocks(log: list[tuple[str, object]]) -> list[int]:
    return [int(n) for kind, n in log if kind == "block" and isinstance(n, int)]


@pytest_asyncio.fixture(loop_scope="function")
async def db(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(database_url, timeout=10)
    try:
        await migrate(conn)
        yield conn
    finally:
        await conn.close()


async def test_firmware_rollouts_through_the_services(
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
    tag = uuid.uuid4().hex[:6]  # meter groups of this run only (the database is the session's)
    admin = (await create_token(db, f"fw-admin-{tag}", Role.ADMIN, "pytest")).token
    operator = (await create_token(db, f"fw-op-{tag}", Role.OPERATOR, "pytest")).token
    viewer = (await create_token(db, f"fw-collector-{tag}", Role.VIEWER, "pytest")).token
    (tmp_path / "api-token").write_text(viewer + "\n")
    clock = Shifted()
    with Meters() as meters:
        catalog = ProfileCatalog()
        fleet = meters.fleet().replace("group: ", f"group: {tag}-")
        await import_fleet(db, parse_fleet("f.yaml", fleet, catalog), clock(), [catalog.get("generic-dlms")])
        ids = [meters.meter_id(i) for i in range(7)]
        # No meter is due for a read for a day: the sessions here are the firmware commands'.
        await db.execute(
            "UPDATE meter_schedule SET next_due_at = $1 WHERE meter_id = ANY($2::text[])",
            clock() + timedelta(days=1),
            ids,
        )
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        env = service_env(
            stack.env(),
            free_port(),
            "collector-fw",
            GXAMI_TOPIC_OVERRIDES=json.dumps(overrides),
            GXAMI_CONSUMER_GROUP=f"{prefix}collector",
            GXAMI_COMMAND_RECORDS_DIR=str(tmp_path / "command-runs"),
            GXAMI_SCHEDULER_API_URL=base,
            GXAMI_SCHEDULER_API_TOKEN_FILE=str(tmp_path / "api-token"),
            GXAMI_FIRMWARE_CACHE_DIR=str(tmp_path / "firmware"),
            GXAMI_FIRMWARE_SESSION_TIMEOUT_S="300",
            GXAMI_EXCHANGE_TIMEOUT_S="3",
            GXAMI_KAFKA_SESSION_TIMEOUT_MS="2000",
            GXAMI_KAFKA_HEARTBEAT_INTERVAL_MS="500",
        )
        settings = SchedulerSettings(
            kafka_bootstrap=stack.kafka_bootstrap,
            database_url=database_url,
            topic_overrides=overrides,
            tick_seconds=0.2,
            results_group=prefix + "scheduler",
            command_results_group=prefix + "scheduler-commands",
            http_port=port,
        )
        stop = asyncio.Event()
        scheduler = asyncio.create_task(serve(settings, stop, clock=clock))
        collector = ServiceProcess("collector", gxami_argv("collector"), env, tmp_path / "collector-1.log")
        restarted = ServiceProcess("collector", gxami_argv("collector"), env, tmp_path / "collector-2.log")
        running = collector
        try:
            async with aiohttp.ClientSession(timeout=TIMEOUT) as http:

                async def up() -> bool:
                    try:
                        async with http.get(f"{base}/ready") as resp:
                            return resp.status == 200
                    except aiohttp.ClientError:
                        return False

                await _eventually("the scheduler", up)
                running.start()
                as_admin = {"Authorization": f"Bearer {admin}"}
                as_operator = {"Authorization": f"Bearer {operator}"}
                url = f"{base}/firmware/images?identification={IDENT}"
                async with http.post(url, data=IMAGE, headers=as_admin) as resp:
                    assert resp.status in (200, 201), await resp.text()
                    sha256 = (await resp.json())["sha256"]
                assert sha256 == hashlib.sha256(IMAGE).hexdigest()

                async def rollout(group: str, **fields: object) -> int:
                    body = {"image": sha256, "group": f"{tag}-{group}", **fields}
                    async with http.post(f"{base}/firmware/rollouts", json=body, headers=as_operator) as resp:
                        assert resp.status == 201, await resp.text()
                        return int((await resp.json())["id"])

                async def show(rollout_id: int) -> dict[str, Any]:
                    async with http.get(f"{base}/firmware/rollouts/{rollout_id}", headers=as_operator) as resp:
                        assert resp.status == 200
                        body: dict[str, Any] = await resp.json()
                        return body

                async def command(command_id: str) -> dict[str, Any]:
                    async with http.get(f"{base}/commands/{command_id}", headers=as_operator) as resp:
                        assert resp.status == 200, command_id
                        body: dict[str, Any] = await resp.json()
                        return body

                def ended(rollout_id: int) -> Callable[[], Awaitable[bool]]:
                    async def check() -> bool:
                        assert running.alive(), running.log_path.read_text()[-3000:]
                        return (await show(rollout_id))["state"] in ("finished", "halted")

                    return check

                # (a) and (c) side by side: a rollout in two waves, and one whose first wave fails.
                north = await rollout("north", waves="1,100", threshold=0.0)
                west = await rollout("west", waves="1,100", threshold=0.5)
                await _eventually("the north rollout", ended(north))
                await _eventually("the west rollout", ended(west))

                done = await show(north)
                assert done["state"] == "finished", done
                waves = sorted((m["wave"], m["meter_id"]) for m in done["meters"])
                assert [w for w, _ in waves] == [0, 1, 1]
                for m in done["meters"]:
                    assert m["state"] == "activated" and m["blocks_done"] == m["blocks_total"] > 0, m
                for index in GROUPS["north"]:
                    assert await meters.active(index) == IDENT.encode()
                    assert [k for k, _ in await meters.log(index)].count("initiate") == 1
                # The second wave was queued only once the first wave's meter had activated.
                first = await command(f"firmware-rollout-{north}-wave-0")
                second = await command(f"firmware-rollout-{north}-wave-1")
                assert first["state"] == "succeeded" and second["state"] == "succeeded"
                first_done = max(h["at"] for h in first["history"] if h["state"] == "succeeded")
                assert first_done <= min(h["at"] for h in second["history"])

                halted = await show(west)
                assert halted["state"] == "halted" and "threshold" in halted["reason"], halted
                by_wave = {m["meter_id"]: m for m in halted["meters"]}
                tried = [m for m in by_wave.values() if m["wave"] == 0]
                spared = [m for m in by_wave.values() if m["wave"] == 1]
                assert len(tried) == 1 and tried[0]["state"] == "failed", tried
                assert len(spared) == 2 and all(m["state"] == "pending" for m in spared), spared
                for index in GROUPS["west"]:
                    log = await meters.log(index)
                    if meters.meter_id(index) == tried[0]["meter_id"]:
                        assert ("verify", "failed") in log and "verification-failed" in tried[0]["detail"]
                    else:
                        assert log == [], log  # a later wave's meter: never touched
                    assert await meters.active(index) == DEFAULT_FIRMWARE
                failed = (await command(f"firmware-rollout-{west}-wave-0"))["meters"][0]
                assert failed["error_kind"] == "firmware-transfer", failed
                assert failed["read_back"]["firmware-blocks-done"] == failed["read_back"]["firmware-blocks-total"] > 0
                wave_one = await db.fetchval(
                    "SELECT count(*) FROM commands WHERE command_id = $1", f"firmware-rollout-{west}-wave-1"
                )
                assert wave_one == 0

                # (b) activation at a time, and a transfer interrupted by SIGKILL of the collector.
                at = datetime.now(UTC) + timedelta(hours=1)
                south = await rollout("south", waves="100", threshold=0.0, activate_at=at.isoformat())
                slow_id = meters.meter_id(SLOW)
                total = len(IMAGE) // SLOW_BLOCK

                async def some_blocks() -> bool:
                    assert running.alive(), running.log_path.read_text()[-3000:]
                    return len(_blocks(await meters.log(SLOW))) >= KILL_AFTER

                await _eventually("the slow meter's first blocks", some_blocks)

                async def progress_shown() -> bool:
                    meter = (await show(south))["meters"][0]
                    return meter["state"] == "transferring" and 0 < (meter["blocks_done"] or 0) < total

                await _eventually("the transfer's progress in the rollout", progress_shown)
                await asyncio.to_thread(collector.kill)
                at_kill = _blocks(await meters.log(SLOW))
                assert KILL_AFTER <= len(at_kill) < total, "the transfer ended before the collector was killed"
                assert at_kill == list(range(len(at_kill)))
                running = restarted
                running.start()

                async def verified() -> bool:
                    assert running.alive(), running.log_path.read_text()[-3000:]
                    return bool((await show(south))["meters"][0]["state"] == "verified")

                await _eventually("the resumed transfer", verified)
                log = await meters.log(SLOW)
                assert [k for k, _ in log].count("initiate") == 1, log[:5]
                sent = _blocks(log)
                assert sent == list(range(total)), "a block was sent twice or skipped"  # resumed, not restarted
                assert ("verify", "ok") in log and await meters.active(SLOW) == DEFAULT_FIRMWARE
                wave = await command(f"firmware-rollout-{south}-wave-0")
                assert wave["meters"][0]["result_state"] == "verified"
                read_back = wave["meters"][0]["read_back"]
                assert read_back["interrupted_before"] is True and read_back["firmware-blocks-sent"] < total, read_back

                # Activation is due once the scheduler's clock passes activate_at: one more command.
                clock.shift = timedelta(hours=2)
                await _eventually("the activation", ended(south))
                finished = await show(south)
                assert finished["state"] == "finished" and finished["meters"][0]["state"] == "activated", finished
                assert await meters.active(SLOW) == IDENT.encode()
                activation = await command(f"firmware-rollout-{south}-wave-0-activate-1")
                assert activation["state"] == "succeeded" and activation["meters"][0]["meter_id"] == slow_id
                assert _blocks(await meters.log(SLOW)) == sent  # activating sent no block again
            assert running.alive(), running.log_path.read_text()[-3000:]
        finally:
            for proc in (collector, restarted):
                if proc.alive():
                    await asyncio.to_thread(proc.stop)
            stop.set()
            await asyncio.wait_for(scheduler, 30)
        for path in (collector.log_path, restarted.log_path):
            text = path.read_text()
            assert viewer not in text and admin not in text  # no token reached a collector's log
