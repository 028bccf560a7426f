"""The firmware image store and rollouts over HTTP, against the real database, with tokens and roles."""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import asyncpg
import pytest
import pytest_asyncio
import typer
from prometheus_client import CollectorRegistry
from typer.testing import CliRunner, Result

from gxami_runtime.auth import Authenticator, PoolTokens, Role, create_token
from gxami_runtime.http import OpsServer
from gxami_scheduler.firmware import FirmwareApi, advance_rollout, record_progress
from gxami_scheduler.firmware_cli import firmware_app, tariff_app
from gxami_scheduler.fleet import parse_fleet
from gxami_scheduler.registry import import_fleet
from gxcore.profiles import ProfileCatalog

from .conftest import T0

pytestmark = pytest.mark.integration
TIMEOUT = aiohttp.ClientTimeout(total=10)
IMAGE = bytes(range(256)) * 40
DIGEST = hashlib.sha256(IMAGE).hexdigest()
FLEET = "meter_id,protocol,address,profile,group,schedule\n" + "".join(
    f"f{i:02d},dlms,tcp://10.0.0.{i + 1}:4059,em-dlms,{'north' if i < 10 else 'south'},15m\n" for i in range(12)
)


@dataclass
class Api:
    db: asyncpg.Connection
    base: str
    headers: dict[str, dict[str, str]]  # role -> Authorization header


@pytest_asyncio.fixture(loop_scope="function")
async def api(db: asyncpg.Connection, database_url: str, profiles: ProfileCatalog) -> AsyncIterator[Api]:
    await import_fleet(db, parse_fleet("f.csv", FLEET, profiles), T0)
    headers = {}
    for role in Role:
        token = await create_token(db, f"fw-{role}", role, "pytest")
        headers[str(role)] = {"Authorization": f"Bearer {token.token}"}
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
    ops = OpsServer("127.0.0.1", 0, registry=CollectorRegistry(), auth=Authenticator(PoolTokens(pool)))
    FirmwareApi(pool, lambda: T0).install(ops.app)
    port = await ops.start()
    try:
        yield Api(db, f"http://127.0.0.1:{port}", headers)
    finally:
        await ops.stop()
        await pool.close()


async def test_images_are_stored_once_by_hash_and_fetched_by_it(api: Api) -> None:
    upload = f"{api.base}/firmware/images?identification=GXSIM-2.0.0"
    async with aiohttp.ClientSession(timeout=TIMEOUT) as http:
        # Authentication and roles first: nothing is stored without an admin token.
        async with http.post(upload, data=IMAGE) as resp:
            assert resp.status == 401 and "error" in await resp.json()
        for role in ("viewer", "operator"):
            async with http.post(upload, data=IMAGE, headers=api.headers[role]) as resp:
                assert resp.status == 403, role
        assert await api.db.fetchval("SELECT count(*) FROM firmware_images") == 0
        async with http.post(upload, data=IMAGE, headers=api.headers["admin"]) as resp:
            assert resp.status == 201
            assert await resp.json() == {
                "sha256": DIGEST,
                "size": len(IMAGE),
                "identification": "GXSIM-2.0.0",
                "created": True,
            }
        async with http.post(upload, data=IMAGE, headers=api.headers["admin"]) as resp:  # idempotent
            assert resp.status == 200 and (await resp.json())["created"] is False
        async with http.post(
            f"{api.base}/firmware/images?identification=OTHER", data=IMAGE, headers=api.headers["admin"]
        ) as resp:
            assert resp.status == 409 and "GXSIM-2.0.0" in (await resp.json())["error"]
        async with http.post(f"{api.base}/firmware/images", data=IMAGE, headers=api.headers["admin"]) as resp:
            assert resp.status == 400 and "identification" in (await resp.json())["error"]
        assert await api.db.fetchval("SELECT count(*) FROM firmware_images") == 1
        stored = await api.db.fetchrow("SELECT uploaded_by, size FROM firmware_images")
        assert stored is not None and stored["uploaded_by"] == "fw-admin" and stored["size"] == len(IMAGE)
        # Fetching needs a viewer token; the bytes come back as stored, named by their hash.
        async with http.get(f"{api.base}/firmware/images/{DIGEST}") as resp:
            assert resp.status == 401
        async with http.get(f"{api.base}/firmware/images/{DIGEST}", headers=api.headers["viewer"]) as resp:
            assert resp.status == 200
            assert await resp.read() == IMAGE
            assert resp.headers["X-Firmware-Identification"] == "GXSIM-2.0.0"
            assert resp.headers["X-Firmware-Sha256"] == DIGEST
        async with http.get(f"{api.base}/firmware/images/{'0' * 64}", headers=api.headers["viewer"]) as resp:
            assert resp.status == 404
        async with http.get(f"{api.base}/firmware/images/not-a-hash", headers=api.headers["viewer"]) as resp:
            assert resp.status == 400


