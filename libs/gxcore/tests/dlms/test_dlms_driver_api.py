"""The DLMS driver's whole API against the simulated fleet: reads over an open medium, commands, pushes."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from gxami_meterlab.dlms.server import CosemMeterCore
from gxami_meterlab.simulators.dlms import (
    ACTIVE_TARIFF,
    OBJECTS,
    PROFILES,
    REGISTERS,
    DlmsFleetSimulator,
    MeterState,
    _MeterValues,
    client_security,
    expected_register,
    meter_id,
    meter_system_title,
    push_message,
)
from gxami_meterlab.simulators.dlms_memory import MeterCoreMedium
from gxcore.drivers import MeterTarget, ReadRequest
from gxcore.drivers.api import DriverCommand, Served
from gxcore.drivers.dlms.driver import DlmsDriver
from gxcore.errors import ConfigurationError, FramingError, MeterTimeoutError, ProtocolError
from gxcore.media import open_medium
from gxcore.media.listener import DialInConnection, ListenerSettings, TcpListener
from gxcore.profiles.model import BUILTIN_DIR, DeviceProfile, ProfilePoint, load_profile
from gxcore.protocols.dlms.invocation import MemoryInvocationCounters, counter_key
from gxcore.protocols.dlms.parameters import DlmsParameters
from gxcore.protocols.dlms.session import DlmsClientCore

NOW = datetime(2025, 3, 4, 10, 20, 30, tzinfo=UTC)
SEED = 5
PROFILE = load_profile(Path(BUILTIN_DIR) / "generic-dlms.yaml")
TARIFF = ProfilePoint(
    quantity="0-0:96.14.0", unit="", source="1/0.0.96.14.0.255", purpose=["billing"], options={"writable": True}
)
WRITABLE = PROFILE.model_copy(update={"points": [*PROFILE.points, TARIFF]})
ENERGY = "1-0:1.8.0"


def target(port: int, index: int = 0, **secrets: object) -> MeterTarget:
    return MeterTarget(meter_id(SEED, index), f"tcp://127.0.0.1:{port}", {}, secrets)  # type: ignore[arg-type]


def ciphered(profile: DeviceProfile = PROFILE) -> DeviceProfile:
    return profile.model_copy(
        update={"parameters": {**profile.parameters, "authentication": "high-gmac", "client_address": 1}}
    )


def keys(index: int) -> dict[str, object]:
    security = client_security(SEED, index)
    return {"key": security.block_cipher_key, "auth_key": security.authentication_key}


# -- the exchange as a sans-IO core ---------------------------------------------------------------


def test_an_exchange_reports_its_deadline_and_records_a_timeout() -> None:
    core = DlmsClientCore(DlmsParameters(), meter_key="m")
    exchange = core.get(3, "1.0.1.8.0.255", 2)
    assert exchange.next_deadline() is None  # not started: waits for nothing
    exchange.start(100.0, 2.5)
    assert exchange.data_to_send() and not exchange.data_to_send()
    assert exchange.next_deadline() == 102.5
    exchange.receive_data(b"\x00\x01", 101.0)  # the start of a reply frame moves the deadline
    assert exchange.next_deadline() == 103.5
    exchange.handle_timeout(103.0)  # early: nothing happens
    assert not exchange.done and exchange.failure is None
    exchange.handle_timeout(103.5)
    assert exchange.done and exchange.next_deadline() is None
    assert isinstance(exchange.failure, MeterTimeoutError)
    assert str(exchange.failure.reason) == "GET 3/1.0.1.8.0.255/2: no reply within 2.5 s"
    with pytest.raises(MeterTimeoutError, match=r"no reply within 2\.5 s"):
        exchange.value()


async def test_a_silent_meter_breaks_the_link_for_good() -> None:
    async with DlmsFleetSimulator(1, seed=SEED, clock=lambda: NOW, silent_meters={0}) as sim:
        with pytest.raises(MeterTimeoutError, match=r"127\.0\.0\.1.*association: no reply within 0\.2 s"):
            await DlmsDriver().read(target(sim.meters[0].port), PROFILE, ReadRequest(), timeout=0.2)


# -- reads over a connection that is already open ---------------------------------------------------


async def test_read_over_an_open_tcp_medium_leaves_it_open() -> None:
    async with DlmsFleetSimulator(1, seed=SEED, clock=lambda: NOW) as sim:
        meter = target(sim.meters[0].port)
        medium = open_medium(meter.url, connect_timeout=2)
        await medium.open()
        try:
            driver = DlmsDriver()
            first = await driver.read(meter, PROFILE, ReadRequest(), timeout=2, medium=medium)
            assert medium.is_open  # type: ignore[attr-defined]
            second = await driver.read(meter, PROFILE, ReadRequest(), timeout=2, medium=medium)
        finally:
            await medium.close()
    want = Decimal(expected_register(SEED, 0, ENERGY, NOW)) / 1000
    for result in (first, second):
        assert {r.quantity: r.value for r in result.readings}[ENERGY] == want  # exact: Decimal arithmetic
        assert result.meter_time == NOW


async def test_ciphered_read_over_an_open_medium_reads_the_frame_counter_over_it() -> None:
    state = MeterState()

    def meter() -> CosemMeterCore:
        from gxami_meterlab.simulators.dlms import meter_security

        return CosemMeterCore(
            _MeterValues(SEED, 0, state),
            REGISTERS,
            PROFILES,
            authentication="high-gmac",
            security=meter_security(SEED, 0),
            counters=state.counters,
            objects=OBJECTS,
        )

    medium = MeterCoreMedium(meter, clock=lambda: NOW)
    await medium.open()
    store = MemoryInvocationCounters()
    driver = DlmsDriver(store)
    meter_target = MeterTarget("M-0", "tcp://meter.invalid:4059", {}, keys(0))  # type: ignore[arg-type]
    result = await driver.read(meter_target, ciphered(), ReadRequest(), timeout=2, medium=medium)
    assert {r.quantity for r in result.readings} == {ENERGY, "1-0:2.8.0"}
    assert medium._meter is not None  # still open: the meter's connection is not the driver's to close
    again = await driver.read(meter_target, ciphered(), ReadRequest(), timeout=2, medium=medium)
    assert again.readings
    assert state.counters.repeats == []
    await medium.close()


# -- commands -------------------------------------------------------------------------------------


async def test_relay_commands_report_the_state_read_back() -> None:
    async with DlmsFleetSimulator(2, seed=SEED, clock=lambda: NOW) as sim:
        meter, driver = target(sim.meters[1].port, 1), DlmsDriver(clock=lambda: NOW)
        off = await driver.execute(meter, PROFILE, DriverCommand("disconnect"), timeout=2)
        assert off.state == "disconnected"
        assert [(r.quantity, r.value, r.extra["output_state"]) for r in off.readings] == [("relay-state", 0.0, 0)]
        assert sim.states[1].connected is False and sim.states[0].connected is True
        state = await driver.execute(meter, PROFILE, DriverCommand("relay-state"), timeout=2)
        assert state.state == "disconnected"
        on = await driver.execute(meter, PROFILE, DriverCommand("reconnect"), timeout=2)
        assert on.state == "connected" and sim.states[1].connected
        # Mode 1 closes at once: arming a connected meter is refused after the fact.
        with pytest.raises(ProtocolError, match="arm-reconnect but its control state is connected"):
            await driver.execute(meter, PROFILE, DriverCommand("arm-reconnect"), timeout=2)
        with pytest.raises(ConfigurationError, match="class 70"):
            await driver.execute(meter, PROFILE, DriverCommand("relay-state", point="3/1.0.1.8.0.255"), timeout=2)


async def test_arm_reconnect_leaves_the_meter_ready_for_the_customer() -> None:
    async with DlmsFleetSimulator(1, seed=SEED, clock=lambda: NOW) as sim:
        sim.states[0].control_mode = 2  # IDIS: a remote reconnect arms, the button closes
        meter, driver = target(sim.meters[0].port), DlmsDriver()
        assert (await driver.execute(meter, PROFILE, DriverCommand("disconnect"), timeout=2)).state == "disconnected"
        armed = await driver.execute(meter, PROFILE, DriverCommand("arm-reconnect"), timeout=2)
        assert armed.state == "ready-for-reconnection"
        assert armed.readings[0].value == 2.0 and armed.readings[0].extra["output_state"] == 0
        power = await driver.read(meter, PROFILE, ReadRequest(purposes=frozenset({"instantaneous"})), timeout=2)
        assert {r.quantity: r.value for r in power.readings}["1-0:1.7.0"] == 0
        sim.states[0].press_button()
        after = await driver.execute(meter, PROFILE, DriverCommand("relay-state"), timeout=2)
        assert after.state == "connected"


async def test_clock_sync_and_clock_set_report_before_and_after() -> None:
    later = NOW + timedelta(minutes=7)
    async with DlmsFleetSimulator(1, seed=SEED, clock=lambda: NOW) as sim:
        meter = target(sim.meters[0].port)
        synced = await DlmsDriver(clock=lambda: later).execute(meter, PROFILE, DriverCommand("clock-sync"), timeout=2)
        assert (synced.meter_time_before, synced.meter_time_after) == (NOW, later)
        chosen = datetime(2025, 3, 1, 0, 0, 0, tzinfo=UTC)
        set_to = await DlmsDriver().execute(meter, PROFILE, DriverCommand("clock-set", clock=chosen), timeout=2)
        assert (set_to.meter_time_before, set_to.meter_time_after) == (later, chosen)
        assert sim.states[0].clock_offset == chosen - NOW
        with pytest.raises(ConfigurationError, match="clock-set needs"):
            await DlmsDriver().execute(meter, PROFILE, DriverCommand("clock-set"), timeout=2)


async def test_clock_sync_by_shift_time_where_the_meter_limits_an_adjustment() -> None:
    # IDIS meters take clock corrections as shift_time (class 8, method 6) of at most 900 s.
    limited = PROFILE.model_copy(update={"parameters": {**PROFILE.parameters, "clock_max_shift_s": 900}})
    async with DlmsFleetSimulator(1, seed=SEED, clock=lambda: NOW, clock_offset=timedelta(minutes=-5)) as sim:
        meter = target(sim.meters[0].port)
        synced = await DlmsDriver(clock=lambda: NOW).execute(meter, limited, DriverCommand("clock-sync"), timeout=2)
        assert synced.detail == "shift_time +300 s"
        assert (synced.meter_time_before, synced.meter_time_after) == (NOW - timedelta(minutes=5), NOW)
        assert sim.states[0].clock_offset == timedelta(0)
        sim.states[0].clock_offset = timedelta(minutes=25)  # ahead by more than one shift may correct
        again = await DlmsDriver(clock=lambda: NOW).execute(meter, limited, DriverCommand("clock-sync"), timeout=2)
        assert again.detail == "shift_time -900 s"
        assert sim.states[0].clock_offset == timedelta(minutes=10)  # the rest is for the next sync
        assert [c.action for c in sim.states[0].executed] == ["clock-shift", "clock-shift"]  # never a clock-set


async def test_set_attribute_writes_only_writable_points_and_reads_them_back() -> None:
    async with DlmsFleetSimulator(1, seed=SEED, clock=lambda: NOW) as sim:
        meter, driver = target(sim.meters[0].port), DlmsDriver()
        by_quantity = DriverCommand("set-attribute", point="0-0:96.14.0", value=3)
        done = await driver.execute(meter, WRITABLE, by_quantity, timeout=2)
        assert [(r.quantity, r.value) for r in done.readings] == [("0-0:96.14.0", 3.0)]
        assert sim.states[0].data == {ACTIVE_TARIFF: 3}
        by_source = DriverCommand("set-attribute", point="1/0.0.96.14.0.255/2", value=2)
        assert (await driver.execute(meter, WRITABLE, by_source, timeout=2)).readings[0].value == 2.0
        read = await driver.read(meter, WRITABLE, ReadRequest(), timeout=2)
        assert {r.quantity: r.value for r in read.readings}["0-0:96.14.0"] == 2.0
        refusals = [
            (DriverCommand("set-attribute", point=ENERGY, value=1), "is not writable"),
            (DriverCommand("set-attribute", point="9.9.9.9.9.255", value=1), "no point"),
            (DriverCommand("set-attribute", value=1), "needs a point"),
            (DriverCommand("set-attribute", point="0-0:96.14.0", value=2.5), "finer than the meter's resolution"),
            (DriverCommand("set-attribute", point="0-0:96.14.0", value=300), "outside"),
            (DriverCommand("set-attribute", point="0-0:96.14.0", value="x"), "a number is written"),
            (DriverCommand("write-point", point="0-0:96.14.0", value=1), "cannot run 'write-point'"),
        ]
        for command, message in refusals:
            with pytest.raises(ConfigurationError, match=message):
                await driver.execute(meter, WRITABLE, command, timeout=2)
        assert sim.states[0].data == {ACTIVE_TARIFF: 2}


async def test_commands_and_reads_share_the_counter_store() -> None:
    store = MemoryInvocationCounters()
    async with DlmsFleetSimulator(1, seed=SEED, clock=lambda: NOW, authentication="high-gmac") as sim:
        meter, driver = target(sim.meters[0].port, 0, **keys(0)), DlmsDriver(store)
        profile = ciphered()
        counters: list[int] = []
        for step in ("read", "relay-state", "clock-sync", "read", "disconnect", "reconnect"):
            if step == "read":
                assert (await driver.read(meter, profile, ReadRequest(), timeout=3)).readings
            else:
                await driver.execute(meter, profile, DriverCommand(step), timeout=3)  # type: ignore[arg-type]
            counters.append(store.get(counter_key(meter.meter_id, 1, client_security(SEED, 0))) or 0)
        # Sessions at once are serialised by the meter's hold, never interleaved on one counter.
        await asyncio.gather(
            driver.read(meter, profile, ReadRequest(), timeout=5),
            driver.execute(meter, profile, DriverCommand("relay-state"), timeout=5),
        )
        assert sim.repeats == []
    assert counters == sorted(counters) and len(set(counters)) == len(counters)


# -- pushes over a connection the meter opened ------------------------------------------------------


async def _serve(
    frames: list[bytes], lookup: dict[str, tuple[MeterTarget, DeviceProfile]], *, close: bool = True
) -> tuple[list[Served], BaseException | None]:
    """A listener whose handler serves pushes; one 'meter' connects, sends ``frames`` (one write each)."""
    served: list[Served] = []
    failure: list[BaseException] = []

    async def handler(connection: DialInConnection) -> None:
        try:
            async for item in DlmsDriver().serve(connection, lookup.get, idle_timeout=0.5):
                served.append(item)
        except Exception as exc:  # noqa: BLE001 - the test inspects what serve raised
            failure.append(exc)

    async with TcpListener(ListenerSettings("127.0.0.1", 0, idle_timeout=5), handler) as listener:
        _reader, writer = await asyncio.open_connection("127.0.0.1", listener.port)
        for frame in frames:
            writer.write(frame)
            await writer.drain()
            await asyncio.sleep(0.01)
        if close:
            writer.close()
            await writer.wait_closed()
        for _ in range(200):
            if listener.active == 0:
                break
            await asyncio.sleep(0.01)
        if not close:
            writer.close()
            await writer.wait_closed()
    return served, failure[0] if failure else None


async def test_plain_and_ciphered_pushes_are_served_and_a_bad_one_is_skipped(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    at = NOW.replace(microsecond=0)
    plain = push_message(SEED, 0, at)
    glo = push_message(SEED, 1, at + timedelta(minutes=15), policy="authenticated-encrypted", invocation_counter=9)
    hdlc = push_message(SEED, 2, at, interface="hdlc")
    wrong_key = push_message(SEED, 3, at, policy="authenticated-encrypted")  # looked up with meter 1's keys
    stranger = push_message(SEED, 4, at)
    lookup = {
        meter_id(SEED, 0): (target(1, 0), PROFILE),
        meter_system_title(SEED, 1).hex(): (target(1, 1, **keys(1)), ciphered()),
        meter_id(SEED, 2): (target(1, 2), PROFILE),
        meter_system_title(SEED, 3).hex(): (target(1, 3, **keys(1)), ciphered()),
    }
    served, failure = await _serve([plain, wrong_key, glo[:10], glo[10:] + hdlc, stranger], lookup)
    assert failure is None
    assert [s.meter_id for s in served] == [meter_id(SEED, 0), meter_id(SEED, 1), meter_id(SEED, 2)]
    energy = {s.meter_id: {r.quantity: r for r in s.result.readings}[ENERGY] for s in served}
    assert energy[meter_id(SEED, 0)].unit == "kWh"
    assert energy[meter_id(SEED, 0)].value == Decimal(expected_register(SEED, 0, ENERGY, at)) / 1000
    later = at + timedelta(minutes=15)
    assert energy[meter_id(SEED, 1)].value == Decimal(expected_register(SEED, 1, ENERGY, later)) / 1000
    assert served[1].result.meter_time == later
    assert "decryption" in caplog.text and "no such meter" in caplog.text
    secrets_shown = [v.reveal().hex() for k in (keys(1), keys(3)) for v in k.values()]  # type: ignore[attr-defined]
    assert not [s for s in secrets_shown if s in caplog.text]


async def test_serving_ends_when_the_meter_goes_quiet_and_on_a_stream_out_of_step() -> None:
    push = push_message(SEED, 0, NOW.replace(microsecond=0))
    lookup = {meter_id(SEED, 0): (target(1, 0), PROFILE)}
    served, failure = await _serve([push], lookup, close=False)  # idle_timeout ends it
    assert [s.meter_id for s in served] == [meter_id(SEED, 0)] and failure is None
    served, failure = await _serve([push, b"\x00\x07garbage-garbage"], lookup)
    assert [s.meter_id for s in served] == [meter_id(SEED, 0)]
    assert isinstance(failure, FramingError)


def test_serve_needs_a_positive_idle_timeout() -> None:
    with pytest.raises(ConfigurationError, match="idle timeout"):
        DlmsDriver().serve(
            MeterCoreMedium(lambda: CosemMeterCore(_MeterValues(1, 0), REGISTERS)), {}.get, idle_timeout=0
        )
