"""A firmware image from upload to meter: the scheduler stores it, the collector fetches it by hash, the
DLMS driver transfers it to a simulated meter, which then runs it. Real PostgreSQL, real sockets."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import asyncpg
import pytest
import pytest_asyncio
from aiohttp import web
from prometheus_client import CollectorRegistry

from gxami_collector.firmware_images import FirmwareFetchError, FirmwareImages
from gxami_collector.settings import CollectorSettings
from gxami_contracts import CommandOutcome, CommandResult
from gxami_meterlab.dlms.image_transfer import FirmwareFaults
from gxami_meterlab.simulators.dlms import DlmsFleetSimulator, meter_id
from gxami_runtime.auth import Authenticator, PoolTokens, Role, create_token
from gxami_runtime.http import OpsServer
from gxami_scheduler.firmware import (
    FirmwareApi,
    advance_rollout,
    firmware_command_body,
    record_result,
    rollout_progress,
    wave_command_id,
)
from gxami_store import migrate
from gxcore.drivers import MeterTarget
from gxcore.drivers.api import DriverCommand
from gxcore.drivers.dlms.driver import DlmsDriver
from gxcore.errors import ProtocolError
from gxcore.profiles.model import BUILTIN_DIR, load_profile

pytestmark = pytest.mark.integration
IMAGE = hashlib.sha256(b"seed").digest() * 100  # 3200 bytes
DIGEST = hashlib.sha256(IMAGE).hexdigest()
TIMEOUT = aiohttp.ClientTimeout(total=10)


@dataclass
class Scheduler:
    base: str
    admin: str
    viewer: str
    operator: str
    dsn: str


@pytest_asyncio.fixture(loop_scope="function")
async def scheduler(database_url: str) -> AsyncIterator[Scheduler]:
    conn = await asyncpg.connect(database_url, timeout=10)
    try:
        await migrate(conn)
        admin = await create_token(conn, "fw-admin", Role.ADMIN, "pytest")
        viewer = await create_token(conn, "collector", Role.VIEWER, "pytest")
        operator = await create_token(conn, "fw-operator", Role.OPERATOR, "pytest")
    finally:
        await conn.close()
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
    ops = OpsServer("127.0.0.1", 0, registry=CollectorRegistry(), auth=Authenticator(PoolTokens(pool)))
    FirmwareApi(pool, lambda: datetime.now(UTC)).install(ops.app)
    port = await ops.start()
    try:
        yield Scheduler(f"http://127.0.0.1:{port}", admin.token, viewer.token, operator.token, database_url)
    finally:
        await ops.stop()
        await pool.close()


async def test_an_uploaded_image_reaches_the_meter_by_its_hash(scheduler: Scheduler, tmp_path: Path) -> None:
    async with (
        aiohttp.ClientSession(timeout=TIMEOUT) as http,
        http.post(
            f"{scheduler.base}/firmware/images",
            data=IMAGE,
            headers={"Authorization": f"Bearer {scheduler.admin}", "X-Firmware-Identification": "GXSIM-3.1.0"},
        ) as resp,
    ):
        assert resp.status == 201 and (await resp.json())["sha256"] == DIGEST
    token_file = tmp_path / "token"
    token_file.write_text(scheduler.viewer + "\n")
    settings = CollectorSettings(
        scheduler_api_url=scheduler.base, scheduler_api_token_file=token_file, firmware_cache_dir=tmp_path / "cache"
    )
    images = FirmwareImages.from_settings(settings)
    image = await images.get(DIGEST)
    assert image.data == IMAGE and image.identification == "GXSIM-3.1.0"
    assert (tmp_path / "cache" / f"{DIGEST}.bin").read_bytes() == IMAGE
    # A cache file that no longer hashes right is fetched again, not used.
    (tmp_path / "cache" / f"{DIGEST}.bin").write_bytes(b"tampered")
    assert (await images.get(DIGEST)).data == IMAGE
    # The driver gets the bytes and the identification; the meter ends up running the image.
    async with DlmsFleetSimulator(1, seed=11) as sim:
        meter = MeterTarget(meter_id(11, 0), f"tcp://127.0.0.1:{sim.meters[0].port}")
        command = DriverCommand(
            "firmware-update", body={"image": image.data, "identification": image.identification, "sha256": DIGEST}
        )
        profile = load_profile(Path(BUILTIN_DIR) / "generic-dlms.yaml")
        result = await DlmsDriver().execute(meter, profile, command, timeout=2)
        assert result.state == "activated" and sim.states[0].firmware.active == b"GXSIM-3.1.0"
    # Refusals: an unknown hash, a bad token (never echoed), no token at all.
    with pytest.raises(FirmwareFetchError, match="answered 404"):
        await images.get("ab" * 32)
    wrong = FirmwareImages(scheduler.base, "gxa_0000000000000000_" + "x" * 43, tmp_path / "other")
    with pytest.raises(FirmwareFetchError, match="answered 401") as refused:
        await wrong.get(DIGEST)
    assert "gxa_" not in str(refused.value)
    with pytest.raises(FirmwareFetchError, match="no scheduler API token"):
        FirmwareImages.from_settings(CollectorSettings(scheduler_api_url=scheduler.base))
    with pytest.raises(FirmwareFetchError, match="not a SHA-256"):
        await images.get("../../etc/passwd")


async def test_bytes_that_do_not_match_their_hash_are_refused_and_not_cached(tmp_path: Path) -> None:
    async def lying(request: web.Request) -> web.Response:
        return web.Response(body=b"not the image", headers={"X-Firmware-Identification": "X"})

    app = web.Application()
    app.router.add_get("/firmware/images/{sha256}", lying)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        images = FirmwareImages(f"http://127.0.0.1:{port}", "t", tmp_path / "cache", timeout_s=5)
        with pytest.raises(FirmwareFetchError, match="another SHA-256"):
            await images.get(DIGEST)
        assert not (tmp_path / "cache").exists()
        small = FirmwareImages(f"http://127.0.0.1:{port}", "t", tmp_path / "cache", timeout_s=5, max_bytes=4)
        with pytest.raises(FirmwareFetchError, match="larger than 4 bytes"):
            await small.get(DIGEST)
    finally:
        await runner.cleanup()


async def test_a_rollout_over_simulated_meters_halts_when_a_wave_fails_too_often(
    scheduler: Scheduler, tmp_path: Path
) -> None:
    """Waves of real driver executes against meters that fail image_verify half the time (seeded)."""
    faults = FirmwareFaults(verify_failure_rate=0.5)
    async with DlmsFleetSimulator(12, seed=12, firmware_faults=faults) as sim:
        conn = await asyncpg.connect(scheduler.dsn, timeout=10)
        try:
            for m in sim.meters:
                await conn.execute(
                    """INSERT INTO meters (meter_id, protocol, url, link_id, profile, meter_group, interval_s)
                       VALUES ($1, 'dlms', $2, $2, 'generic-dlms', 'pilot', 900)""",
                    m.meter_id,
                    f"tcp://127.0.0.1:{m.port}",
                )
            auth = {"Authorization": f"Bearer {scheduler.admin}"}
            async with aiohttp.ClientSession(timeout=TIMEOUT) as http:
                async with http.post(
                    f"{scheduler.base}/firmware/images?identification=GXSIM-4.0.0", data=IMAGE, headers=auth
                ) as resp:
                    assert resp.status == 201
                order = {"image": DIGEST, "group": "pilot", "waves": "10,50,100", "threshold": 0.2}
                async with http.post(
                    f"{scheduler.base}/firmware/rollouts",
                    json=order,
                    headers={"Authorization": f"Bearer {scheduler.operator}"},
                ) as resp:
                    assert resp.status == 201
                    rollout = (await resp.json())["id"]
            images = FirmwareImages(scheduler.base, scheduler.viewer, tmp_path / "cache")
            body = firmware_command_body(DIGEST, "GXSIM-4.0.0")
            profile = load_profile(Path(BUILTIN_DIR) / "generic-dlms.yaml")
            ports = {m.meter_id: m.port for m in sim.meters}
            index = {m.meter_id: m.index for m in sim.meters}
            touched: list[str] = []
            waves_run: list[list[str]] = []
            now = datetime.now(UTC)
            while (step := await advance_rollout(conn, rollout, now)).action == "start":
                waves_run.append(step.meters)
                for meter in step.meters:  # what the collector's executor does for each meter's command
                    touched.append(meter)
                    command = DriverCommand("firmware-update", body=await images.driver_body(body))
                    target = MeterTarget(meter, f"tcp://127.0.0.1:{ports[meter]}")
                    try:
                        done = await DlmsDriver().execute(target, profile, command, timeout=2)
                        result = CommandResult(
                            command_id=wave_command_id(rollout, step.wave),
                            meter_id=meter,
                            kind="firmware-update",
                            outcome=CommandOutcome.SUCCEEDED,
                            finished_at=now,
                            state=done.state,
                            data={r.quantity: int(r.value) for r in done.readings},
                        )
                    except ProtocolError as exc:
                        result = CommandResult(
                            command_id=wave_command_id(rollout, step.wave),
                            meter_id=meter,
                            kind="firmware-update",
                            outcome=CommandOutcome.FAILED,
                            finished_at=now,
                            error_message=str(exc)[:2000],
                        )
                    assert await record_result(conn, result, now)
            assert step.action == "halt", step
            progress = await rollout_progress(conn, rollout)
        finally:
            await conn.close()
    assert progress is not None and progress["state"] == "halted"
    states = {m["meter_id"]: m["state"] for m in progress["meters"]}
    halted = waves_run[-1]
    assert sum(states[m] == "failed" for m in halted) / len(halted) > 0.2
    # Every meter the rollout touched runs what the meter itself reports; the rest were never touched.
    for meter, state in states.items():
        firmware = sim.states[index[meter]].firmware
        if meter in touched:
            assert state in ("activated", "failed")
            assert (firmware.active == b"GXSIM-4.0.0") == (state == "activated")
            assert state != "failed" or ("verify", "failed") in firmware.log
        else:
            assert state == "pending" and not firmware.log
    assert len(touched) < len(states) == 12  # halted before the last wave
    assert "activated" in states.values()  # seed 12: the first wave has one success and one failure
    for row in progress["meters"]:
        if row["state"] == "activated":
            assert row["blocks_done"] == row["blocks_total"] == -(-len(IMAGE) // 96)
