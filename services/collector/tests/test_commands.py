"""Commands in the collector, below the broker: the record of finished commands, the spool, set-attribute.

The command service runs here in-process against simulated DLMS meters over TCP; what it would
publish is caught by a stand-in publisher (or lands in a real spool), so these tests look at the
exact messages and their order. The broker path is tests/test_commands_collector.py.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path

import yaml

from gxami_collector.command_execution import CommandExecutor, same_value
from gxami_collector.command_records import CommandRecords, CommandRun
from gxami_collector.commands import CommandService, KeyedLocks
from gxami_collector.jobs import MeterReader
from gxami_collector.secret_store import SecretStore
from gxami_collector.settings import CollectorSettings
from gxami_collector.spool import Spool
from gxami_contracts import CommandOutcome, CommandResult, MeterCommand, ReadingBatch
from gxami_contracts.messages import Message
from gxami_meterlab.simulators.dlms import ACTIVE_TARIFF, DlmsFleetSimulator
from gxcore.profiles import ProfileCatalog
from gxcore.secrets import Secret

PASSWORD = "s3cret-Pw"
SEED = 8


class CapturedPublisher:
    """Stands in for gxami_runtime.kafka.Publisher: keeps what would have gone to the broker, in order."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, str, Message]] = []

    async def send(self, logical_topic: str, key: str, message: Message) -> None:
        self.sent.append((logical_topic, key, message))

    async def send_many(self, logical_topic: str, items: list[tuple[str, Message]]) -> None:
        self.sent.extend((logical_topic, k, m) for k, m in items)

    def results(self) -> list[CommandResult]:
        return [m for t, _, m in self.sent if isinstance(m, CommandResult)]


def _profiles(folder: Path) -> ProfileCatalog:
    """The built-in profiles and one with the simulator's writable tariff register (0-0:96.14.0)."""
    generic = ProfileCatalog().get("generic-dlms").model_dump(mode="json")
    tariff = {"quantity": "0-0:96.14.0", "unit": "", "source": f"1/{ACTIVE_TARIFF}", "options": {"writable": True}}
    generic.update(name="tariff-dlms", points=[*generic["points"], tariff])
    folder.mkdir(exist_ok=True)
    (folder / "tariff-dlms.yaml").write_text(yaml.safe_dump(generic))
    return ProfileCatalog(folder)


async def _service(tmp_path: Path, records: CommandRecords, spool: Spool | None = None) -> CommandService:
    # Loading profiles parses YAML: off the loop, which the tests watch for blocking calls.
    reader = MeterReader(
        await asyncio.to_thread(_profiles, tmp_path / "profiles"),
        SecretStore(default={"password": Secret(PASSWORD)}),
        exchange_timeout=2.0,
        session_timeout=30,
    )
    settings = CollectorSettings(command_records_dir=tmp_path / "command-runs", instance="unit")
    executor = CommandExecutor(reader, clock_tolerance_s=settings.command_clock_tolerance_s, collector="unit")
    return CommandService(
        settings,
        executor,
        records,
        links=defaultdict(asyncio.Lock),
        meters=KeyedLocks(),
        slots=asyncio.Semaphore(4),
        spool=spool,
    )


def _command(sim: DlmsFleetSimulator, index: int, kind: str, **fields: object) -> MeterCommand:
    now = datetime.now(UTC)
    url = f"tcp://127.0.0.1:{sim.meters[index].port}"
    base: dict[str, object] = {
        "command_id": uuid.uuid4().hex,
        "meter_id": sim.meters[index].meter_id,
        "link_id": url,
        "protocol": "dlms",
        "url": url,
        "profile": "tariff-dlms",
        "kind": kind,
        "options": {"authentication": "low"},
        "requested_by": "unit-test",
        "issued_at": now,
        "expires_at": now + timedelta(minutes=5),
    }
    return MeterCommand.model_validate({**base, **fields})


async def test_a_redelivered_command_is_never_run_twice_and_an_interrupted_one_is_run_again(tmp_path: Path) -> None:
    records = await CommandRecords.open(tmp_path / "command-runs", retention=timedelta(days=1))
    try:
        async with DlmsFleetSimulator(3, seed=SEED, authentication="low", password=PASSWORD) as sim:
            service, publisher = await _service(tmp_path, records), CapturedPublisher()

            # Finished before a crash, result never published: the stored result goes out, the meter is not touched.
            lost = _command(sim, 0, "disconnect")
            stored = service.executor.result(lost, CommandOutcome.SUCCEEDED, state="disconnected")
            await records.finished(lost, stored)
            await service.one(lost, publisher)  # type: ignore[arg-type]  # the stand-in publisher
            assert publisher.results() == [stored]
            assert sim.states[0].executed == [] and sim.states[0].connected
            again = await records.get((lost.command_id, lost.meter_id, lost.attempt))
            assert again is not None and again.published
            await service.one(lost, publisher)  # type: ignore[arg-type]
            assert publisher.results() == [stored]  # published once, and then nothing more
            # Another replica on the same shared folder (it took over the link after a crash): nothing either.
            other = await CommandRecords.open(tmp_path / "command-runs", retention=timedelta(days=1))
            await (await _service(tmp_path, other)).one(lost, publisher)  # type: ignore[arg-type]
            assert publisher.results() == [stored] and sim.states[0].executed == []

            # Started before a crash, never finished: run again (a disconnect is idempotent), and said so.
            cut = _command(sim, 1, "disconnect")
            await records.started(cut)
            await service.one(cut, publisher)  # type: ignore[arg-type]
            sent, final = publisher.results()[1:]
            assert (sent.outcome, final.outcome, final.state) == (
                CommandOutcome.SENT,
                CommandOutcome.SUCCEEDED,
                "disconnected",
            )
            assert final.data["interrupted_before"] is True
            assert [e.action for e in sim.states[1].executed] == ["remote-disconnect"]

            # Another attempt of the same command is a new run (the scheduler retried a failure).
            retry = MeterCommand.model_validate({**cut.model_dump(), "attempt": 2, "kind": "reconnect"})
            await service.one(retry, publisher)  # type: ignore[arg-type]
            assert publisher.results()[-1].outcome is CommandOutcome.SUCCEEDED and sim.states[1].connected

        # A torn file (a foreign write, a disk fault) reads as an interrupted run: run again, never skipped.
        torn = records._path(("torn", "M", 1))
        torn.parent.mkdir(exist_ok=True)
        torn.write_bytes(b'{"result": ')
        assert await records.get(("torn", "M", 1)) == CommandRun(None, published=False)
        torn.unlink()

        # Rows go once their command expired longer ago than the retention.
        old = lost.model_copy(update={"command_id": "old", "expires_at": datetime.now(UTC) - timedelta(days=2)})
        await records.finished(old, stored)
        assert await records.prune(datetime.now(UTC)) == 1
        assert await records.get(("old", old.meter_id, 1)) is None
        assert await records.get((lost.command_id, lost.meter_id, 1)) is not None
    finally:
        await records.close()


