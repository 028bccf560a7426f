"""Reports: the daily report from the database, on the terminal and over HTTP."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from datetime import UTC, datetime, timedelta

import aiohttp
import asyncpg
import pytest
import typer
from typer.testing import CliRunner

from gxami_reports.app import main
from gxami_reports.cli import report_app
from gxami_reports.settings import ReportsSettings
from gxami_runtime.auth import Role, create_token, revoke_token
from gxami_store import PartitionKeeper, migrate, storage_kind

pytestmark = pytest.mark.integration

# Mounted as `gxami report ...`, as the CLI does (a lone typer command would collapse the group).
gxami = typer.Typer()
gxami.add_typer(report_app, name="report")
DAY = datetime(2026, 10, 5, tzinfo=UTC)


async def _seed(dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await migrate(conn)
        keeper = PartitionKeeper()
        await keeper.load(conn, await storage_kind(conn))
        await keeper.ensure(conn, [DAY, DAY + timedelta(days=3)])
        await conn.execute(
            "INSERT INTO meters (meter_id, protocol, url, link_id, profile, interval_s)"
            " VALUES ('R1', 'dlms', 'tcp://x:1', 'l', 'generic-dlms', 900)"
        )
        # 1 kWh per 15 minutes for three days: 96 kWh per day
        rows = [("R1", "1-0:1.8.0", DAY + timedelta(minutes=15 * i), 1000.0 + i, "kWh") for i in range(3 * 96 + 1)]
        await conn.executemany(
            "INSERT INTO readings (meter_id, quantity, ts, value, unit) VALUES ($1,$2,$3,$4,$5)", rows
        )
    finally:
        await conn.close()


async def test_daily_report_on_the_terminal(database_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    await _seed(database_url)
    monkeypatch.setenv("GXAMI_DATABASE_URL", database_url)
    runner = CliRunner()
    result = await asyncio.to_thread(runner.invoke, gxami, ["report", "daily", "--json"])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.output.splitlines()]
    full = [r for r in rows if r["day"] in ("2026-10-06", "2026-10-07")]
    assert [r["kwh"] for r in full] == [96.0, 96.0]
    table = await asyncio.to_thread(
        runner.invoke, gxami, ["report", "daily", "--meter", "R1", "--from", "2026-10-06", "--to", "2026-10-06"]
    )
    assert table.exit_code == 0, table.output
    assert "96.000" in table.output
    assert "1 report rows" in table.output


async def test_daily_report_with_no_database_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GXAMI_DATABASE_URL", "postgresql://gx:pw@127.0.0.1:1/none")
    result = await asyncio.to_thread(CliRunner().invoke, gxami, ["report", "daily"])
    assert result.exit_code == 2
    assert "cannot read the database" in result.output


async def test_report_api_serves_json_and_refuses_bad_dates(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    await _seed(database_url)
    conn = await asyncpg.connect(database_url)
    try:
        viewer = await create_token(conn, "bi", Role.VIEWER, "pytest")
    finally:
        await conn.close()
    auth = {"Authorization": f"Bearer {viewer.token}"}
    stop = asyncio.Event()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    settings = ReportsSettings(database_url=database_url, http_port=port, http_auth_cache_s=0.5)
    task = asyncio.create_task(main(stop, settings))
    try:
        async with aiohttp.ClientSession() as anonymous:
            for _ in range(100):
                try:
                    async with anonymous.get(f"http://127.0.0.1:{port}/health") as r:
                        if r.status == 200:
                            break
                except aiohttp.ClientError:
                    await asyncio.sleep(0.05)
            for path in ("/reports/daily", "/reports/fleet"):
                async with anonymous.get(f"http://127.0.0.1:{port}{path}") as r:
                    assert r.status == 401, path
                    assert r.headers["WWW-Authenticate"] == 'Bearer realm="gxami"'
                    assert (await r.json())["error"].startswith("missing bearer token")
        async with aiohttp.ClientSession(headers=auth) as http:
            async with http.get(f"http://127.0.0.1:{port}/reports/daily?meter=R1&from=2026-10-06") as r:
                body = await r.json()
            assert r.status == 200
            assert body["unit"] == "kWh"
            assert {row["day"] for row in body["rows"]} >= {"2026-10-06", "2026-10-07"}
            async with http.get(f"http://127.0.0.1:{port}/reports/daily?from=yesterday") as r:
                assert r.status == 400
                assert await r.json() == {"error": "query parameter 'from' must be a date like 2026-11-26"}
            async with http.get(f"http://127.0.0.1:{port}/reports/daily?meter=R%001") as r:
                assert (r.status, await r.json()) == (400, {"error": "NUL byte in the query"})
            async with http.get(f"http://127.0.0.1:{port}/reports/fleet") as r:
                assert (await r.json())["meters"] == 1
            conn = await asyncpg.connect(database_url)
            try:
                assert await revoke_token(conn, "bi") == [viewer.id]
            finally:
                await conn.close()
            await asyncio.sleep(0.6)  # the cache time: then the revoked token is refused
            async with http.get(f"http://127.0.0.1:{port}/reports/fleet") as r:
                assert (r.status, await r.json()) == (401, {"error": "invalid or revoked token"})
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
    assert not [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
