"""The command API end to end (issue 9): the real scheduler over the session's PostgreSQL and broker.

Commands are POSTed through the scheduler's HTTP API with real tokens; what lands on
``ami.commands`` is read back off the broker; ``CommandResult`` messages are fed back on
``ami.command-results`` as a collector would send them; the state history, the audit rows and
the ``command_history`` view (as ``bi_reader``) are read from the database. The ``gxami command``
CLI runs as a real process against the same API. The scheduler's clock is the wall clock plus a
shift the test controls, so "later" needs no sleeping.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
import pytest_asyncio
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from gxami_contracts import (
    DEAD_LETTER,
    CommandKind,
    CommandOutcome,
    CommandResult,
    DeadLetter,
    JobResult,
    JobStatus,
    MeterCommand,
)
from gxami_contracts.topics import COMMAND_RESULTS, COMMANDS, JOB_RESULTS, READ_JOBS
from gxami_meterlab.cli_procs import gxami_argv
from gxami_meterlab.devstack import StackEndpoints
from gxami_meterlab.devstack_procs import free_port
from gxami_runtime.auth import Role, create_token
from gxami_runtime.kafka import Publisher, make_producer
from gxami_scheduler.app import serve
from gxami_scheduler.fleet import parse_fleet
from gxami_scheduler.registry import import_fleet
from gxami_scheduler.settings import SchedulerSettings
from gxami_store import migrate
from gxcore.profiles import ProfileCatalog

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

PROFILES = {
    "em-dlms": """\
name: em-dlms
protocol: dlms
points:
  - {quantity: "1-0:1.8.0", unit: kWh, source: "3/1-0:1.8.0.255"}
  - {quantity: "0-0:96.14.0", unit: "", source: "1/0-0:96.14.0.255", options: {writable: true}}
""",
    "em-modbus": """\
name: em-modbus
protocol: modbus
points:
  - {quantity: "1-0:1.8.0", unit: kWh, source: "input:0"}
  - {quantity: "0-0:96.14.0", unit: "", source: "holding:100"}
""",
}
FLEET = """\
meter_id,protocol,address,profile,schedule,enabled,group
e1,dlms,tcp://127.0.0.1:4059,em-dlms,1d,true,
e5,dlms,tcp://127.0.0.1:4061,em-dlms,1d,true,
e6,dlms,tcp://127.0.0.1:4062,em-dlms,1d,true,
g1,dlms,tcp://127.0.0.1:4060,em-dlms,1d,true,street
g2,dlms,tcp://127.0.0.1:4060,em-dlms,1d,true,street
g3,dlms,tcp://127.0.0.1:4060,em-dlms,1d,true,street
m1,modbus,tcp://127.0.0.1:502,em-modbus,1d,true,
"""
TIMEOUT = aiohttp.ClientTimeout(total=15)


@dataclass
class Shifted:
    """The scheduler's clock: the wall clock plus ``shift``."""

    shift: timedelta = timedelta(0)

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.shift


@dataclass
class Commands:
    """What the scheduler published on ami.commands, read as it comes."""

    consumer: AIOKafkaConsumer
    seen: list[tuple[bytes, MeterCommand]] = field(default_factory=list)

    async def until(self, check: Callable[[list[MeterCommand]], bool], timeout: float = 30.0) -> list[MeterCommand]:
        deadline = time.monotonic() + timeout
        while not check([m for _, m in self.seen]):
            assert time.monotonic() < deadline, f"commands seen: {[(m.command_id, m.meter_id) for _, m in self.seen]}"
            for records in (await self.consumer.getmany(timeout_ms=200)).values():
                self.seen.extend((r.key or b"", MeterCommand.from_wire(r.value or b"")) for r in records)
        return [m for _, m in self.seen]

    def of(self, command_id: str) -> list[MeterCommand]:
        return [m for _, m in self.seen if m.command_id == command_id]


