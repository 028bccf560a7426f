"""Fleet import into the database, listing, on-demand reads."""

from __future__ import annotations

from datetime import timedelta

import asyncpg
import pytest

from gxami_scheduler.fleet import FleetFileError, FleetMeter, parse_fleet
from gxami_scheduler.registry import (
    ReadRequestOutcome,
    get_meter,
    import_fleet,
    list_meters,
    request_read,
    split_options,
    stored_options,
)
from gxcore.profiles import ProfileCatalog

from .conftest import T0

FLEET = """\
meter_id,protocol,address,profile,group,schedule,options,purposes
a1,dlms,tcp://10.0.0.1:4059,em-dlms,north,15m,client=16,billing
a2,dlms,tcp://10.0.0.2:4059,em-dlms,north,1d,,
b1,modbus,serial:///dev/ttyUSB0?baud=9600,em-modbus,south,1h,unit=3,
"""


async def _count(db: asyncpg.Connection, table: str) -> int:
    return int(await db.fetchval(f"SELECT count(*) FROM {table}"))


async def test_import_creates_meters_and_prompt_spread_schedules(
    db: asyncpg.Connection, profiles: ProfileCatalog
) -> None:
    summary = await import_fleet(db, parse_fleet("f.csv", FLEET, profiles), T0)
    assert str(summary) == "imported 3 meters (3 new, 0 updated)"
    rows = {r["meter_id"]: r for r in await db.fetch("SELECT * FROM meter_schedule")}
    assert set(rows) == {"a1", "a2", "b1"}
    for r in rows.values():
        assert T0 <= r["next_due_at"] < T0 + timedelta(seconds=30)
        assert r["in_flight_job"] is None
        assert r["consecutive_failures"] == 0
    b1 = await get_meter(db, "b1")
    assert b1 is not None
    assert (b1["link_id"], b1["group"], b1["interval_s"]) == ("serial:///dev/ttyUSB0", "south", 3600)
    assert b1["options"] == {"unit": "3"}
    assert b1["purposes"] == ["billing", "load-profile"]
    assert (await get_meter(db, "a1") or {})["purposes"] == ["billing"]


async def test_reimport_updates_registry_but_keeps_schedule_state(
    db: asyncpg.Connection, profiles: ProfileCatalog
) -> None:
    await import_fleet(db, parse_fleet("f.csv", FLEET, profiles), T0)
    far = T0 + timedelta(days=1)
    await db.execute("UPDATE meter_schedule SET consecutive_failures = 4, next_due_at = $1", far)
    changed = FLEET.replace(
        "a2,dlms,tcp://10.0.0.2:4059,em-dlms,north,1d", "a2,dlms,tcp://10.0.0.9:4059,em-dlms,north,15m"
    )
    changed += "c1,dlms,tcp://10.0.0.3:4059,em-dlms,,15m,,\n"
    later = T0 + timedelta(hours=1)
    summary = await import_fleet(db, parse_fleet("f.csv", changed, profiles), later)
    assert (summary.total, summary.new, summary.updated) == (4, 1, 3)
    a2 = await get_meter(db, "a2")
    assert a2 is not None
    assert a2["url"] == "tcp://10.0.0.9:4059"
    assert a2["consecutive_failures"] == 4  # a re-import never resets schedule state
    # Its interval went from a day to 15 minutes: the next read is pulled in accordingly.
    assert a2["next_due_at"] == (later + timedelta(minutes=15)).isoformat()
    a1 = await get_meter(db, "a1")
    assert a1 is not None
    assert a1["next_due_at"] == far.isoformat()
    assert await _count(db, "meter_schedule") == 4


async def test_a_bad_row_imports_nothing(db: asyncpg.Connection, profiles: ProfileCatalog) -> None:
    bad = FLEET + "b2,modbus,serial:///dev/ttyUSB0,em-modbus,south,10s,,\n"
    with pytest.raises(FleetFileError):
        await import_fleet(db, parse_fleet("f.csv", bad, profiles), T0)
    assert await _count(db, "meters") == 0


