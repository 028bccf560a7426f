"""Meters a listener heard, registered by the scheduler: inserted once, never over an operator's row."""

from __future__ import annotations

import asyncpg

from gxami_contracts import MeterRegistration
from gxami_scheduler.fleet import parse_fleet
from gxami_scheduler.fleet_feed import fleet_entry
from gxami_scheduler.registrations import register_meters
from gxami_scheduler.registry import import_fleet
from gxcore.profiles import ProfileCatalog

from .conftest import T0


def _heard(meter_id: str, **fields: str) -> MeterRegistration:
    return MeterRegistration.model_validate(
        {"meter_id": meter_id, "protocol": "dlms", "url": "tcp://0.0.0.0:4059", "profile": "em-dlms", "heard_at": T0}
        | fields
    )


async def test_a_heard_meter_is_registered_once_as_a_push_meter_and_an_operators_row_wins(
    db: asyncpg.Connection, profiles: ProfileCatalog
) -> None:
    fleet = "meter_id,protocol,address,profile,group,schedule\nop1,dlms,tcp://10.0.0.1:4059,em-dlms,north,15m\n"
    await import_fleet(db, parse_fleet("f.csv", fleet, profiles), T0)
    heard = [
        _heard("SIM00100007", serial="SIM00100007"),
        _heard("4758410100000009", system_title="4758410100000009"),
        _heard("SIM00100007", serial="SIM00100007"),  # heard twice in one batch
        _heard("op1", serial="op1"),  # an operator registered it: left as it is
    ]
    assert sorted(await register_meters(db, heard)) == ["4758410100000009", "SIM00100007"]
    assert await register_meters(db, heard) == [], "a redelivered batch inserts nothing"
    rows = {r["meter_id"]: r for r in await db.fetch("SELECT * FROM meters")}
    pushed = fleet_entry(rows["SIM00100007"])
    assert (pushed.connection, pushed.serial, pushed.system_title, pushed.profile) == (
        "push",
        "SIM00100007",
        None,
        "em-dlms",
    )
    assert fleet_entry(rows["4758410100000009"]).system_title == "4758410100000009"
    assert fleet_entry(rows["op1"]).connection == "poll" and rows["op1"]["meter_group"] == "north"
    unpolled = await db.fetchval("SELECT count(*) FROM meter_schedule WHERE meter_id <> 'op1'")
    assert unpolled == 0, "push meters get no schedule"