async def _eventually(check: Callable[[], Awaitable[bool]], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.1)


def _reader(settings: SchedulerSettings, logical: str) -> AIOKafkaConsumer:
    return AIOKafkaConsumer(
        settings.topic(logical),
        bootstrap_servers=settings.kafka_bootstrap,
        group_id=None,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )


@pytest_asyncio.fixture(loop_scope="function")
async def fleet_db(database_url: str, tmp_path: Path) -> AsyncIterator[asyncpg.Connection]:
    folder = tmp_path / "profiles"
    folder.mkdir()
    for name, text in PROFILES.items():
        (folder / f"{name}.yaml").write_text(text)
    catalog = ProfileCatalog(folder)
    conn = await asyncpg.connect(database_url, timeout=10)
    try:
        await migrate(conn)
        await import_fleet(
            conn, parse_fleet("f.csv", FLEET, catalog), datetime.now(UTC), [catalog.get(n) for n in PROFILES]
        )
        yield conn
    finally:
        await conn.close()


async def test_commands_through_the_scheduler(
    stack: StackEndpoints,
    fleet_db: asyncpg.Connection,
    database_url: str,
    topic_prefix: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for key, value in stack.env().items():  # whatever the stack says its clients need
        monkeypatch.setenv(key, value)
    tokens = {
        name: (await create_token(fleet_db, name, role, "pytest")).token
        for name, role in (("op-a", Role.OPERATOR), ("op-b", Role.OPERATOR), ("viewer", Role.VIEWER))
    }
    auth = {name: {"Authorization": f"Bearer {t}"} for name, t in tokens.items()}
    port = free_port()
    prefixed = (READ_JOBS.name, JOB_RESULTS.name, DEAD_LETTER, COMMANDS.name, COMMAND_RESULTS.name)
    settings = SchedulerSettings(
        kafka_bootstrap=stack.kafka_bootstrap,
        database_url=database_url,
        topic_overrides={t: topic_prefix + t for t in prefixed},
        tick_seconds=0.1,
        results_group=topic_prefix + "scheduler",
        command_results_group=topic_prefix + "scheduler-commands",
        command_four_eyes_above=2,
        clock_sync_threshold_s=30,
        http_port=port,
        http_write_rate_per_s=100,
        http_write_burst=200,
    )
    clock = Shifted()
    stop = asyncio.Event()
    service = asyncio.create_task(serve(settings, stop, clock=clock))
    commands = Commands(_reader(settings, COMMANDS.name))
    dead = _reader(settings, DEAD_LETTER)
    producer: AIOKafkaProducer = make_producer(settings)
    base = f"http://127.0.0.1:{port}"

    async def ready() -> bool:
        try:
            async with aiohttp.ClientSession(timeout=TIMEOUT) as s, s.get(f"{base}/ready") as resp:
                return resp.status == 200
        except aiohttp.ClientError:
            return False

    try:
        await _eventually(ready)
        await commands.consumer.start()
        await dead.start()
        await producer.start()
        publisher = Publisher(producer, settings)
        async with aiohttp.ClientSession(timeout=TIMEOUT) as http:

            async def post(path: str, body: Any, who: str | None = "op-a") -> tuple[int, Any]:
                headers = auth[who] if who else {}
                async with http.post(base + path, json=body, headers=headers) as resp:
                    return resp.status, await resp.json()

            async def get(path: str, who: str = "viewer") -> Any:
                async with http.get(base + path, headers=auth[who]) as resp:
                    assert resp.status == 200, await resp.text()
                    return await resp.json()

            async def result(command_id: str, meter_id: str, outcome: CommandOutcome, **extra: Any) -> None:
                kind = CommandKind((await get(f"/commands/{command_id}"))["kind"])
                await publisher.send(
                    COMMAND_RESULTS.name,
                    meter_id,
                    CommandResult(
                        command_id=command_id,
                        meter_id=meter_id,
                        kind=kind,
                        outcome=outcome,
                        finished_at=clock(),
                        collector="c-1",
                        **extra,
                    ),
                )

            async def state_of(command_id: str) -> str:
                return str((await get(f"/commands/{command_id}"))["state"])

            def later(minutes: float) -> str:
                return (clock() + timedelta(minutes=minutes)).isoformat()

            # --- authentication and roles: 401 without a valid token, 403 for a viewer's write.
            disconnect = {"command_id": "d-1", "kind": "disconnect", "meter": "e1", "expires_at": later(30)}
            assert (await post("/commands", disconnect, who=None))[0] == 401
            async with http.post(
                f"{base}/commands",
                json=disconnect,
                headers={"Authorization": "Bearer gxa_0000000000000000_" + "x" * 43},
            ) as resp:
                assert resp.status == 401
                assert "error" in await resp.json()
            status, body = await post("/commands", disconnect, who="viewer")
            assert (status, body) == (403, {"error": "token 'viewer' has the viewer role; this needs operator"})

            # --- bad input: a clear JSON error each, and nothing stored.
            refusals = [
                ({**disconnect, "meter": "nope"}, 404, "unknown meter 'nope'"),
                ({**disconnect, "meter": None, "meters": ["e1", "nope"]}, 422, "1 unknown meters"),
                ({**disconnect, "meter": "m1"}, 422, "speaks modbus, which has no disconnect"),
                (
                    {**disconnect, "kind": "write-point", "meter": "e1", "point": "0-0:96.14.0", "value": 1},
                    422,
                    "speaks dlms, which has no write-point",
                ),
                (
                    {**disconnect, "kind": "set-attribute", "point": "1-0:1.8.0", "value": 1},
                    422,
                    "does not mark '1-0:1.8.0' writable: true",
                ),
                ({**disconnect, "expires_at": later(-1)}, 422, "expired on arrival"),
                ({**disconnect, "kind": "detonate"}, 400, "kind must be one of"),
                ({k: v for k, v in disconnect.items() if k != "command_id"}, 400, "command_id is required"),
            ]
            for request, want, says in refusals:
                status, body = await post("/commands", request)
                assert status == want, (request, body)
                assert says in body["error"], body
            async with http.post(f"{base}/commands", data=b"{not json", headers=auth["op-a"]) as resp:
                assert resp.status == 400
                assert "not valid JSON" in (await resp.json())["error"]
            assert await fleet_db.fetchval("SELECT count(*) FROM commands") == 0

            # --- idempotency: five identical posts make one command, queued once.
            answers = [await post("/commands", disconnect) for _ in range(5)]
            assert [s for s, _ in answers] == [201, 200, 200, 200, 200]
            assert len({b["requested_at"] for _, b in answers}) == 1
            status, body = await post("/commands", {**disconnect, "kind": "reconnect"})
            assert (status, body["error"]) == (409, "command 'd-1' exists with different content")
            sent = await commands.until(lambda seen: any(m.command_id == "d-1" for m in seen))
            d1 = next(m for m in sent if m.command_id == "d-1")
            assert (d1.meter_id, d1.kind, d1.link_id, d1.requested_by) == (
                "e1",
                CommandKind.DISCONNECT,
                "tcp://127.0.0.1:4059",
                "op-a",
            )
            assert commands.seen[0][0] == b"tcp://127.0.0.1:4059"  # keyed by link
            assert await state_of("d-1") == "queued"

            # --- one command at a time per meter: r-1 waits until d-1 has finished.
            assert (await post("/commands", {"command_id": "r-1", "kind": "reconnect", "meter": "e1"}))[0] == 201
            write = {"command_id": "w-1", "kind": "write-point", "meter": "m1", "point": "0-0:96.14.0", "value": 7}
            assert (await post("/commands", write))[0] == 201
            await commands.until(lambda seen: any(m.command_id == "w-1" for m in seen))  # ticks ran since r-1
            assert await state_of("r-1") == "approved"
            assert commands.of("r-1") == []
            await result("d-1", "e1", CommandOutcome.SENT)
            await result(
                "d-1",
                "e1",
                CommandOutcome.SUCCEEDED,
                state="disconnected",
                data={"output_state": False, "control_state": 0},
            )
            await commands.until(lambda seen: any(m.command_id == "r-1" for m in seen))
            assert await state_of("d-1") == "succeeded"
            shown = await get("/commands/d-1")
            assert [h["state"] for h in shown["history"]] == ["requested", "approved", "queued", "sent", "succeeded"]
            assert shown["history"][-1]["actor"] == "collector:c-1"
            assert shown["meters"][0]["read_back"] == {
                "output_state": False,
                "control_state": 0,
                "state": "disconnected",
            }

            # --- four eyes: a command for more than two meters waits for a second operator.
            bulk = {"command_id": "bulk-1", "kind": "disconnect", "group": "street", "expires_at": later(30)}
            status, body = await post("/commands", bulk)
            assert (status, body["state"], body["needs_approval"]) == (201, "requested", True)
            assert [m["meter_id"] for m in body["meters"]] == ["g1", "g2", "g3"]
            status, body = await post("/commands/bulk-1/approve", {})
            assert status == 403
            assert "four eyes" in body["error"]
            assert (await post("/commands/bulk-1/approve", {}, who="viewer"))[0] == 403
            assert (await post("/commands/nope/approve", {}, who="op-b"))[0] == 404
            # Ticks have run since bulk-1 was requested once w-2 (posted after it) is queued.
            await result("w-1", "m1", CommandOutcome.SUCCEEDED, data={"0-0:96.14.0": 7})
            assert (await post("/commands", {**write, "command_id": "w-2", "value": 8}))[0] == 201
            await commands.until(lambda seen: any(m.command_id == "w-2" for m in seen))
            assert commands.of("bulk-1") == []
            status, body = await post("/commands/bulk-1/approve", {}, who="op-b")
            assert (status, body["approvals"][0]["approved_by"]) == (200, "op-b")
            assert (await post("/commands/bulk-1/approve", {}, who="op-b"))[0] == 409
            await commands.until(lambda seen: len({m.meter_id for m in seen if m.command_id == "bulk-1"}) == 3)
            await result("bulk-1", "g1", CommandOutcome.SUCCEEDED, state="disconnected")
            await result("bulk-1", "g2", CommandOutcome.FAILED, error_kind="read-back", error_message="still connected")
            await result("bulk-1", "g3", CommandOutcome.EXPIRED)

            # --- expired while waiting in the scheduler: never sent. e5 is busy with busy-5.
            assert (await post("/commands", {"command_id": "busy-5", "kind": "disconnect", "meter": "e5"}))[0] == 201
            await commands.until(lambda seen: any(m.command_id == "busy-5" for m in seen))
            late = {"command_id": "late-5", "kind": "reconnect", "meter": "e5", "expires_at": later(2)}
            assert (await post("/commands", late))[0] == 201
            cancel_me = {"command_id": "cancel-5", "kind": "arm-reconnect", "meter": "e5"}
            assert (await post("/commands", cancel_me))[0] == 201
            status, body = await post("/commands/cancel-5/cancel", {}, who="op-b")
            assert (status, body["state"]) == (200, "cancelled")
            assert (await post("/commands/busy-5/cancel", {}))[0] == 409  # on its way to the collector
            clock.shift = timedelta(minutes=5)

            async def late_expired() -> bool:
                return await state_of("late-5") == "expired"

            await _eventually(late_expired)
            late_history = (await get("/commands/late-5"))["history"]
            assert late_history[-1]["actor"] == "system:expiry"
            assert "never executed" in late_history[-1]["detail"]

            # --- automatic clock sync: a drift past the threshold issues one clock-sync per period.
            now = clock()
            for job_id, drift in (("j-drift-1", 60), ("j-drift-2", 90), ("j-plain", 0)):
                await publisher.send(
                    JOB_RESULTS.name,
                    "e6",
                    JobResult(
                        job_id=job_id,
                        meter_id="e6",
                        link_id="tcp://127.0.0.1:4062",
                        status=JobStatus.OK,
                        attempt=1,
                        started_at=now,
                        finished_at=now,
                        readings_count=1,
                        meter_time=now + timedelta(seconds=drift),
                        collector_time=now,
                    ),
                )
            synced = await commands.until(lambda seen: any(m.kind is CommandKind.CLOCK_SYNC for m in seen))
            sync = next(m for m in synced if m.kind is CommandKind.CLOCK_SYNC)
            assert (sync.meter_id, sync.requested_by) == ("e6", "system:clock-sync")

            async def all_three_stored() -> bool:
                return await fleet_db.fetchval("SELECT count(*) FROM job_results WHERE meter_id = 'e6'") == 3

            await _eventually(all_three_stored)
            drifts = await fleet_db.fetch("SELECT job_id, clock_drift_s FROM job_results WHERE meter_id = 'e6'")
            assert {r["job_id"]: r["clock_drift_s"] for r in drifts} == {"j-drift-1": 60, "j-drift-2": 90, "j-plain": 0}
            issued = await fleet_db.fetchval("SELECT count(*) FROM commands WHERE kind = 'clock-sync'")
            assert issued == 1  # j-drift-2 came within the period
            await result(sync.command_id, "e6", CommandOutcome.SUCCEEDED, meter_time_after=now)

            # --- poison on ami.command-results is dead-lettered; the consumer carries on.
            await producer.send_and_wait(settings.topic(COMMAND_RESULTS.name), b"{not json", key=b"e1")
            await result("d-1", "nope", CommandOutcome.SUCCEEDED)
            await result("r-1", "e1", CommandOutcome.SUCCEEDED, state="connected")

            async def r1_done() -> bool:
                return await state_of("r-1") == "succeeded"

            await _eventually(r1_done)
            letters: list[DeadLetter] = []
            deadline = time.monotonic() + 30
            while len(letters) < 2 and time.monotonic() < deadline:
                for records in (await dead.getmany(timeout_ms=200)).values():
                    letters.extend(DeadLetter.from_wire(r.value or b"") for r in records)
            reasons = sorted(letter.reason for letter in letters)
            assert len(reasons) == 2, reasons
            assert any("never queued" in r for r in reasons), reasons

            async def bulk_done() -> bool:
                return await state_of("bulk-1") == "failed"

            await _eventually(bulk_done)
            bulk_meters = {m["meter_id"]: m["state"] for m in (await get("/commands/bulk-1"))["meters"]}
            assert bulk_meters == {"g1": "succeeded", "g2": "failed", "g3": "expired"}

            listed = await get("/commands?state=succeeded")
            assert {c["command_id"] for c in listed["commands"]} == {"d-1", "r-1", "w-1", sync.command_id}
            assert {c["command_id"] for c in (await get("/commands?meter=e5"))["commands"]} == {
                "busy-5",
                "late-5",
                "cancel-5",
            }

            async with http.get(f"{base}/metrics") as resp:
                metrics = await resp.text()
            assert 'gxami_scheduler_command_results_total{outcome="failed"} 1.0' in metrics
            assert "gxami_scheduler_commands_expired_total 1.0" in metrics  # late-5

            # --- the CLI, a real process against the same API.
            env = {**os.environ, "OPA_TOKEN": tokens["op-a"], "VIEW_TOKEN": tokens["viewer"], "GXAMI_API_URL": base}

            async def cli(*args: str) -> tuple[int, str, str]:
                proc = await asyncio.create_subprocess_exec(
                    *gxami_argv("command", *args),
                    env=env,
                    stdout=asyncio.subprocess.PIPE,
                    stderr=asyncio.subprocess.PIPE,
                )
                out, err = await asyncio.wait_for(proc.communicate(), 60)
                assert proc.returncode is not None
                return proc.returncode, out.decode(), err.decode()

            code, out, err = await cli("status", "d-1", "--token-env", "VIEW_TOKEN", "--history")
            assert code == 0, err
            assert out.startswith("d-1: succeeded (disconnect")
            assert "e1: succeeded disconnected" in out
            code, out, err = await cli(
                "disconnect", "e6", "--expires", "10m", "--id", "cli-1", "--token-env", "OPA_TOKEN"
            )
            assert code == 0, err
            assert out.startswith(("cli-1: approved (disconnect", "cli-1: queued (disconnect"))
            code, out, err = await cli("disconnect", "nope", "--token-env", "OPA_TOKEN")
            assert code == 1
            assert 'refused (404): {"error": "unknown meter \'nope\'"}' in err
            code, out, err = await cli("reconnect", "e1", "--token-env", "VIEW_TOKEN")
            assert (code, "refused (403)" in err) == (1, True)
            code, out, err = await cli("list", "--state", "succeeded", "--token-env", "VIEW_TOKEN")
            assert code == 0, err
            assert "d-1" in out and "r-1" in out
            code, out, err = await cli("list", "--token-env", "NO_SUCH_VARIABLE")
            assert code == 2
            assert "set the environment variable NO_SUCH_VARIABLE" in err

        # --- what was published: each (command, meter) once, never late-5 or cancel-5.
        pairs = [(m.command_id, m.meter_id) for _, m in commands.seen]
        assert len(pairs) == len(set(pairs)), pairs
        assert not {"late-5", "cancel-5"} & {c for c, _ in pairs}

        # --- the audit: who, what, when, from where, result, read-back.
        audit = {
            (r["command_id"], r["meter_id"]): r for r in await fleet_db.fetch("SELECT * FROM command_audit ORDER BY id")
        }
        d1_audit = audit[("d-1", "e1")]
        assert (d1_audit["actor"], d1_audit["actor_from"], d1_audit["kind"], d1_audit["result"]) == (
            "op-a",
            "127.0.0.1",
            "disconnect",
            "succeeded",
        )
        assert d1_audit["result_state"] == "disconnected"
        assert '"output_state": false' in d1_audit["read_back"]
        assert audit[("bulk-1", "g2")]["approved_by"] == "op-b"
        assert audit[("bulk-1", "g2")]["error_message"] == "still connected"
        assert audit[("late-5", "e5")]["result"] == "expired"
        assert audit[("cancel-5", "e5")]["result"] == "cancelled"
        assert audit[(sync.command_id, "e6")]["actor"] == "system:clock-sync"
        assert ("busy-5", "e5") not in audit  # still with the collector: no final outcome yet

        # --- BI reads the history through its view, and nothing underneath.
        await fleet_db.execute("SET ROLE bi_reader")
        try:
            rows = await fleet_db.fetch(
                "SELECT command_id, meter_id, state, result_state, requested_by, approved_by FROM command_history"
                " WHERE command_id IN ('d-1', 'bulk-1') ORDER BY command_id, meter_id"
            )
            assert [tuple(r.values()) for r in rows] == [
                ("bulk-1", "g1", "succeeded", "disconnected", "op-a", "op-b"),
                ("bulk-1", "g2", "failed", None, "op-a", "op-b"),
                ("bulk-1", "g3", "expired", None, "op-a", "op-b"),
                ("d-1", "e1", "succeeded", "disconnected", "op-a", None),
            ]
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await fleet_db.fetch("SELECT 1 FROM command_audit")
        finally:
            await fleet_db.execute("RESET ROLE")
    finally:
        stop.set()
        await asyncio.wait_for(service, 30)
        await commands.consumer.stop()
        await dead.stop()
        await producer.stop()
