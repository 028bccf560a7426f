"""Tariff calendars (activity calendar class 20, special days class 11) through the DLMS driver, over TCP."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from gxami_meterlab.dlms.tariff_calendar import CalendarState
from gxami_meterlab.simulators.dlms import DlmsFleetSimulator, meter_id
from gxcore.drivers import MeterTarget
from gxcore.drivers.api import DriverCommand
from gxcore.drivers.dlms.driver import DlmsDriver
from gxcore.errors import ConfigurationError, ProtocolError
from gxcore.profiles.model import BUILTIN_DIR, load_profile
from gxcore.protocols.dlms import axdr
from gxcore.protocols.dlms import calendar as cal
from gxcore.tariffs import calendar_body, load_tariff_file

NOW = datetime(2025, 12, 31, 22, 0, tzinfo=UTC)
SEED = 3
PROFILE = load_profile(Path(BUILTIN_DIR) / "generic-dlms.yaml")
EXAMPLE = Path(__file__).resolve().parents[4] / "docs" / "examples" / "tariff-day-night.yaml"
CALENDAR = load_tariff_file(EXAMPLE)


def target(port: int) -> MeterTarget:
    return MeterTarget(meter_id(SEED, 0), f"tcp://127.0.0.1:{port}")


def command(**changes: object) -> DriverCommand:
    calendar = CALENDAR.model_copy(update=changes)
    return DriverCommand("tariff-calendar", body=calendar_body(calendar))


async def test_a_calendar_is_written_read_back_and_becomes_active_at_its_time() -> None:
    clock = [NOW]
    async with DlmsFleetSimulator(1, seed=SEED, clock=lambda: clock[0]) as sim:
        meter = sim.states[0].calendar
        meter.special[9] = b"\x02\x03\x12\x00\x09\x09\x05\xff\xff\x07\x04\xff\x11\x02"  # a stale holiday
        result = await DlmsDriver().execute(target(sim.meters[0].port), PROFILE, command(), timeout=2)
        assert result.state == "passive-written"
        assert {r.quantity: r.value for r in result.readings}["calendar-special-days"] == 5
        # The meter holds what the file says, in COSEM terms.
        assert axdr.decode_all(meter.attributes[6]) == b"DAYNIGHT-2026"
        days = axdr.decode_all(meter.attributes[9])
        assert days == [
            [1, [[bytes([0, 0, 0, 0]), bytes([0, 0, 10, 0, 100, 255]), 2],
                 [bytes([7, 0, 0, 0]), bytes([0, 0, 10, 0, 100, 255]), 1],
                 [bytes([23, 0, 0, 0]), bytes([0, 0, 10, 0, 100, 255]), 2]]],
            [2, [[bytes([0, 0, 0, 0]), bytes([0, 0, 10, 0, 100, 255]), 2]]],
        ]  # fmt: skip
        weeks = axdr.decode_all(meter.attributes[8])
        assert weeks[0] == [b"winter-week", 1, 1, 1, 1, 1, 2, 2]
        seasons = axdr.decode_all(meter.attributes[7])
        assert [s[0] for s in seasons] == [b"winter", b"summer", b"winter2"]  # type: ignore[index,union-attr]
        assert sorted(meter.special) == [1, 2, 3, 4, 5]  # the stale entry 9 was deleted
        assert ("delete", 9) in meter.log
        christmas = axdr.decode_all(meter.special[3])
        assert christmas == [3, bytes([0xFF, 0xFF, 12, 25, 0xFF]), 2]
        # Not yet active; the next association after 2026-01-01T00:00Z finds it active.
        assert axdr.decode_all(meter.attributes[2]) == b""
        mark = len(meter.log)
        clock[0] = NOW + timedelta(hours=3)
        again = await DlmsDriver().execute(target(sim.meters[0].port), PROFILE, command(), timeout=2)
        assert meter.log[mark] == ("activate", "time")
        assert meter.attributes[2] == meter.attributes[6] and meter.attributes[5] == meter.attributes[9]
        assert again.state == "passive-written"
        # Writing the same calendar again left the special days alone: nothing inserted or deleted.
        assert not [e for e in meter.log[mark:] if e[0] in ("insert", "delete")]


async def test_activate_now_calls_the_method_and_checks_the_active_calendar() -> None:
    async with DlmsFleetSimulator(1, seed=SEED, clock=lambda: NOW) as sim:
        meter = sim.states[0].calendar
        result = await DlmsDriver().execute(
            target(sim.meters[0].port), PROFILE, command(activate_now=True, activate_at=None), timeout=2
        )
        assert result.state == "activated"
        assert ("activate", "method") in meter.log
        assert axdr.decode_all(meter.attributes[2]) == b"DAYNIGHT-2026"
        assert 10 not in [e[1] for e in meter.log if e[0] == "set"]  # no activation time was written


async def test_a_bad_calendar_body_is_refused_before_any_io() -> None:
    body = calendar_body(CALENDAR)
    body["days"][0]["switches"] = []
    with pytest.raises(ConfigurationError, match=r"tariff-calendar body: days\.0\.switches"):
        await DlmsDriver().execute(target(1), PROFILE, DriverCommand("tariff-calendar", body=body), timeout=1)


def test_season_starts_and_special_dates_recur_every_year() -> None:
    assert cal.season_start("04-01") == bytes([0xFF, 0xFF, 4, 1, 0xFF, 0, 0, 0, 0xFF, 0x80, 0x00, 0xFF])
    assert cal.special_date("2026-04-06") == bytes([0x07, 0xEA, 4, 6, 0xFF])


async def test_a_meter_that_keeps_something_else_fails_the_read_back(monkeypatch: pytest.MonkeyPatch) -> None:
    original = CalendarState.write

    def lossy(self: CalendarState, index: int, value: bytes) -> int:
        # A meter that drops the last day profile of what it is sent, yet answers success.
        if index == cal.DAYS_PASSIVE:
            value = cal.day_profiles(CALENDAR.model_copy(update={"days": CALENDAR.days[:1]}))
        return original(self, index, value)

    monkeypatch.setattr(CalendarState, "write", lossy)
    async with DlmsFleetSimulator(1, seed=SEED, clock=lambda: NOW) as sim:
        with pytest.raises(ProtocolError, match=r"20/0\.0\.13\.0\.0\.255/9 reads back other than written"):
            await DlmsDriver().execute(target(sim.meters[0].port), PROFILE, command(), timeout=2)
