"""The collector executes commands (issue 9, items 3, 4 and 7, collector side).

One real collector process (``gxami collector``) over the session's broker, for the whole module;
ciphered DLMS meters (HLS-GMAC, so every session spends invocation counters from the collector's
store) and a Modbus meter, simulated over TCP in a thread of their own so that the tests can look
into them: the relay, the clock and the log of every command a meter carried out. The tests
produce ``MeterCommand`` messages to ``ami.commands`` directly, as the scheduler does, and read
``ami.command-results``.
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import yaml

from gxami_contracts import (
    CommandOutcome,
    CommandResult,
    DeadLetter,
    JobResult,
    JobStatus,
    MeterCommand,
    ReadingBatch,
    ReadJob,
)
from gxami_meterlab.cli_procs import ServiceProcess, gxami_argv, service_env
from gxami_meterlab.devstack import StackEndpoints
from gxami_meterlab.devstack_procs import free_port
from gxami_meterlab.simulators.dlms import DlmsFleetSimulator, MeterState, meter_secrets, meter_system_title
from gxami_meterlab.simulators.modbus import ModbusMeterSimulator
from gxami_runtime.kafka import ensure_topics, make_consumer, make_producer
from gxami_runtime.settings import ServiceSettings
from gxcore.profiles import ProfileCatalog

pytestmark = [pytest.mark.e2e, pytest.mark.integration, pytest.mark.timeout(600)]

SEED = 21
METERS = 6
DRIFT = timedelta(minutes=7)  # every simulated DLMS meter's clock starts this far ahead
TOPICS = (
    "ami.read-jobs",
    "ami.readings",
    "ami.job-results",
    "ami.events",
    "ami.commands",
    "ami.command-results",
    "ami.dead-letter",
)
# Meter roles: one each, so the scenarios do not see each other's effects.
RELAY, BUTTON, EXPIRED, TWICE, SYNC, SET = range(6)


class Meters:
    """The simulated meters, served by an event loop in a thread of its own."""

    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._stop = asyncio.Event()
        self._thread = threading.Thread(target=self._run, name="meters", daemon=True)
        self.dlms = DlmsFleetSimulator(METERS, seed=SEED, authentication="high-gmac", clock_offset=DRIFT)
        self.modbus = ModbusMeterSimulator(ProfileCatalog().get("eastron-sdm630"), meters=1, seed=SEED)
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
            raise self._failure  # NonceReuseError: a counter was used twice

    def _run(self) -> None:
        try:
            self._loop.run_until_complete(self._main())
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            self._failure = exc
            self._ready.set()
        finally:
            self._loop.close()

    async def _main(self) -> None:
        async with self.dlms:
            await self.modbus.start()
            try:
                self._ready.set()
                await self._stop.wait()
            finally:
                await self.modbus.stop()

    def state(self, index: int) -> MeterState:
        return self.dlms.states[index]

    async def on_loop(self, fn: Callable[[], Any]) -> Any:
        """Run ``fn`` on the meters' loop (where their state changes) and return its result."""
        done: Future[Any] = Future()

        def call() -> None:
            try:
                done.set_result(fn())
            except BaseException as exc:  # noqa: BLE001 - handed to the caller
                done.set_exception(exc)

        self._loop.call_soon_threadsafe(call)
        return await asyncio.wait_for(asyncio.wrap_future(done), 10)

    def url(self, index: int) -> str:
        return f"tcp://127.0.0.1:{self.dlms.meters[index].port}"

    def meter_id(self, index: int) -> str:
        return self.dlms.meters[index].meter_id


