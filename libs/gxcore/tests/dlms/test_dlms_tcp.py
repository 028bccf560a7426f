"""read_dlms against the simulated fleet over real localhost TCP."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta

import pytest

from gxcore.dlms import CosemValue, DlmsParameters, DlmsReadRequest, ProfileRange, read_dlms
from gxcore.errors import AccessDeniedError, MediaError, MeterTimeoutError
from gxcore.simulators.dlms import (
    LOAD_PROFILE,
    REGISTERS,
    DlmsFleetSimulator,
    expected_profile,
    expected_register,
    run_simulator,
)

SEED = 11
NOW = datetime(2024, 11, 3, 9, 41, 27, 450_000, tzinfo=UTC)
PASSWORD = "lls-pass-01"
ALL_REGISTERS = tuple(r.obis for r in REGISTERS)


def fleet(meters: int = 3, **kwargs: object) -> DlmsFleetSimulator:
    return DlmsFleetSimulator(meters, seed=SEED, clock=lambda: NOW, **kwargs)  # type: ignore[arg-type]


async def test_registers_equal_the_model_at_the_clock_instant(capsys: pytest.CaptureFixture[str]) -> None:
    async with fleet() as sim:
        port = sim.meters[2].port
        result = await read_dlms("127.0.0.1", port, DlmsParameters(), DlmsReadRequest(ALL_REGISTERS), timeout=2)
    assert result.meter_time == NOW.replace(microsecond=0)
    assert result.failures == ()
    got = {r.quantity: (r.value, r.unit, r.timestamp) for r in result.registers}
    assert set(got) == {"1-0:1.8.0", "1-0:2.8.0", "1-0:1.7.0", "1-0:32.7.0", "1-0:31.7.0"}
    for quantity, (value, _unit, stamp) in got.items():
        assert stamp == result.meter_time
        assert value == expected_register(SEED, 2, quantity, result.meter_time)
    assert [got[q][1] for q in ("1-0:1.8.0", "1-0:1.7.0", "1-0:32.7.0", "1-0:31.7.0")] == ["Wh", "W", "V", "A"]
    assert 200 < got["1-0:32.7.0"][0] < 250
    assert capsys.readouterr().out == ""


async def test_two_day_profile_equals_the_model_exactly(capsys: pytest.CaptureFixture[str]) -> None:
    start, end = NOW - timedelta(days=2), NOW
    request = DlmsReadRequest((), read_clock=True, profile=ProfileRange(LOAD_PROFILE, start, end))
    async with fleet(authentication="low", password=PASSWORD) as sim:
        params = DlmsParameters(authentication="low", password=PASSWORD, max_pdu=512)
        result = await read_dlms("127.0.0.1", sim.meters[1].port, params, request, timeout=2)
    rows: dict[datetime, dict[str, float]] = {}
    for r in result.profile:
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
            await read_dlms("127.0.0.1", sim.meters[0].port, params, DlmsReadRequest(ALL_REGISTERS), timeout=2)
    assert "not-the-one" not in str(denied.value)
    assert PASSWORD not in str(denied.value)
    assert "not-the-one" not in repr(params)
    assert capsys.readouterr().out == ""


async def test_silent_meter_times_out_within_the_timeout(capsys: pytest.CaptureFixture[str]) -> None:
    async with fleet(silent_meters={1}) as sim:
        started = time.monotonic()
        with pytest.raises(MeterTimeoutError):
            await read_dlms("127.0.0.1", sim.meters[1].port, DlmsParameters(), DlmsReadRequest(), timeout=0.3)
        assert time.monotonic() - started < 1.0
        # Its neighbours still answer.
        ok = await read_dlms("127.0.0.1", sim.meters[0].port, DlmsParameters(), DlmsReadRequest(), timeout=2)
        assert ok.meter_time is not None
    assert capsys.readouterr().out == ""


async def test_refusing_meter_and_closed_port_are_media_errors() -> None:
    async with fleet(refusing_meters={0}) as sim:
        with pytest.raises(MediaError):
            await read_dlms("127.0.0.1", sim.meters[0].port, DlmsParameters(), DlmsReadRequest(), timeout=2)
        closed = sim.meters[0].port
    with pytest.raises(MediaError):
        await read_dlms("127.0.0.1", closed, DlmsParameters(), DlmsReadRequest(), timeout=2)


async def test_refused_object_is_a_failure_and_the_session_goes_on() -> None:
    request = DlmsReadRequest(("1.0.99.98.0.255", CosemValue("1.0.1.8.0.255")))
    async with fleet() as sim:
        result = await read_dlms("127.0.0.1", sim.meters[0].port, DlmsParameters(), request, timeout=2)
    assert [f.quantity for f in result.failures] == ["1-0:99.98.0"]
    assert result.failures[0].kind == "protocol"
    assert [r.quantity for r in result.registers] == ["1-0:1.8.0"]


async def test_fifty_meters_read_concurrently() -> None:
    start = NOW - timedelta(days=1)
    request = DlmsReadRequest(ALL_REGISTERS, profile=ProfileRange(LOAD_PROFILE, start, NOW))
    async with fleet(50) as sim:
        began = time.monotonic()
        results = await asyncio.gather(
            *(read_dlms("127.0.0.1", m.port, DlmsParameters(), request, timeout=5) for m in sim.meters)
        )
        elapsed = time.monotonic() - began
    assert all(len(r.registers) == 5 and len(r.profile) == 2 * 96 for r in results)
    assert [r.registers[0].value for r in results[:3]] == [
        expected_register(SEED, i, "1.0.1.8.0.255", NOW) for i in range(3)
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
    result = await read_dlms("127.0.0.1", seen[0], DlmsParameters(), DlmsReadRequest(), timeout=2)
    assert result.meter_time is not None
    stop.set()
    await asyncio.wait_for(task, 2)