async def test_set_attribute_reads_back_and_a_refused_write_touches_nothing(tmp_path: Path) -> None:
    records = await CommandRecords.open(tmp_path / "command-runs", retention=timedelta(days=1))
    try:
        async with DlmsFleetSimulator(1, seed=SEED, authentication="low", password=PASSWORD) as sim:
            service, publisher = await _service(tmp_path, records), CapturedPublisher()
            await service.one(_command(sim, 0, "set-attribute", point="0-0:96.14.0", value=3), publisher)  # type: ignore[arg-type]
            done = publisher.results()[-1]
            assert done.outcome is CommandOutcome.SUCCEEDED, done
            assert done.data["value"] == 3.0 and sim.states[0].data[ACTIVE_TARIFF] == 3
            await service.one(_command(sim, 0, "set-attribute", point="1-0:1.8.0", value=1), publisher)  # type: ignore[arg-type]
            refused = publisher.results()[-1]
            assert (refused.outcome, refused.error_kind) == (CommandOutcome.FAILED, "configuration")
            assert "not writable" in (refused.error_message or "")
            assert [e.action for e in sim.states[0].executed] == ["set"]  # the refused one never reached it

            # A command a little early (the scheduler's clock ahead of ours) waits for its not_before.
            soon = datetime.now(UTC) + timedelta(seconds=1)
            await service.one(_command(sim, 0, "relay-state", not_before=soon), publisher)  # type: ignore[arg-type]
            sent, state = publisher.results()[-2:]
            assert sent.outcome is CommandOutcome.SENT and sent.started_at is not None and sent.started_at >= soon
            assert (state.outcome, state.state) == (CommandOutcome.SUCCEEDED, "connected")
    finally:
        await records.close()


async def test_with_a_spool_a_read_command_spools_its_readings_before_its_result(tmp_path: Path) -> None:
    records = await CommandRecords.open(tmp_path / "command-runs", retention=timedelta(days=1))
    spool = await Spool.open(tmp_path / "spool", max_bytes=1 << 20)
    try:
        async with DlmsFleetSimulator(1, seed=SEED, authentication="low", password=PASSWORD) as sim:
            service = await _service(tmp_path, records, spool)
            command = _command(sim, 0, "read", profile="generic-dlms")
            await service.one(command, CapturedPublisher())  # type: ignore[arg-type]  # nothing goes direct
        spooled = [s.record for s in await spool.head(100)]
        assert [r.topic for r in spooled] == ["ami.command-results", "ami.readings", "ami.command-results"]
        sent, batch, final = (spooled[0].value, spooled[1].value, spooled[2].value)
        assert CommandResult.from_wire(sent).outcome is CommandOutcome.SENT
        assert ReadingBatch.from_wire(batch).count == 2
        result = CommandResult.from_wire(final)
        assert result.outcome is CommandOutcome.SUCCEEDED and result.data["readings_count"] == 2
        assert spooled[2].key == command.meter_id.encode()
    finally:
        await spool.close()
        await records.close()


async def test_meter_locks_serialise_one_meter_and_are_forgotten_when_free() -> None:
    locks, order = KeyedLocks(), []

    async def session(meter: str, n: int) -> None:
        async with locks.hold(meter):
            order.append((meter, n, "in"))
            await asyncio.sleep(0)
            order.append((meter, n, "out"))

    await asyncio.gather(session("A", 1), session("A", 2), session("B", 3))
    a = [o for o in order if o[0] == "A"]
    assert a == [("A", 1, "in"), ("A", 1, "out"), ("A", 2, "in"), ("A", 2, "out")]
    assert len(locks) == 0


def test_read_back_comparison_and_site_topics() -> None:
    assert same_value(15, 15.0) and same_value(True, 1.0) and same_value(21.5, 21.500001)
    assert not same_value(15, 16.0) and not same_value("on", "off") and not same_value(1, "1")
    site = CollectorSettings(site="north", consumer_group="collector")
    assert (site.commands_topic(), site.commands_group()) == ("ami.commands.north", "collector.north.commands")
    central = CollectorSettings(topic_overrides={"ami.commands": "x.ami.commands"})
    assert (central.commands_topic(), central.commands_group()) == ("x.ami.commands", "collector.commands")
