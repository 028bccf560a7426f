"""DLMS event-log entries become meter events (never readings), with ids stable across reads."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from gxami_meterlab.simulators.dlms import DlmsFleetSimulator, expected_events
from gxcore.drivers import MeterEventRecord, MeterTarget, ReadRequest, stable_event_id
from gxcore.drivers.dlms.driver import DlmsDriver, _profile_values, dlms_point
from gxcore.errors import ProtocolError
from gxcore.profiles.model import DeviceProfile, ProfilePoint
from gxcore.protocols.dlms.events import DlmsEvent, events_from_readings
from gxcore.readings import Reading

T0 = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)
STANDARD = "0.0.99.98.0.255"
FRAUD = "0.0.99.98.1.255"


def _code(value: float, at: datetime, quantity: str = "0-0:96.11.0") -> Reading:
    return Reading(quantity, value, "", at)


def test_standard_log_rows_are_named_events_oldest_first() -> None:
    rows = [_code(2, T0 + timedelta(minutes=5)), _code(1, T0), _code(230, T0 + timedelta(hours=1))]
    events = events_from_readings(rows, STANDARD)
    assert [(e.timestamp, e.code, e.name, e.log) for e in events] == [
        (T0, 1, "power-down", "0-0:99.98.0"),
        (T0 + timedelta(minutes=5), 2, "power-up", "0-0:99.98.0"),
        (T0 + timedelta(hours=1), 230, None, "0-0:99.98.0"),
    ]


def test_rows_that_are_not_event_codes_are_skipped() -> None:
    rows = [
        _code(1.5, T0),
        _code(float("nan"), T0),
        _code(float("inf"), T0),
        _code(-1, T0),
        Reading("1-0:1.8.0", 7, "kWh", T0),
        _code(40, T0, "0-0:96.11.1"),
    ]
    events = events_from_readings(rows, FRAUD)
    assert [(e.code, e.name, e.log) for e in events] == [(40, None, "0-0:99.98.1")]


def test_records_carry_kind_severity_source_and_a_stable_id() -> None:
    down = DlmsEvent(T0, 1, "0-0:99.98.0", "power-down")
    ram = DlmsEvent(T0, 13, "0-0:99.98.0", "ram-error")
    odd = DlmsEvent(T0, 13, "0-0:99.98.1")
    r = down.record("M1")
    assert (r.meter_id, r.timestamp, r.kind, r.source, r.code, r.severity) == (
        "M1",
        T0,
        "power-down",
        "0-0:99.98.0",
        1,
        "warning",
    )
    assert ram.record("M1").severity == "alarm"
    # the same code in another log is not the standard event: bare code, no severity claimed
    assert (odd.record("M1").kind, odd.record("M1").severity) == ("event-13", "info")
    # read again (a redelivered job): the same id; any identifying field changed: another id
    assert r.event_id == down.record("M1").event_id == stable_event_id("M1", "0-0:99.98.0", T0, 1)
    others = {
        DlmsEvent(T0, 1, "0-0:99.98.0", "power-down").record("M2").event_id,
        DlmsEvent(T0 + timedelta(seconds=1), 1, "0-0:99.98.0").record("M1").event_id,
        DlmsEvent(T0, 2, "0-0:99.98.0").record("M1").event_id,
        DlmsEvent(T0, 1, "0-0:99.98.1").record("M1").event_id,
    }
    assert r.event_id not in others and len(others) == 4
    # the id depends on the instant, not on the zone it is written in
    cet = T0.astimezone(timezone(timedelta(hours=2)))
    assert stable_event_id("M1", "0-0:99.98.0", cet, 1) == r.event_id


def test_record_checks() -> None:
    with pytest.raises(ProtocolError, match=r"meter M1: .*no time zone"):
        MeterEventRecord("M1", datetime(2024, 1, 1), "power-down", "0-0:99.98.0")
    with pytest.raises(ProtocolError, match=r"1\.\.64"):
        MeterEventRecord("M1", T0, "x" * 65, "0-0:99.98.0")
    own = MeterEventRecord("M1", T0, "tamper", "push", event_id="meter-seq-17")
    assert own.event_id == "meter-seq-17"


def test_a_log_with_value_columns_gives_readings_for_them_and_events_for_the_codes() -> None:
    code_point = dlms_point(
        ProfilePoint(
            quantity="0-0:96.11.0",
            unit="",
            source="1/0.0.96.11.0.255",
            purpose=["events"],
            options={"profile": STANDARD},
        )
    )
    volts = dlms_point(
        ProfilePoint(
            quantity="1-0:32.7.0",
            unit="V",
            source="3/1.0.32.7.0.255",
            purpose=["events"],
            options={"profile": STANDARD},
        )
    )
    rows = [
        _code(1, T0),
        Reading("1-0:32.7.0", 12.0, "V", T0),
        _code(1, T0),
        _code(2, T0 + timedelta(seconds=40)),
        Reading("1-0:32.7.0", 229.0, "V", T0),
    ]
    readings, events = _profile_values(rows, [code_point, volts], STANDARD, "M1")
    assert [(r.quantity, r.value) for r in readings] == [("1-0:32.7.0", 12.0), ("1-0:32.7.0", 229.0)]
    # the entry logged twice in the same second is one event
    assert [(e.kind, e.timestamp) for e in events] == [("power-down", T0), ("power-up", T0 + timedelta(seconds=40))]


async def test_driver_reads_the_same_event_ids_every_time() -> None:
    now = datetime(2024, 6, 1, 19, 41, 7, tzinfo=UTC)
    profile = DeviceProfile(
        name="events-dlms",
        protocol="dlms",
        points=[
            ProfilePoint(quantity="1-0:1.8.0", unit="kWh", source="3/1.0.1.8.0.255"),
            ProfilePoint(
                quantity="0-0:96.11.0",
                unit="",
                source="1/0.0.96.11.0.255",
                purpose=["events"],
                options={"profile": STANDARD, "last_entries": 6},
            ),
        ],
    )
    request = ReadRequest(purposes=frozenset({"billing", "events"}))
    async with DlmsFleetSimulator(1, seed=9, clock=lambda: now) as sim:
        target = MeterTarget("M1", f"tcp://127.0.0.1:{sim.meters[0].port}")
        first = await DlmsDriver().read(target, profile, request, timeout=2)
        again = await DlmsDriver().read(target, profile, request, timeout=2)
    assert [r.quantity for r in first.readings] == ["1-0:1.8.0"]
    assert [(e.timestamp, e.code) for e in first.events] == expected_events(9, 0, now - timedelta(days=400), now)[-6:]
    assert [e.event_id for e in first.events] == [e.event_id for e in again.events]
    assert len({e.event_id for e in first.events}) == 6
