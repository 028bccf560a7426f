"""The energy reports through the running reports service, on the session's database.

A fleet with a site tree (a main meter with two submeters on two floors, a gas meter, a second
building) is imported by the scheduler's own fleet import; readings are the DLMS simulator's
household registers (Wh, stored as kWh as the driver delivers them), written by ingest's writer,
with one interval dropped and estimated by ingest's VEE pass. The main meter reads the two
submeters plus a third household, so the unmetered residual is that household's consumption.
"""

from __future__ import annotations

import asyncio
import csv
import io
import socket
import xml.etree.ElementTree as ET
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
from PIL import Image

from gxami_ingest.vee import VeeSettings, run_vee
from gxami_ingest.writer import ReadingRow, write_readings
from gxami_meterlab.simulators.dlms import expected_register
from gxami_reports.app import main
from gxami_reports.settings import ReportsSettings
from gxami_runtime.auth import Role, create_token
from gxami_scheduler.fleet import parse_fleet
from gxami_scheduler.registry import import_fleet
from gxami_store import PartitionKeeper, migrate, storage_kind

pytestmark = pytest.mark.integration

SEED = 11
ENERGY = "1-0:1.8.0"
GAS = "7-0:3.0.0"
STEP = timedelta(minutes=15)
FLEET = """
meters:
  - {meter_id: MAIN, protocol: dlms, address: "tcp://127.0.0.1:4059", profile: generic-dlms, schedule: 15m,
     node: site-a/building-1}
  - {meter_id: SUB1, protocol: dlms, address: "tcp://127.0.0.1:4060", profile: generic-dlms, schedule: 15m,
     node: site-a/building-1/floor-1, submeter_of: MAIN}
  - {meter_id: SUB2, protocol: dlms, address: "tcp://127.0.0.1:4061", profile: generic-dlms, schedule: 15m,
     node: site-a/building-1/floor-2, submeter_of: MAIN}
  - {meter_id: GAS1, protocol: dlms, address: "tcp://127.0.0.1:4062", profile: generic-dlms, schedule: 1h,
     node: site-a/building-1}
  - {meter_id: OTHER, protocol: dlms, address: "tcp://127.0.0.1:4063", profile: generic-dlms, schedule: 15m,
     node: site-a/building-2}
"""
TOU = """
name: TOU2
activate_now: true
seasons: [{name: year, start: "01-01", week: standard}]
weeks:
  - {name: standard, monday: d, tuesday: d, wednesday: d, thursday: d, friday: d, saturday: d, sunday: d}
days:
  - name: d
    id: 1
    switches: [{at: "00:00", tariff: 2}, {at: "07:00", tariff: 1}, {at: "23:00", tariff: 2}]
"""
# The meters' households in the simulator; MAIN reads its submeters' households and household 0.
HOUSEHOLD = {"SUB1": 1, "SUB2": 2, "OTHER": 3, "REST": 0}


def wh(meter: str, at: datetime) -> int:
    """The simulated import register (Wh) of a meter at an instant."""
    if meter == "MAIN":
        return sum(wh(m, at) for m in ("SUB1", "SUB2", "REST"))
    value = expected_register(SEED, HOUSEHOLD[meter], ENERGY, at)
    assert isinstance(value, int | Decimal)
    return int(value)


def kwh(meter: str, start: datetime, end: datetime) -> float:
    """Energy over (start, end] in kWh at 1 Wh resolution: what every report must show."""
    return round((wh(meter, end) - wh(meter, start)) / 1000, 3)


def gas_m3(at: datetime) -> float:
    """A gas register growing 0.25 m3 per hour (a known, simple profile)."""
    return 1000 + 0.25 * (at - datetime(2020, 1, 1, tzinfo=UTC)).total_seconds() / 3600


def grid(start: datetime, end: datetime, step: timedelta) -> list[datetime]:
    out, t = [], start
    while t <= end:
        out.append(t)
        t += step
    return out


def midnight(d: date) -> datetime:
    return datetime(d.year, d.month, d.day, tzinfo=UTC)