async def test_a_failing_row_in_the_database_rolls_back_the_whole_import(
    db: asyncpg.Connection, profiles: ProfileCatalog
) -> None:
    good = parse_fleet("f.csv", FLEET, profiles)
    # Bypass validation to reach the database's own check (interval_s >= 60) on the last row.
    broken = FleetMeter.model_construct(**{**good[-1].model_dump(), "meter_id": "zz", "schedule": 5})
    with pytest.raises(asyncpg.CheckViolationError):
        await import_fleet(db, [*good, broken], T0)
    assert await _count(db, "meters") == 0
    assert await _count(db, "meter_schedule") == 0


async def test_list_meters_pages_by_id(db: asyncpg.Connection, profiles: ProfileCatalog) -> None:
    await import_fleet(db, parse_fleet("f.csv", FLEET, profiles), T0)
    page1 = await list_meters(db, limit=2)
    assert [m["meter_id"] for m in page1] == ["a1", "a2"]
    page2 = await list_meters(db, limit=2, after=page1[-1]["meter_id"])
    assert [m["meter_id"] for m in page2] == ["b1"]
    assert [m["meter_id"] for m in await list_meters(db, limit=10, group="north")] == ["a1", "a2"]
    assert isinstance(page1[0]["next_due_at"], str)  # JSON-ready


async def test_request_read(db: asyncpg.Connection, profiles: ProfileCatalog) -> None:
    meters = parse_fleet("f.csv", FLEET, profiles)
    meters.append(FleetMeter.model_validate({**meters[0].model_dump(), "meter_id": "off", "enabled": False}))
    await import_fleet(db, meters, T0)
    await db.execute("UPDATE meter_schedule SET next_due_at = $1", T0 + timedelta(hours=2))
    now = T0 + timedelta(minutes=5)
    assert await request_read(db, "a1", now) is ReadRequestOutcome.QUEUED
    assert (await get_meter(db, "a1") or {})["next_due_at"] == now.isoformat()
    assert await request_read(db, "a1", now + timedelta(minutes=1)) is ReadRequestOutcome.QUEUED
    assert (await get_meter(db, "a1") or {})["next_due_at"] == now.isoformat()  # never later than asked before
    assert await request_read(db, "nope", now) is ReadRequestOutcome.UNKNOWN
    assert await request_read(db, "off", now) is ReadRequestOutcome.DISABLED
    await db.execute(
        "UPDATE meter_schedule SET in_flight_job = 'j', in_flight_until = $1 WHERE meter_id = 'a2'",
        now + timedelta(minutes=5),
    )
    assert await request_read(db, "a2", now) is ReadRequestOutcome.IN_FLIGHT


def test_stored_options_round_trip() -> None:
    raw = stored_options({"client": "16"}, ["billing"])
    assert split_options(raw) == ({"client": "16"}, ["billing"])
    assert split_options("{}") == ({}, ["billing", "load-profile"])
    assert split_options(None) == ({}, ["billing", "load-profile"])


async def test_import_records_the_device_profiles_in_use(db: asyncpg.Connection, profiles: ProfileCatalog) -> None:
    meters = parse_fleet("f.csv", FLEET, profiles)
    used = [profiles.get(n) for n in sorted({m.profile for m in meters})]
    await import_fleet(db, meters, T0, used)
    rows = {r["name"]: r for r in await db.fetch("SELECT name, protocol, definition FROM device_profiles")}
    assert set(rows) == {"em-dlms", "em-modbus"}
    assert rows["em-dlms"]["protocol"] == "dlms"
    assert "points" in rows["em-dlms"]["definition"]
    # a re-import with the same definitions changes nothing; nothing half-imported on a bad file
    before = await db.fetchval("SELECT max(updated_at) FROM device_profiles")
    await import_fleet(db, meters, T0, used)
    assert await db.fetchval("SELECT max(updated_at) FROM device_profiles") == before
