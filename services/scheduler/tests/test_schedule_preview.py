"""`gxami schedule preview`: the planned work of a group from the registry, with nothing emitted."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import asyncpg
import typer
from typer.testing import CliRunner

from gxami_scheduler.cli import fleet_app, schedule_app
from gxami_scheduler.schedule_preview import RegistryEntry, planned_work
from gxami_scheduler.schedules import MeterPlan, NamedSchedule, PriorityClass

FLEET = """\
schedules:
  midnight: {cron: "0 0 * * *", timezone: Europe/Berlin, purposes: [billing], priority: billing}
  lp-1h: {interval: 1h, purposes: [load-profile]}
groups:
  res: {schedules: [midnight, lp-1h]}
meters:
  - {meter_id: r1, protocol: dlms, address: "tcp://10.0.0.1:4059", profile: em-dlms, schedule: 15m, group: res}
  - {meter_id: x1, protocol: dlms, address: "tcp://10.0.0.2:4059", profile: em-dlms, schedule: 6h, group: other}
"""

gxami = typer.Typer()
gxami.add_typer(fleet_app, name="fleet")
gxami.add_typer(schedule_app, name="schedule")


def test_planned_work_orders_by_time_then_class() -> None:
    t0 = datetime(2026, 10, 24, 20, 0, tzinfo=UTC)
    plan = MeterPlan(
        {
            "midnight": NamedSchedule.model_validate(
                {"cron": "0 0 * * *", "timezone": "Europe/Berlin", "purposes": ["billing"], "priority": "billing"}
            ),
            "hourly": NamedSchedule.model_validate({"cron": "0 * * * *", "purposes": ["load-profile"]}),
        }
    )
    planned = RegistryEntry("a", 900, ("billing",), plan, t0, PriorityClass.INTERVAL, ("load-profile",))
    plain = RegistryEntry("b", 3600, ("billing", "load-profile"), None, t0, PriorityClass.ON_DEMAND, None)
    runs = planned_work([plain, planned], t0, t0 + timedelta(hours=3))
    assert [(r.at.hour, r.meter_id, r.priority.label) for r in runs] == [
        (20, "b", "on-demand"),  # the stored next run first, in its stored class
        (20, "a", "interval"),
        (21, "a", "interval"),
        (21, "b", "interval"),
        (22, "a", "billing"),  # local midnight in Berlin (CEST) merges with the hourly read
        (22, "b", "interval"),
        (23, "a", "interval"),
        (23, "b", "interval"),
    ]
    assert set(runs[4].purposes) == {"billing", "load-profile"}


def test_preview_command_prints_the_group_and_emits_nothing(
    tmp_path: Path, database_url: str, profile_dir: Path
) -> None:
    path = tmp_path / "fleet.yaml"
    path.write_text(FLEET)
    env = {"GXAMI_DATABASE_URL": database_url, "GXAMI_PROFILE_DIRS": json.dumps([str(profile_dir)])}
    runner = CliRunner(env=env)
    imported = runner.invoke(gxami, ["fleet", "import", str(path)])
    assert imported.exit_code == 0, imported.output
    result = runner.invoke(gxami, ["schedule", "preview", "--group", "res", "--hours", "24"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["TIME", "METER", "PRIORITY", "PURPOSES"]
    rows = [line.split() for line in lines[1:]]
    assert {r[1] for r in rows} == {"r1"}  # only the group asked for
    assert 24 <= len(rows) <= 25  # hourly for a day, midnight merged into one of them
    billing = [r for r in rows if r[2] == "billing"]
    assert len(billing) == 1
    assert datetime.fromisoformat(billing[0][0]).astimezone(ZoneInfo("Europe/Berlin")).hour == 0

    async def in_flight() -> int:
        conn = await asyncpg.connect(database_url, timeout=10)
        try:
            return int(await conn.fetchval("SELECT count(*) FROM meter_schedule WHERE in_flight_job IS NOT NULL"))
        finally:
            await conn.close()

    assert asyncio.run(in_flight()) == 0  # a preview claims nothing