@dataclass
class Rig:
    meters: Meters
    settings: ServiceSettings
    collector: ServiceProcess
    http_port: int
    secrets: dict[str, dict[str, str]] = field(repr=False)  # the meters' keys: never in a failure report

    def metric(self, name: str, **labels: str) -> float:
        url = f"http://127.0.0.1:{self.http_port}/metrics"
        text = urllib.request.urlopen(url, timeout=10).read().decode()
        total = 0.0
        for line in text.splitlines():
            m = re.match(rf"^{name}(?:\{{(.*)\}})? (\S+)$", line)
            if m and all(dict(re.findall(r'(\w+)="([^"]*)"', m.group(1) or "")).get(k) == v for k, v in labels.items()):
                total += float(m.group(2))
        return total

    def dlms_command(self, index: int, kind: str, **fields: Any) -> MeterCommand:
        now = datetime.now(UTC)
        base: dict[str, Any] = {
            "command_id": uuid.uuid4().hex,
            "meter_id": self.meters.meter_id(index),
            "link_id": self.meters.url(index),
            "protocol": "dlms",
            "url": self.meters.url(index),
            "profile": "generic-dlms",
            "kind": kind,
            "options": {
                "authentication": "high-gmac",
                "client": "1",
                "server_system_title": meter_system_title(SEED, index).hex(),
            },
            "requested_by": "test-operator",
            "issued_at": now,
            "expires_at": now + timedelta(minutes=5),
        }
        return MeterCommand.model_validate({**base, **fields})