async def _seed(dsn: str, first: date, dropped: datetime) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await migrate(conn)
        meters = parse_fleet("fleet.yaml", FLEET)
        await import_fleet(conn, meters, datetime.now(UTC))
        keeper = PartitionKeeper()
        await keeper.load(conn, await storage_kind(conn))
        # The period and the days before it, and the same days a year earlier: written apart, so
        # that only their days get partitions (not every day of the year between).
        ly = midnight(first.replace(year=first.year - 1))
        spans = [
            (midnight(first) - timedelta(days=3), midnight(first) + timedelta(days=3)),
            (ly - timedelta(days=1), ly + timedelta(days=3)),
        ]
        for start, end in spans:
            rows: list[ReadingRow] = []
            for t in grid(start, end, STEP):
                for m in ("MAIN", "SUB1", "SUB2", "OTHER"):
                    if not (m == "SUB1" and t == dropped):
                        rows.append((m, ENERGY, t, wh(m, t) / 1000, "kWh", 0, "job-1"))
            for t in grid(start, end, timedelta(hours=1)):
                rows.append(("GAS1", GAS, t, gas_m3(t), "m3", 0, "job-1"))
            await write_readings(conn, rows, keeper)
        await run_vee(conn, settings=VeeSettings(), since=datetime.now(UTC) - timedelta(hours=1))
        estimate = await conn.fetchrow(
            "SELECT value, vee_flags, job_id FROM readings WHERE meter_id = 'SUB1' AND ts = $1", dropped
        )
        assert estimate is not None and estimate["job_id"] == "vee:estimate" and estimate["vee_flags"] & 1
    finally:
        await conn.close()