async def test_a_rollout_runs_in_waves_shows_progress_and_halts(api: Api) -> None:
    async with aiohttp.ClientSession(timeout=TIMEOUT) as http:
        async with http.post(
            f"{api.base}/firmware/images?identification=GXSIM-2.0.0", data=IMAGE, headers=api.headers["admin"]
        ) as resp:
            assert resp.status == 201
        order = {"image": DIGEST, "group": "north", "waves": "10,50,100", "threshold": 0.3}
        async with http.post(f"{api.base}/firmware/rollouts", json=order, headers=api.headers["viewer"]) as resp:
            assert resp.status == 403
        async with http.post(
            f"{api.base}/firmware/rollouts", json={**order, "waves": "10,50"}, headers=api.headers["operator"]
        ) as resp:
            assert resp.status == 400 and "100" in (await resp.json())["error"]
        async with http.post(
            f"{api.base}/firmware/rollouts", json={**order, "image": "ab" * 32}, headers=api.headers["operator"]
        ) as resp:
            assert resp.status == 404
        async with http.post(f"{api.base}/firmware/rollouts", json=order, headers=api.headers["operator"]) as resp:
            assert resp.status == 201
            created = await resp.json()
        rollout = created["id"]
        assert created["state"] == "running" and created["group"] == "north"
        waves: dict[int, list[str]] = {}
        for m in created["meters"]:
            waves.setdefault(m["wave"], []).append(m["meter_id"])
        assert [len(waves[w]) for w in sorted(waves)] == [1, 4, 5]  # 10 % of 10, then up to 50 %, the rest
        assert {m["meter_id"] for m in created["meters"]} == {f"f{i:02d}" for i in range(10)}  # not "south"

        step = await advance_rollout(api.db, rollout, T0)
        assert step.action == "start" and step.meters == waves[0]
        assert (await advance_rollout(api.db, rollout, T0)).action == "wait"
        await record_progress(api.db, rollout, waves[0][0], "transferring", T0, blocks_done=3, blocks_total=11)
        async with http.get(f"{api.base}/firmware/rollouts/{rollout}", headers=api.headers["viewer"]) as resp:
            progress = await resp.json()
        first = next(m for m in progress["meters"] if m["meter_id"] == waves[0][0])
        assert (first["state"], first["blocks_done"], first["blocks_total"]) == ("transferring", 3, 11)
        await record_progress(api.db, rollout, waves[0][0], "activated", T0, blocks_done=11, blocks_total=11)
        step = await advance_rollout(api.db, rollout, T0)
        assert step.action == "start" and step.wave == 1 and sorted(step.meters) == sorted(waves[1])
        # Two of four fail: 50 % is above the 30 % threshold, and the rollout stops there.
        for pos, meter in enumerate(waves[1]):
            await record_progress(api.db, rollout, meter, "failed" if pos < 2 else "activated", T0, detail="x")
        step = await advance_rollout(api.db, rollout, T0)
        assert step.action == "halt" and step.failure_rate == 0.5
        async with http.get(f"{api.base}/firmware/rollouts/{rollout}", headers=api.headers["viewer"]) as resp:
            progress = await resp.json()
        assert progress["state"] == "halted" and "above the threshold" in progress["reason"]
        assert progress["summary"] == {"activated": 3, "failed": 2, "pending": 5}  # the last wave never started
        assert (await advance_rollout(api.db, rollout, T0)).action == "wait"  # a halted rollout stays halted
        async with http.get(f"{api.base}/firmware/rollouts/{rollout}") as resp:
            assert resp.status == 401
        async with http.get(f"{api.base}/firmware/rollouts/999999", headers=api.headers["viewer"]) as resp:
            assert resp.status == 404


async def test_the_cli_uploads_rolls_out_and_shows_progress(api: Api, tmp_path: Path) -> None:
    image = tmp_path / "meter.bin"
    image.write_bytes(IMAGE)
    runner = CliRunner()

    def run(app: typer.Typer, args: list[str], role: str | None) -> Result:
        token = api.headers[role]["Authorization"].removeprefix("Bearer ") if role else ""
        env = {"GXAMI_API_URL": api.base, "FW_TOKEN": token}
        return runner.invoke(app, [*args, "--token-env", "FW_TOKEN"], env=env)

    refused = await asyncio.to_thread(run, firmware_app, ["upload", str(image), "--identification", "V2"], "operator")
    assert refused.exit_code == 1 and "403" in refused.output
    missing = await asyncio.to_thread(run, firmware_app, ["upload", str(image), "--identification", "V2"], None)
    assert missing.exit_code == 2 and "FW_TOKEN" in missing.output
    uploaded = await asyncio.to_thread(run, firmware_app, ["upload", str(image), "--identification", "V2"], "admin")
    assert uploaded.exit_code == 0, uploaded.output
    assert json.loads(uploaded.stdout)["sha256"] == DIGEST
    bad = await asyncio.to_thread(
        run, firmware_app, ["rollout", DIGEST, "--group", "north", "--waves", "5,50"], "operator"
    )
    assert bad.exit_code == 2 and "100" in bad.output
    started = await asyncio.to_thread(run, firmware_app, ["rollout", DIGEST, "--group", "south"], "operator")
    assert started.exit_code == 0, started.output
    rollout = json.loads(started.stdout)
    assert {m["meter_id"] for m in rollout["meters"]} == {"f10", "f11"}
    shown = await asyncio.to_thread(run, firmware_app, ["status", str(rollout["id"])], "viewer")
    assert shown.exit_code == 0 and json.loads(shown.stdout)["summary"] == {"pending": 2}


def mounted(app: typer.Typer, name: str) -> typer.Typer:
    """The app as `gxami` mounts a plug-in: a group under its name (a one-command app stays a group)."""
    holder = typer.Typer()
    holder.add_typer(app, name=name)
    return holder


def test_tariff_check_prints_the_body_or_every_problem(tmp_path: Path) -> None:
    example = Path(__file__).resolve().parents[3] / "docs" / "examples" / "tariff-day-night.yaml"
    tariff = mounted(tariff_app, "tariff")
    ok = CliRunner().invoke(tariff, ["tariff", "check", str(example), "--body"])
    assert ok.exit_code == 0 and json.loads(ok.stdout)["name"] == "DAYNIGHT-2026"
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: X\nactivate_now: true\nseasons: []\nweeks: []\ndays: []\n")
    refused = CliRunner().invoke(tariff, ["tariff", "check", str(bad)])
    assert refused.exit_code == 2
    assert f"{bad}:3: seasons:" in refused.output and f"{bad}:5: days:" in refused.output
