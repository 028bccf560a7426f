"""Edge sites: a site meter's jobs go to its site's topic, and one site's outage never holds another's jobs."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

import asyncpg
import pytest

from gxami_contracts import Message, ReadJob
from gxami_contracts.topics import READ_JOBS
from gxami_scheduler.app import Scheduler
from gxami_scheduler.fleet import FleetFileError, parse_fleet
from gxami_scheduler.metrics import SchedulerMetrics
from gxami_scheduler.registry import get_meter, import_fleet
from gxami_scheduler.settings import SchedulerSettings
from gxami_scheduler.sites import JobSender
from gxcore.profiles import ProfileCatalog

from .conftest import T0

FLEET = """\
meter_id,protocol,address,profile,schedule,site
c1,dlms,tcp://10.0.0.1:4059,em-dlms,15m,
a1,dlms,tcp://10.0.1.1:4059,em-dlms,15m,north
a2,dlms,tcp://10.0.1.2:4059,em-dlms,15m,north
b1,dlms,tcp://10.0.2.1:4059,em-dlms,15m,south
"""


def test_the_fleet_file_takes_a_site_and_refuses_one_that_is_no_topic_name(profiles: ProfileCatalog) -> None:
    meters = {m.meter_id: m for m in parse_fleet("f.csv", FLEET, profiles)}
    assert meters["a1"].site == "north"
    assert meters["c1"].site is None  # an empty cell: the central collectors
    bad = FLEET.replace(
        "b1,dlms,tcp://10.0.2.1:4059,em-dlms,15m,south", "b1,dlms,tcp://10.0.2.1:4059,em-dlms,15m,so/uth"
    )
    with pytest.raises(FleetFileError) as refused:
        parse_fleet("f.csv", bad, profiles)
    assert refused.value.line == 5
    assert refused.value.field == "site"


class _Recorder:
    def __init__(self, name: str, fail: bool = False) -> None:
        self.name = name
        self.fail = fail
        self.jobs: list[ReadJob] = []

    async def send_many(self, logical_topic: str, items: Sequence[tuple[str, Message]]) -> None:
        assert logical_topic == READ_JOBS.name
        if self.fail:
            raise OSError(f"topic of {self.name} unavailable")
        self.jobs += [m for _, m in items if isinstance(m, ReadJob)]


class _Sites:
    def __init__(self, senders: dict[str, _Recorder]) -> None:
        self.senders = senders

    async def for_site(self, site: str) -> JobSender:
        return self.senders[site]


async def test_a_site_whose_jobs_cannot_be_sent_holds_back_only_its_own(
    db: asyncpg.Connection, database_url: str, profiles: ProfileCatalog
) -> None:
    await import_fleet(db, parse_fleet("f.csv", FLEET, profiles), T0)
    assert (await get_meter(db, "a1") or {})["site"] == "north"
    central, north, south = _Recorder("centre"), _Recorder("north", fail=True), _Recorder("south")
    metrics = SchedulerMetrics()
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
    now = [T0 + timedelta(minutes=1)]
    try:
        sites = _Sites({"north": north, "south": south})
        scheduler = Scheduler(SchedulerSettings(), pool, central, metrics, clock=lambda: now[0], sites=sites)
        assert await scheduler.tick() == 2, "the centre's and south's jobs went out"
        assert [j.meter_id for j in central.jobs] == ["c1"]
        assert [j.meter_id for j in south.jobs] == ["b1"]
        assert metrics.publish_failures._value.get() == 1
        # North's claims stay in flight (not released to crowd every next claim) ...
        in_flight = {
            r["meter_id"] for r in await db.fetch("SELECT meter_id FROM meter_schedule WHERE in_flight_job IS NOT NULL")
        }
        assert in_flight == {"c1", "a1", "a2", "b1"}
        now[0] += timedelta(seconds=10)
        assert await scheduler.tick() == 0, "... so they are not claimed at the next tick"
        # ... until their deadline has passed: then they come back as lost jobs, with a failure counted.
        north.fail = False
        now[0] += timedelta(minutes=10)
        assert await scheduler.tick() == 4
        assert sorted(j.meter_id for j in north.jobs) == ["a1", "a2"]
        assert {j.attempt for j in north.jobs} == {2}, "the unsent job counts as a lost one"
        # Nothing at all can be sent: every claim is released and the tick fails, as before sites.
        central.fail = south.fail = north.fail = True
        now[0] += timedelta(minutes=10)
        with pytest.raises(OSError):
            await scheduler.tick()
        assert await db.fetchval("SELECT count(*) FROM meter_schedule WHERE in_flight_job IS NOT NULL") == 0
    finally:
        await pool.close()