def _csv_rows(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def _as_csv_cells(rows: list[dict[str, Any]]) -> list[dict[str, str]]:
    def cell(v: Any) -> str:
        return "" if v is None else ("true" if v is True else "false" if v is False else str(v))

    return [{k: cell(v) for k, v in r.items()} for r in rows]


async def test_energy_reports_through_the_reports_service(database_url: str, tmp_path: Path) -> None:
    first = (datetime.now(UTC) - timedelta(days=10)).date()
    last = first + timedelta(days=1)
    start, end = midnight(first), midnight(last + timedelta(days=1))
    dropped = start + timedelta(hours=3, minutes=15)
    await _seed(database_url, first, dropped)
    conn = await asyncpg.connect(database_url)
    try:
        viewer = await create_token(conn, "web", Role.VIEWER, "pytest")
    finally:
        await conn.close()
    tou_file = tmp_path / "tou.yaml"
    tou_file.write_text(TOU)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    base = f"http://127.0.0.1:{port}"
    settings = ReportsSettings(database_url=database_url, http_port=port, tou_calendar=tou_file)
    stop = asyncio.Event()
    task = asyncio.create_task(main(stop, settings))
    span = f"from={first}&to={last}"
    try:
        async with aiohttp.ClientSession() as anonymous:
            for _ in range(200):
                try:
                    async with anonymous.get(f"{base}/health") as r:
                        if r.status == 200:
                            break
                except aiohttp.ClientError:
                    await asyncio.sleep(0.05)
            for path in (
                f"/reports/consumption?node=site-a&{span}",
                f"/reports/load-curve?meter=SUB1&{span}",
                f"/reports/load-curve.png?meter=SUB1&{span}",
                f"/reports/top?{span}",
            ):
                async with anonymous.get(base + path) as r:
                    assert r.status == 401, path
        async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {viewer.token}"}) as http:

            async def get_json(path: str) -> dict[str, Any]:
                async with http.get(base + path) as r:
                    assert r.status == 200, (path, await r.text())
                    body: dict[str, Any] = await r.json()
                    return body

            async def get_csv(path: str, *, header: bool) -> list[dict[str, str]]:
                if header:
                    async with http.get(base + path, headers={"Accept": "text/csv"}) as r:
                        assert r.status == 200 and r.content_type == "text/csv", path
                        return _csv_rows(await r.text())
                sep = "&" if "?" in path else "?"
                async with http.get(f"{base}{path}{sep}format=csv") as r:
                    assert r.status == 200 and r.content_type == "text/csv", path
                    return _csv_rows(await r.text())

            # Consumption by node over the two days, against the two days before and last year's.
            prev_start = start - timedelta(days=2)
            ly_start = midnight(first.replace(year=first.year - 1))
            ly_end = ly_start + (end - start)
            path = f"/reports/consumption?node=site-a&{span}"
            body = await get_json(path)
            lines = {(r["node"], r["line"], r["medium"]): r for r in body["rows"]}
            expect = {
                "site-a": kwh("MAIN", start, end) + kwh("OTHER", start, end),
                "site-a/building-1": kwh("MAIN", start, end),
                "site-a/building-1/floor-1": kwh("SUB1", start, end),
                "site-a/building-1/floor-2": kwh("SUB2", start, end),
                "site-a/building-2": kwh("OTHER", start, end),
            }
            for node, value in expect.items():
                row = lines[(node, "node", "electricity")]
                assert row["value"] == pytest.approx(value, abs=0.0015), node
                assert row["unit"] == "kWh"
            # The residual: the main meter less its submeters, i.e. household 0.
            residual = lines[("site-a/building-1", "residual", "electricity")]
            assert residual["meter_id"] == "MAIN"
            assert residual["value"] == kwh("REST", start, end)
            assert residual["previous"] == kwh("REST", prev_start, start)
            assert residual["last_year"] == kwh("REST", ly_start, ly_end)
            b2 = lines[("site-a/building-2", "node", "electricity")]
            assert b2["value"] == kwh("OTHER", start, end)
            assert b2["previous"] == kwh("OTHER", prev_start, start)
            assert b2["last_year"] == kwh("OTHER", ly_start, ly_end)
            # Floor 1's estimate lies inside the period: the register difference between two
            # measured readings stands, so the total is not estimated (the load curve shows it).
            assert lines[("site-a/building-1/floor-1", "node", "electricity")]["estimated"] is False
            # Gas stays apart, in m3: 48 hours at 0.25 m3/h.
            gas = lines[("site-a/building-1", "node", "gas")]
            assert (gas["unit"], gas["value"]) == ("m3", 12.0)
            assert lines[("site-a", "node", "gas")]["value"] == 12.0
            assert ("site-a", "node", "heat") not in lines
            # Rounded to the unit's resolution: at most three decimals.
            assert all(r["value"] is None or round(r["value"], 3) == r["value"] for r in body["rows"])
            assert await get_csv(path, header=True) == _as_csv_cells(body["rows"])
            assert await get_csv(path, header=False) == _as_csv_cells(body["rows"])

            # The same per day: each day's row against the day before and the same day last year.
            daily = await get_json(f"/reports/consumption?node=site-a/building-2&{span}&by=day")
            days = [r for r in daily["rows"] if r["medium"] == "electricity"]
            assert [r["bucket"] for r in days] == [first.isoformat(), last.isoformat()]
            d1 = midnight(last)
            assert days[1]["value"] == kwh("OTHER", d1, end)
            assert days[1]["previous"] == kwh("OTHER", start, d1)
            assert days[1]["last_year"] == kwh("OTHER", ly_start + timedelta(days=1), ly_end)

            # The load curve of a meter: one row per interval, the estimate told apart.
            curve = await get_json(f"/reports/load-curve?meter=SUB1&{span}")
            assert len(curve["rows"]) == 2 * 96
            flagged = [r["interval_end"] for r in curve["rows"] if r["estimated"]]
            assert flagged == [dropped.isoformat(), (dropped + STEP).isoformat()]
            for r in curve["rows"]:
                t1 = datetime.fromisoformat(r["interval_end"])
                if not r["estimated"]:
                    assert r["value"] == kwh("SUB1", t1 - STEP, t1), r
                    assert r["kw"] == pytest.approx(r["value"] * 4, abs=0.001)
            # Estimated or not, the curve adds up to the meter's consumption.
            assert sum(r["value"] for r in curve["rows"]) == pytest.approx(kwh("SUB1", start, end), abs=0.002)
            assert await get_csv(f"/reports/load-curve?meter=SUB1&{span}", header=True) == _as_csv_cells(curve["rows"])
            # A node's curve: the building's counted meter is MAIN (its submeters are inside it).
            node_curve = await get_json(f"/reports/load-curve?node=site-a/building-1&{span}")
            assert [r["value"] for r in node_curve["rows"]] == [
                kwh("MAIN", datetime.fromisoformat(r["interval_end"]) - STEP, datetime.fromisoformat(r["interval_end"]))
                for r in node_curve["rows"]
            ]

            # Base load (night minimum, 00-05) and peak demand of OTHER, from its intervals.
            powers = [(t - STEP, kwh("OTHER", t - STEP, t) * 4) for t in grid(start + STEP, end, STEP)]
            night = [p for p in powers if p[0].hour < 5]
            demand = (await get_json(f"/reports/demand?meter=OTHER&{span}"))["rows"][0]
            low = min(night, key=lambda p: p[1])
            high = max(powers, key=lambda p: p[1])
            assert demand["base_load"] == pytest.approx(low[1], abs=0.001)
            assert demand["peak"] == pytest.approx(high[1], abs=0.001)
            assert demand["peak_at"] == high[0].isoformat()
            assert demand["unit"] == "kW" and demand["intervals"] == 2 * 96
            assert await get_csv(f"/reports/demand?meter=OTHER&{span}", header=False) == _as_csv_cells([demand])

            # Time of use: tariff 1 from 07:00 to 23:00, tariff 2 at night.
            tou = await get_json(f"/reports/tou?meter=OTHER&{span}")
            by_tariff = {r["tariff"]: r for r in tou["rows"]}
            day_kwh = sum(kwh("OTHER", t - STEP, t) for t in grid(start + STEP, end, STEP) if 7 <= (t - STEP).hour < 23)
            assert by_tariff[1]["value"] == pytest.approx(day_kwh, abs=0.002)
            assert by_tariff[1]["value"] + by_tariff[2]["value"] == pytest.approx(kwh("OTHER", start, end), abs=0.002)
            assert (by_tariff[1]["intervals"], by_tariff[2]["intervals"]) == (2 * 64, 2 * 32)

            # Top consumers: MAIN first (it holds three households), in order of consumption.
            top = await get_json(f"/reports/top?{span}&n=3")
            values = {m: kwh(m, start, end) for m in ("MAIN", "SUB1", "SUB2", "OTHER")}
            ranked = sorted(values, key=lambda m: -values[m])[:3]
            assert [r["meter_id"] for r in top["rows"]] == ranked
            assert [r["rank"] for r in top["rows"]] == [1, 2, 3]
            assert await get_csv(f"/reports/top?{span}&n=3", header=True) == _as_csv_cells(top["rows"])

            # Completeness: SUB1 lost one interval, which VEE estimated.
            comp = await get_json(f"/reports/completeness?node=site-a/building-1&{span}")
            sub1 = next(r for r in comp["rows"] if r["meter_id"] == "SUB1")
            assert (sub1["expected"], sub1["received"], sub1["estimated"], sub1["missing"]) == (192, 191, 1, 0)
            main_row = next(r for r in comp["rows"] if r["meter_id"] == "MAIN" and r["quantity"] == ENERGY)
            assert main_row["completeness"] == 1.0
            assert {r["meter_id"] for r in comp["rows"]} == {"MAIN", "SUB1", "SUB2", "GAS1"}

            # Charts: valid images of the asked size, from the same report.
            for chart in (f"/reports/load-curve.png?meter=SUB1&{span}", f"/reports/consumption.png?node=site-a&{span}"):
                async with http.get(f"{base}{chart}&width=640&height=320") as r:
                    assert r.status == 200 and r.content_type == "image/png", chart
                    png = await r.read()
                assert png.startswith(b"\x89PNG\r\n\x1a\n")
                with Image.open(io.BytesIO(png)) as img:
                    img.load()
                    assert img.size == (640, 320)
                    assert img.getextrema() != ((255, 255), (255, 255), (255, 255), (255, 255))  # not blank
            for chart in (
                f"/reports/load-curve.svg?node=site-a&{span}",
                f"/reports/consumption.svg?node=site-a&{span}",
            ):
                async with http.get(f"{base}{chart}&width=500&height=250") as r:
                    assert r.status == 200 and r.content_type == "image/svg+xml", chart
                    root = ET.fromstring(await r.read())
                assert root.tag == "{http://www.w3.org/2000/svg}svg"
                assert (root.get("width"), root.get("height")) == ("500", "250")
                assert len(list(root.iter("{http://www.w3.org/2000/svg}path"))) > 10

            # Bad input: a clear 400 naming the parameter.
            for bad, message in (
                (f"/reports/consumption?node=nowhere&{span}", "unknown node 'nowhere'"),
                (f"/reports/load-curve?{span}", "give exactly one of 'meter' and 'node'"),
                (f"/reports/load-curve?meter=SUB1&from={last}&to={first}", "is before 'from'"),
                (f"/reports/load-curve?meter=SUB1&{span}&medium=steam", "medium must be one of"),
                (f"/reports/load-curve.png?meter=SUB1&{span}&width=5", "'width' must be between"),
                (f"/reports/consumption?node=site-a&{span}&by=week", "'by' must be one of"),
            ):
                async with http.get(base + bad) as r:
                    assert r.status == 400, bad
                    assert message in (await r.json())["error"], bad
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