@pytest.fixture(scope="module")
def rig(stack: StackEndpoints, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    root = tmp_path_factory.mktemp("commands")
    prefix = f"t{uuid.uuid4().hex[:8]}."
    overrides = {t: f"{prefix}{t}" for t in TOPICS}
    settings = ServiceSettings(
        kafka_bootstrap=stack.kafka_bootstrap,
        kafka_enable_idempotence=stack.kafka_enable_idempotence,
        topic_overrides=overrides,
    )
    asyncio.run(ensure_topics(settings, list(TOPICS)))
    with Meters() as meters:
        secrets = {meters.meter_id(i): meter_secrets(SEED, i) for i in range(METERS)}
        secrets_file = root / "secrets.yaml"
        secrets_file.write_text(yaml.safe_dump({"meters": secrets}))
        http_port = free_port()
        env = service_env(
            stack.env(),
            http_port,
            "collector-cmd",
            GXAMI_TOPIC_OVERRIDES=json.dumps(overrides),
            GXAMI_CONSUMER_GROUP=f"{prefix}collector",
            GXAMI_SECRETS_FILE=str(secrets_file),
            GXAMI_INVOCATION_COUNTERS_FILE=str(root / "counters.json"),
            GXAMI_COMMAND_RECORDS_DIR=str(root / "command-runs"),
            GXAMI_EXCHANGE_TIMEOUT_S="3",
            GXAMI_KAFKA_SESSION_TIMEOUT_MS="2000",
            GXAMI_KAFKA_HEARTBEAT_INTERVAL_MS="500",
            GXAMI_LOG_LEVEL="INFO",
        )
        collector = ServiceProcess("collector", gxami_argv("collector"), env, root / "collector.log")
        collector.start()
        try:
            yield Rig(meters, settings, collector, http_port, secrets)
            assert collector.alive(), collector.log_path.read_text()[-3000:]
        finally:
            code = collector.stop()
        log = collector.log_path.read_text()
        assert code == 0, log[-3000:]  # a clean stop, the commands consumer included
        for keys in secrets.values():  # no key reached the collector's log
            assert all(k not in log for k in keys.values())
    assert meters.dlms.repeats == []  # and no invocation counter was used twice (also raised on exit)


class Topics:
    """A producer of commands and jobs, and a consumer of what the collector publishes (one test's)."""

    def __init__(self, rig: Rig) -> None:
        self.rig = rig
        s = rig.settings
        self.producer = make_producer(s)
        self.consumer = make_consumer(
            s,
            f"check-{uuid.uuid4().hex[:8]}",
            s.topic("ami.command-results"),
            s.topic("ami.job-results"),
            s.topic("ami.readings"),
            s.topic("ami.dead-letter"),
        )
        self.results: list[CommandResult] = []
        self.jobs: list[JobResult] = []
        self.batches: list[ReadingBatch] = []
        self.letters: list[DeadLetter] = []

    async def __aenter__(self) -> Topics:
        await self.producer.start()
        await self.consumer.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.consumer.stop()
        await self.producer.stop()

    async def send(self, command: MeterCommand, times: int = 1) -> MeterCommand:
        for _ in range(times):
            await self.producer.send_and_wait(
                self.rig.settings.topic("ami.commands"),
                command.model_dump_json().encode(),
                key=command.link_id.encode(),
            )
        return command

    async def send_raw(self, topic: str, key: bytes, value: bytes) -> None:
        await self.producer.send_and_wait(self.rig.settings.topic(topic), value, key=key)

    def of(self, command: MeterCommand | CommandResult) -> list[CommandResult]:
        """Every result of one meter's command, in the order published."""
        return [r for r in self.results if (r.command_id, r.meter_id) == (command.command_id, command.meter_id)]

    def final(self, command: MeterCommand) -> CommandResult:
        [last] = [r for r in self.of(command) if r.outcome is not CommandOutcome.SENT]
        return last

    async def until(self, what: str, done: Callable[[], bool], timeout: float = 90) -> None:
        s, loop = self.rig.settings, asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not done():
            assert self.rig.collector.alive(), self.rig.collector.log_path.read_text()[-3000:]
            assert loop.time() < deadline, f"timed out waiting for {what}; results: {self.results}"
            for tp, recs in (await self.consumer.getmany(timeout_ms=300)).items():
                for r in recs:
                    assert r.value is not None
                    if tp.topic == s.topic("ami.command-results"):
                        self.results.append(CommandResult.model_validate_json(r.value))
                    elif tp.topic == s.topic("ami.job-results"):
                        self.jobs.append(JobResult.model_validate_json(r.value))
                    elif tp.topic == s.topic("ami.readings"):
                        self.batches.append(ReadingBatch.model_validate_json(r.value))
                    else:
                        self.letters.append(DeadLetter.model_validate_json(r.value))

    async def run(self, command: MeterCommand) -> CommandResult:
        """Send ``command`` and wait for its final result."""
        await self.send(command)
        await self.until(f"{command.kind} on {command.meter_id}", lambda: self._finished(command))
        return self.final(command)

    def _finished(self, command: MeterCommand) -> bool:
        return any(r.outcome is not CommandOutcome.SENT for r in self.of(command))


async def _actions(rig: Rig, index: int) -> list[str]:
    """What meter ``index`` itself logged having done, oldest first."""
    return [e.action for e in await rig.meters.on_loop(lambda: list(rig.meters.state(index).executed))]


async def test_disconnect_reconnect_and_arm_reconnect_change_the_relay_and_read_it_back(rig: Rig) -> None:
    meters = rig.meters
    async with Topics(rig) as t:
        off = await t.run(rig.dlms_command(RELAY, "disconnect"))
        assert off.outcome is CommandOutcome.SUCCEEDED, off
        assert (off.state, off.data["output_state"], off.data["control_state"]) == ("disconnected", False, 0)
        assert await meters.on_loop(lambda: meters.state(RELAY).connected) is False  # the meter itself
        sent, _ = t.of(off)
        assert sent.outcome is CommandOutcome.SENT and sent.started_at is not None  # before the meter was touched
        assert off.collector == "collector-cmd"

        on = await t.run(rig.dlms_command(RELAY, "reconnect"))
        assert (on.outcome, on.state, on.data["output_state"]) == (CommandOutcome.SUCCEEDED, "connected", True)
        assert await meters.on_loop(lambda: meters.state(RELAY).connected) is True

        # arm-reconnect on a meter whose control mode closes the relay at once: the relay did not end up
        # ready-for-reconnection, so the command failed, and the result says where the relay is.
        wrong = await t.run(rig.dlms_command(RELAY, "arm-reconnect"))
        assert (wrong.outcome, wrong.state) == (CommandOutcome.FAILED, "connected"), wrong
        assert wrong.error_kind == "protocol" and "control state is connected" in (wrong.error_message or "")

        # IDIS mode 2: remote reconnection arms the meter; the customer's button closes the relay.
        await meters.on_loop(lambda: setattr(meters.state(BUTTON), "control_mode", 2))
        assert (await t.run(rig.dlms_command(BUTTON, "disconnect"))).state == "disconnected"
        armed = await t.run(rig.dlms_command(BUTTON, "arm-reconnect"))
        assert (armed.outcome, armed.state) == (CommandOutcome.SUCCEEDED, "ready-for-reconnection"), armed
        assert armed.data["output_state"] is False
        assert await meters.on_loop(lambda: (meters.state(BUTTON).armed, meters.state(BUTTON).connected)) == (
            True,
            False,
        )
        await meters.on_loop(meters.state(BUTTON).press_button)
        state = await t.run(rig.dlms_command(BUTTON, "relay-state"))
        assert (state.outcome, state.state, state.data["output_state"]) == (CommandOutcome.SUCCEEDED, "connected", True)
        assert await _actions(rig, BUTTON) == ["remote-disconnect", "remote-reconnect", "button"]
    for r in t.results:  # no secret in any result
        text = r.model_dump_json()
        assert all(k not in text for keys in rig.secrets.values() for k in keys.values())


async def test_expired_early_duplicate_and_poison_commands_never_run_twice_or_at_all(rig: Rig) -> None:
    meters = rig.meters
    async with Topics(rig) as t:
        past = datetime.now(UTC) - timedelta(seconds=1)
        expired = await t.run(rig.dlms_command(EXPIRED, "disconnect", issued_at=past, expires_at=past))
        assert (expired.outcome, expired.error_kind) == (CommandOutcome.EXPIRED, "expired")
        assert [r.outcome for r in t.of(expired)] == [CommandOutcome.EXPIRED]  # never "sent": not touched
        later = datetime.now(UTC) + timedelta(hours=1)
        early = await t.run(rig.dlms_command(EXPIRED, "disconnect", not_before=later))
        assert (early.outcome, early.error_kind) == (CommandOutcome.FAILED, "not-yet"), early
        # The meter's own log: neither command reached it, and its relay is still closed.
        assert await _actions(rig, EXPIRED) == []
        assert await meters.on_loop(lambda: meters.state(EXPIRED).connected) is True

        # One command delivered five times (a scheduler retrying its send, a redelivery after a
        # rebalance): executed once, reported once.
        twice = await t.send(rig.dlms_command(TWICE, "disconnect"), times=5)
        await t.send_raw("ami.commands", twice.link_id.encode(), b'{"command_id": 7}')  # poison, same link
        probe = await t.run(rig.dlms_command(TWICE, "relay-state"))  # same link: handled after all five
        assert probe.state == "disconnected"
        assert [r.outcome for r in t.of(twice)] == [CommandOutcome.SENT, CommandOutcome.SUCCEEDED]
        assert await _actions(rig, TWICE) == ["remote-disconnect"]
        assert await asyncio.to_thread(rig.metric, "gxami_collector_command_duplicates_total") >= 4
        await t.until("the poison command's dead letter", lambda: bool(t.letters))
        [letter] = [x for x in t.letters if x.source_topic == rig.settings.topic("ami.commands")]
        assert letter.consumer == "collector" and "command_id" in letter.reason


async def test_clock_sync_and_clock_set_fix_a_drifted_clock_and_jobs_report_the_drift(rig: Rig) -> None:
    meters = rig.meters
    async with Topics(rig) as t:
        # A read job first: its result carries the meter's clock and the collector's beside it.
        now = datetime.now(UTC)
        job = ReadJob(
            job_id=uuid.uuid4().hex,
            meter_id=meters.meter_id(SYNC),
            link_id=meters.url(SYNC),
            protocol="dlms",
            url=meters.url(SYNC),
            profile="generic-dlms",
            options=rig.dlms_command(SYNC, "read").options,
            issued_at=now,
            deadline=now + timedelta(minutes=5),
        )
        await t.send_raw("ami.read-jobs", job.link_id.encode(), job.model_dump_json().encode())
        await t.until("the read job's result", lambda: any(j.job_id == job.job_id for j in t.jobs))
        [jr] = [j for j in t.jobs if j.job_id == job.job_id]
        assert jr.status is JobStatus.OK, jr.error_message
        assert jr.meter_time is not None and jr.collector_time is not None
        assert abs((jr.meter_time - jr.collector_time) - DRIFT) < timedelta(seconds=3)

        # An on-demand read as a command: readings published, and the result.
        read = await t.run(rig.dlms_command(SYNC, "read"))
        assert read.outcome is CommandOutcome.SUCCEEDED, read
        assert isinstance(read.data["readings_count"], int) and read.data["readings_count"] > 0
        await t.until(
            "the read command's readings", lambda: any(b.meter_id == meters.meter_id(SYNC) for b in t.batches)
        )

        synced = await t.run(rig.dlms_command(SYNC, "clock-sync"))
        assert synced.outcome is CommandOutcome.SUCCEEDED, synced
        assert synced.meter_time_before is not None and synced.meter_time_after is not None
        assert abs((synced.meter_time_before - synced.finished_at) - DRIFT) < timedelta(seconds=3)
        assert abs(synced.meter_time_after - synced.finished_at) < timedelta(seconds=3)
        assert abs(await meters.on_loop(lambda: meters.state(SYNC).clock_offset)) < timedelta(seconds=2)

        wanted = (datetime.now(UTC) - timedelta(hours=1)).replace(microsecond=0)
        clock_set = await t.run(rig.dlms_command(SET, "clock-set", clock=wanted))
        assert clock_set.outcome is CommandOutcome.SUCCEEDED, clock_set
        assert clock_set.meter_time_after is not None
        assert abs(clock_set.meter_time_after - wanted) < timedelta(seconds=3)
        offset = await meters.on_loop(lambda: meters.state(SET).clock_offset)
        assert abs(offset + timedelta(hours=1)) < timedelta(seconds=3)
        assert await _actions(rig, SET) == ["clock-set"]


async def test_modbus_write_point_reads_the_value_back(rig: Rig) -> None:
    modbus = rig.meters.modbus
    now = datetime.now(UTC)

    def command(point: str, value: float) -> MeterCommand:
        return MeterCommand(
            command_id=uuid.uuid4().hex,
            meter_id="MB0001",
            link_id=modbus.url(1),
            protocol="modbus",
            url=modbus.url(1),
            profile="eastron-sdm630",
            kind="write-point",
            point=point,
            value=value,
            options={"unit_id": "1"},
            requested_by="test-operator",
            issued_at=now,
            expires_at=now + timedelta(minutes=5),
        )

    async with Topics(rig) as t:
        written = await t.run(command("1-0:0.8.0", 15))
        assert written.outcome is CommandOutcome.SUCCEEDED, written
        assert written.data["value"] == 15.0
        assert any(r.function == 0x10 and r.address == 0x0002 for r in modbus.requests)
        refused = await t.run(command("1-0:1.8.0", 1.0))  # an input register: read-only
        assert (refused.outcome, refused.error_kind) == (CommandOutcome.FAILED, "configuration"), refused


def test_the_simulated_fleet_keeps_a_start_drift_and_a_command_log() -> None:
    sim = DlmsFleetSimulator(2, clock_offset=timedelta(seconds=-30))
    assert [s.clock_offset for s in sim.states] == [timedelta(seconds=-30)] * 2
    state = sim.states[0]
    state.connected, state.armed = False, True
    state.press_button()
    assert [(e.action, e.detail) for e in state.executed] == [("button", "connected")]


def test_an_unusable_command_record_folder_is_one_line_and_exit_2(
    rig: Rig, tmp_path_factory: pytest.TempPathFactory
) -> None:
    root = tmp_path_factory.mktemp("bad-records")
    blocker = root / "not-a-folder"
    blocker.write_text("")  # a file where the folder should be
    env = {**rig.collector.env, "GXAMI_COMMAND_RECORDS_DIR": str(blocker / "runs"), "GXAMI_HTTP_PORT": "0"}
    env["GXAMI_CONSUMER_GROUP"] = f"bad-{uuid.uuid4().hex[:8]}"
    bad = ServiceProcess("collector-bad", gxami_argv("collector"), env, root / "collector.log")
    bad.start()
    try:
        assert bad.proc is not None
        assert bad.proc.wait(120) == 2, bad.log_path.read_text()[-3000:]
    finally:
        bad.stop()
    assert f"cannot use the command record folder {blocker / 'runs'}" in bad.log_path.read_text()
