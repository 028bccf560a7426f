"""The fleet API behind the OpsServer's limits, over real sockets, against the real database."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime, timedelta

import aiohttp
import asyncpg
import pytest
import pytest_asyncio
from prometheus_client import CollectorRegistry

from gxami_runtime.auth import Authenticator, PoolTokens
from gxami_runtime.http import HttpLimits, OpsServer
from gxami_scheduler.api import FleetApi
from gxami_scheduler.fleet import parse_fleet
from gxami_scheduler.registry import import_fleet
from gxami_scheduler.settings import SchedulerSettings
from gxcore.profiles import ProfileCatalog

from .conftest import T0

pytestmark = pytest.mark.integration

FLEET = """\
meter_id,protocol,address,profile,schedule
e1,dlms,tcp://10.0.0.1:4059,em-dlms,15m
"""
SHORT = 0.5
LIMITS = HttpLimits(
    header_timeout_s=SHORT, body_timeout_s=SHORT, max_body_bytes=512, write_rate_per_s=0.01, write_burst=10
)
TIMEOUT = aiohttp.ClientTimeout(total=10)
NOW = T0 + timedelta(hours=1)
LATER = NOW + timedelta(hours=1)


@dataclass
class Api:
    db: asyncpg.Connection
    registry: CollectorRegistry
    port: int
    headers: dict[str, str]  # an operator token

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def next_due(self) -> datetime:
        value = await self.db.fetchval("SELECT next_due_at FROM meter_schedule WHERE meter_id = 'e1'")
        assert isinstance(value, datetime)
        return value


@pytest_asyncio.fixture(loop_scope="function")
async def api(
    db: asyncpg.Connection, database_url: str, profiles: ProfileCatalog, tokens: dict[str, dict[str, str]]
) -> AsyncIterator[Api]:
    await import_fleet(db, parse_fleet("f.csv", FLEET, profiles), T0)
    await db.execute("UPDATE meter_schedule SET next_due_at = $1", LATER)
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
    registry = CollectorRegistry()
    ops = OpsServer("127.0.0.1", 0, registry=registry, limits=LIMITS, auth=Authenticator(PoolTokens(pool)))
    FleetApi(pool, lambda: NOW).install(ops.app)
    port = await ops.start()
    try:
        yield Api(db, registry, port, tokens["operator"])
    finally:
        await ops.stop()
        await pool.close()


async def test_nul_byte_in_a_query_is_400_json_and_no_traceback(api: Api, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    async with aiohttp.ClientSession(timeout=TIMEOUT, headers=api.headers) as http:
        for target in ("/meters?after=%00", "/meters?group=a%00b", "/meters/e%001"):
            async with http.get(api.base + target) as resp:
                assert resp.status == 400, target
                assert (await resp.json())["error"].startswith("NUL byte in the ")
    loud = [r for r in caplog.records if r.levelno >= logging.WARNING or r.exc_info]
    assert not loud, [r.getMessage() for r in loud]


async def test_a_read_request_with_a_partial_body_is_not_acted_on(api: Api) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", api.port)
    started = time.monotonic()
    try:
        writer.write(
            b"POST /meters/e1/read HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
            + f"Authorization: {api.headers['Authorization']}\r\n".encode()
            + b'Content-Length: 100\r\n\r\n{"a":     '  # 10 of 100 bytes, then a stall
        )
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(), 3)
    finally:
        writer.close()
        await asyncio.gather(writer.wait_closed(), return_exceptions=True)
    assert answer.startswith(b"HTTP/1.1 408 "), answer[:80]
    assert time.monotonic() - started < SHORT + 2.0
    assert await api.next_due() == LATER  # the meter was not made due


async def test_a_read_request_with_a_bad_body_is_refused_before_the_registry(api: Api) -> None:
    async with aiohttp.ClientSession(timeout=TIMEOUT, headers=api.headers) as http:
        for body, status, error in (
            (b"{not json", 400, "request body is not valid JSON at byte 1"),
            (b'{"meter": "e2"}', 400, "unknown field 'meter' in the request body"),
            (b" " * 513, 413, "request body larger than 512 bytes"),
        ):
            headers = {"Content-Type": "application/json"}
            async with http.post(f"{api.base}/meters/e1/read", data=body, headers=headers) as resp:
                assert (resp.status, await resp.json()) == (status, {"error": error})
    assert await api.next_due() == LATER
    async with (
        aiohttp.ClientSession(timeout=TIMEOUT, headers=api.headers) as http,
        http.post(f"{api.base}/meters/e1/read", json={}) as resp,
    ):
        assert resp.status == 202
    assert await api.next_due() == NOW


async def test_300_read_requests_in_2_s_are_rate_limited(api: Api) -> None:
    statuses: list[int] = []
    async with aiohttp.ClientSession(
        timeout=TIMEOUT, headers=api.headers, connector=aiohttp.TCPConnector(limit=20)
    ) as http:

        async def ask() -> None:
            async with http.post(f"{api.base}/meters/e1/read") as resp:
                statuses.append(resp.status)
                if resp.status == 429:
                    assert int(resp.headers["Retry-After"]) >= 1

        await asyncio.gather(*(ask() for _ in range(300)))  # the bucket earns 0.01 a second meanwhile
    assert statuses.count(202) == LIMITS.write_burst
    assert statuses.count(429) == 300 - LIMITS.write_burst
    assert api.registry.get_sample_value("gxami_http_refused_total", {"reason": "rate_limited"}) == 290


def test_the_scheduler_takes_its_limits_from_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GXAMI_HTTP_HEADER_TIMEOUT_S", "3")
    monkeypatch.setenv("GXAMI_HTTP_WRITE_BURST", "4")
    ops = OpsServer.from_settings(SchedulerSettings(), registry=CollectorRegistry())
    assert (ops.limits.header_timeout_s, ops.limits.write_burst) == (3.0, 4)
