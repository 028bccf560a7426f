"""DLMS sessions and the driver against the simulated fleet over real localhost TCP."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from gxami_meterlab.simulators.dlms import (
    LOAD_PROFILE,
    REGISTERS,
    DlmsFleetSimulator,
    expected_profile,
    expected_register,
    run_simulator,
)
from gxcore.drivers import MeterTarget, ReadRequest
from gxcore.drivers.dlms import DlmsSession
from gxcore.drivers.dlms.driver import DlmsDriver
from gxcore.errors import AccessDeniedError, MediaError, MeterTimeoutError, ProtocolError
from gxcore.profiles.model import BUILTIN_DIR, DeviceProfile, ProfilePoint, load_profile
from gxcore.protocols.dlms import CosemValue, DlmsParameters, ProfileRange

SEED = 11
NOW = datetime(2024, 11, 3, 9, 41, 27, 450_000, tzinfo=UTC)
PASSWORD = "lls-pass-01"
GENERIC = load_profile(Path(BUILTIN_DIR) / "generic-dlms.yaml")
ALL_REGISTERS = tuple(r.obis for r in REGISTERS)


def fleet(meters: int = 3, **kwargs: object) -> DlmsFleetSimulator:
    return DlmsFleetSimulator(meters, seed=SEED, clock=lambda: NOW, **kwargs)  # type: ignore[arg-type]


def tcp(port: int) -> str:
    return f"tcp://127.0.0.1:{port}"


async def test_registers_equal_the_model_at_the_clock_instant(capsys: pytest.CaptureFixture[str]) -> None:
    async with fleet() as sim, DlmsSession(tcp(sim.meters[2].port), DlmsParameters(), timeout=2) as session:
        meter_time = await session.read_clock()
        got = {CosemValue(o).quantity: await session.read_value(CosemValue(o)) for o in ALL_REGISTERS}
    assert meter_time == NOW.replace(microsecond=0)
    assert set(got) == {"1-0:1.8.0", "1-0:2.8.0", "1-0:1.7.0", "1-0:32.7.0", "1-0:31.7.0"}
    for quantity, (value, _unit) in got.items():
        assert value == expected_register(SEED, 2, quantity, meter_time)
    assert [got[q][1] for q in ("1-0:1.8.0", "1-0:1.7.0", "1-0:32.7.0", "1-0:31.7.0")] == ["Wh", "W", "V", "A"]
    assert 200 < got["1-0:32.7.0"][0] < 250
    assert capsys.readouterr().out == ""


async def test_two_day_profile_equals_the_model_exactly(capsys: pytest.CaptureFixture[str]) -> None:
    start, end = NOW - timedelta(days=2), NOW
    async with fleet(authentication="low", password=PASSWORD) as sim:
        params = DlmsParameters(authentication="low", password=PASSWORD, max_pdu=512)
        async with DlmsSession(tcp(sim.meters[1].port), params, timeout=2) as session:
            profile = await session.read_profile(ProfileRange(LOAD_PROFILE, start, end))
    rows: dict[datetime, dict[str, float]] = {}
    for r in profile:
        assert r.extra == {"profile": "1-0:99.1.0"}
        assert r.unit == "Wh"
        rows.setdefault(r.timestamp, {})[r.quantity] = r.value
    assert sorted(rows.items()) == expected_profile(SEED, 1, start, end)
    assert len(rows) == 2 * 96
    assert capsys.readouterr().out == ""


async def test_wrong_password_is_access_denied(capsys: pytest.CaptureFixture[str]) -> None:
    async with fleet(authentication="low", password=PASSWORD) as sim:
        params = DlmsParameters(authentication="low", password="not-the-one")
        with pytest.raises(AccessDeniedError) as denied:
            async with DlmsSession(tcp(sim.meters[0].port), params, timeout=2) as session:
                await session.read_clock()
    assert "not-the-one" not in str(denied.value)
    assert PASSWORD not in str(denied.value)
    assert "not-the-one" not in repr(params)
    assert capsys.readouterr().out == ""


async def test_silent_meter_times_out_within_the_timeout(capsys: pytest.CaptureFixture[str]) -> None:
    async with fleet(silent_meters={1}) as sim:
        started = time.monotonic()
        with pytest.raises(MeterTimeoutError):
            async with DlmsSession(tcp(sim.meters[1].port), DlmsParameters(), timeout=0.3) as session:
                await session.read_clock()
        assert time.monotonic() - started < 1.0
        # Its neighbours still answer.
        async with DlmsSession(tcp(sim.meters[0].port), DlmsParameters(), timeout=2) as session:
            assert await session.read_clock() == NOW.replace(microsecond=0)
    assert capsys.readouterr().out == ""


async def test_refusing_meter_and_closed_port_are_media_errors() -> None:
    async with fleet(refusing_meters={0}) as sim:
        with pytest.raises(MediaError):
            async with DlmsSession(tcp(sim.meters[0].port), DlmsParameters(), timeout=2):
                pass
        closed = sim.meters[0].port
    with pytest.raises(MediaError):
        async with DlmsSession(tcp(closed), DlmsParameters(), timeout=2):
            pass


async def test_refused_object_is_skipped_and_the_session_goes_on() -> None:
    refused = ProfilePoint(quantity="1-0:99.98.0", unit="", source="3/1.0.99.98.0.255")
    energy = ProfilePoint(quantity="1-0:1.8.0", unit="Wh", source="3/1.0.1.8.0.255")
    profile = DeviceProfile(name="refused-first", protocol="dlms", points=[refused, energy])
    async with fleet() as sim:
        async with DlmsSession(tcp(sim.meters[0].port), DlmsParameters(), timeout=2) as session:
            with pytest.raises(ProtocolError) as refusal:
                await session.read_value(CosemValue("1.0.99.98.0.255"))
            assert refusal.value.kind == "protocol"
            assert not session.broken
            value, unit = await session.read_value(CosemValue("1.0.1.8.0.255"))
        result = await DlmsDriver().read(MeterTarget("m0", tcp(sim.meters[0].port)), profile, ReadRequest(), timeout=2)
    assert (value, unit) == (expected_register(SEED, 0, "1.0.1.8.0.255", NOW), "Wh")
    assert [(r.quantity, r.value) for r in result.readings] == [("1-0:1.8.0", value)]


async def test_fifty_meters_read_concurrently() -> None:
    start = NOW - timedelta(days=1)
    request = ReadRequest(purposes=frozenset({"billing", "instantaneous", "load-profile"}), profile_from=start)
    driver = DlmsDriver()
    async with fleet(50) as sim:
        began = time.monotonic()
        results = await asyncio.gather(
            *(
                driver.read(MeterTarget(f"m{i}", tcp(m.port)), GENERIC, request, timeout=5)
                for i, m in enumerate(sim.meters)
            )
        )
        elapsed = time.monotonic() - began
    # Five registers, then two columns of a day of 15-minute rows.
    assert all(len(r.readings) == 5 + 2 * 96 for r in results)
    assert [r.readings[0].value for r in results[:3]] == [
        Decimal(expected_register(SEED, i, "1.0.1.8.0.255", NOW)) / 1000 for i in range(3)
    ]
    assert elapsed < 10


async def test_run_simulator_serves_until_stopped() -> None:
    stop = asyncio.Event()
    seen: list[int] = []
    task = asyncio.create_task(
        run_simulator(2, 4, "127.0.0.1", 0, "none", None, stop, on_started=lambda ms: seen.extend(m.port for m in ms))
    )
    for _ in range(100):
        if seen:
            break
        await asyncio.sleep(0.01)
    async with DlmsSession(tcp(seen[0]), DlmsParameters(), timeout=2) as session:
        assert isinstance(await session.read_clock(), datetime)
    stop.set()
    await asyncio.wait_for(task, 2)
