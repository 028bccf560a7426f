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
from gxami_meterlab.simulators.dlms import DlmsFleetSimulator, meter_id
from gxami_runtime.auth import Authenticator, PoolTokens, Role, create_token
from gxami_runtime.http import OpsServer
from gxami_scheduler.firmware import FirmwareApi
from gxami_store import migrate
from gxcore.drivers import MeterTarget
from gxcore.drivers.api import DriverCommand
from gxcore.drivers.dlms.driver import DlmsDriver
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


@pytest_asyncio.fixture(loop_scope="function")
async def scheduler(database_url: str) -> AsyncIterator[Scheduler]:
    conn = await asyncpg.connect(database_url, timeout=10)
    try:
        await migrate(conn)
        admin = await create_token(conn, "fw-admin", Role.ADMIN, "pytest")
        viewer = await create_token(conn, "collector", Role.VIEWER, "pytest")
    finally:
        await conn.close()
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
    ops = OpsServer("127.0.0.1", 0, registry=CollectorRegistry(), auth=Authenticator(PoolTokens(pool)))
    FirmwareApi(pool, lambda: datetime.now(UTC)).install(ops.app)
    port = await ops.start()
    try:
        yield Scheduler(f"http://127.0.0.1:{port}", admin.token, viewer.token)
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
