"""The OpsServer's limits over real sockets: malformed, slow, partial, too large and too many requests."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry

from gxami_runtime.auth import public
from gxami_runtime.http import HttpLimits, OpsServer, read_json_object, target_problem
from gxami_runtime.ratelimit import TokenBuckets
from gxami_runtime.settings import ServiceSettings

SHORT = 0.5  # every timeout in these tests; a test waits at most a few times this
LIMITS = HttpLimits(
    header_timeout_s=SHORT,
    body_timeout_s=SHORT,
    keepalive_timeout_s=5.0,
    max_body_bytes=1024,
    write_rate_per_s=0.01,  # no refill worth a token within a test
    write_burst=5,
)
TIMEOUT = aiohttp.ClientTimeout(total=10)


class Site:
    """A running OpsServer with one write route that records what it was asked to do."""

    def __init__(self, ops: OpsServer, registry: CollectorRegistry) -> None:
        self.ops = ops
        self.registry = registry
        self.actions: list[dict[str, Any]] = []
        assert ops.port is not None
        self.port = ops.port
        self.base = f"http://127.0.0.1:{ops.port}"

    def refused(self, reason: str) -> float:
        value = self.registry.get_sample_value("gxami_http_refused_total", {"reason": reason})
        return value or 0.0

    async def raw(self, data: bytes, *, wait: float = 3.0) -> tuple[bytes, float]:
        """Send ``data`` on a fresh connection; return all the server sent until it closed, and how long that took."""
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        started = time.monotonic()
        try:
            writer.write(data)
            await writer.drain()
            answer = await asyncio.wait_for(reader.read(), wait)
            return answer, time.monotonic() - started
        finally:
            writer.close()
            await writer.wait_closed()


async def _start(limits: HttpLimits) -> tuple[OpsServer, CollectorRegistry, list[dict[str, Any]]]:
    registry = CollectorRegistry()
    ops = OpsServer("127.0.0.1", 0, registry=registry, limits=limits)
    actions: list[dict[str, Any]] = []

    async def act(request: web.Request) -> web.Response:
        body = await read_json_object(request, allowed=frozenset({"note"}))
        actions.append(body)
        return web.json_response({"done": True}, status=202)

    async def echo(request: web.Request) -> web.Response:
        return web.json_response({"query": dict(request.query)})

    async def boom(_: web.Request) -> web.Response:
        raise RuntimeError("a bug in a handler")

    # Open routes: these tests are about the limits every route gets; test_auth.py covers tokens.
    ops.app.router.add_post("/act", public(act))
    ops.app.router.add_get("/echo", public(echo))
    ops.app.router.add_get("/boom", public(boom))
    await ops.start()
    return ops, registry, actions


@pytest.fixture
async def site() -> AsyncIterator[Site]:
    ops, registry, actions = await _start(LIMITS)
    s = Site(ops, registry)
    s.actions = actions
    try:
        yield s
    finally:
        await ops.stop()


def _status_and_body(answer: bytes) -> tuple[int, dict[str, Any]]:
    head, _, body = answer.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    assert b"application/json" in head, head
    parsed = json.loads(body)
    assert isinstance(parsed, dict)
    return status, parsed


def _no_tracebacks(caplog: pytest.LogCaptureFixture) -> None:
    loud = [r for r in caplog.records if r.levelno >= logging.WARNING or r.exc_info]
    assert not loud, [(r.name, r.levelname, r.getMessage()) for r in loud]


async def test_nul_byte_in_query_is_a_json_400_logged_at_info(site: Site, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    raw, _ = await site.raw(b"GET /echo?x=\x00 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
    assert _status_and_body(raw)[0] == 400
    async with aiohttp.ClientSession(timeout=TIMEOUT) as http, http.get(f"{site.base}/echo?meter=%00") as resp:
        assert resp.status == 400
        assert await resp.json() == {"error": "NUL byte in the query"}
    _no_tracebacks(caplog)
    infos = [r for r in caplog.records if r.levelno == logging.INFO and "refused" in r.getMessage()]
    assert len(infos) == 2  # one line per refused request
    assert site.refused("malformed") == 1
    assert site.refused("bad_target") == 1


@pytest.mark.parametrize(
    ("request_bytes", "reason"),
    [
        (b"GARBAGE\r\n\r\n", "method"),
        (b"GET /echo HTTP/1.1\r\nHost: t\r\nBearer aaaa-token\r\n\r\n", None),
        (
            b"GET /echo HTTP/1.1\r\nHost: t\r\n" + b"".join(b"X-%d: 1\r\n" % i for i in range(200)) + b"\r\n",
            "Too many headers",
        ),
        (b"POST /act HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}", "duplicate"),
        (b"GET /echo HTTP/1.1\r\nHost: t\r\nX-Big: " + b"a" * 9000 + b"\r\n\r\n", "line is too long"),
        (b"GET /echo?x=%zz HTTP/1.1\r\nHost: t\r\n\r\n", "bad percent-encoding in the query"),
        (b"GET /echo%2 HTTP/1.1\r\nHost: t\r\n\r\n", "bad percent-encoding in the path"),
        (b"GET /echo?x=%ff HTTP/1.1\r\nHost: t\r\n\r\n", "the query is not UTF-8 once percent-decoded"),
        (b"GET /ec%00ho HTTP/1.1\r\nHost: t\r\n\r\n", "NUL byte in the path"),
        (b"GET /echo?x=%07 HTTP/1.1\r\nHost: t\r\n\r\n", "control character in the query"),
        (b"POST /act HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\n{x}", "request body is not valid JSON at byte 1"),
        (b"POST /act HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\r\n[]", "request body must be a JSON object"),
        (
            b'POST /act HTTP/1.1\r\nHost: t\r\nContent-Length: 8\r\n\r\n{"a": 1}',
            "unknown field 'a' in the request body",
        ),
        (b"POST /act HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", None),
    ],
)
async def test_malformed_requests_get_a_json_4xx_and_one_info_line(
    site: Site, caplog: pytest.LogCaptureFixture, request_bytes: bytes, reason: str | None
) -> None:
    caplog.set_level(logging.DEBUG)
    raw, _ = await site.raw(request_bytes.replace(b"Host: t\r\n", b"Host: t\r\nConnection: close\r\n"))
    status, body = _status_and_body(raw)
    assert 400 <= status < 500
    if reason is not None:  # the words differ between aiohttp's C and Python parsers
        assert reason.lower() in body["error"].lower()
    assert "aaaa" not in body["error"]  # the request's own bytes are never echoed (they may hold a token)
    assert not [r for r in caplog.records if "aaaa" in r.getMessage()]
    _no_tracebacks(caplog)
    assert site.actions == []


async def test_unknown_routes_and_methods_answer_json(site: Site) -> None:
    async with aiohttp.ClientSession(timeout=TIMEOUT) as http:
        async with http.get(f"{site.base}/nowhere") as resp:
            assert (resp.status, await resp.json()) == (404, {"error": "Not Found"})
        async with http.put(f"{site.base}/echo") as resp:
            assert resp.status == 405
            assert resp.headers["Allow"] == "GET,HEAD"
            assert (await resp.json())["error"] == "Method Not Allowed"


async def test_a_failing_handler_is_a_json_500_logged_once(site: Site, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    async with aiohttp.ClientSession(timeout=TIMEOUT) as http, http.get(f"{site.base}/boom") as resp:
        assert (resp.status, await resp.json()) == (500, {"error": "internal error"})
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1
    assert errors[0].exc_info is not None  # a bug: the traceback is wanted
    assert site.registry.get_sample_value("gxami_http_handler_errors_total") == 1


async def test_slow_headers_are_answered_408_and_closed_within_the_timeout(site: Site) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", site.port)
    started = time.monotonic()
    answer = b""
    closed = False
    try:
        writer.write(b"GET /echo HTTP/1.1\r\nHost: t\r\n")
        for _ in range(40):  # a header byte every 0.1 s, never a complete head: 4 s if nobody stops it
            try:
                writer.write(b"X")
                await writer.drain()
                chunk = await asyncio.wait_for(reader.read(4096), 0.1)
            except TimeoutError:
                continue
            except ConnectionError:
                closed = True
                break
            answer += chunk
            if not chunk:
                closed = True
                break
    finally:
        writer.close()
        await asyncio.gather(writer.wait_closed(), return_exceptions=True)
    elapsed = time.monotonic() - started
    assert closed, "the server closed the slow connection"
    assert elapsed < SHORT + 2.0
    assert _status_and_body(answer)[0] == 408
    assert site.refused("header_timeout") == 1


async def _closed_after(site: Site, data: bytes, wait: float = 3.0) -> tuple[bytes, float]:
    reader, writer = await asyncio.open_connection("127.0.0.1", site.port)
    started = time.monotonic()
    try:
        if data:
            writer.write(data)
            await writer.drain()
        answer = await asyncio.wait_for(reader.read(), wait)
        return answer, time.monotonic() - started
    finally:
        writer.close()
        await asyncio.gather(writer.wait_closed(), return_exceptions=True)


async def test_a_silent_connection_is_closed_within_the_header_timeout(site: Site) -> None:
    answer, elapsed = await _closed_after(site, b"")
    assert answer == b""  # nothing was asked, so nothing is answered
    assert elapsed < SHORT + 2.0


async def test_a_head_trickled_on_a_kept_alive_connection_is_timed_out(site: Site) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", site.port)
    try:
        writer.write(b"GET /health HTTP/1.1\r\nHost: t\r\n\r\n")
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 3)
        assert head.startswith(b"HTTP/1.1 200")
        length = int(
            next(line for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")).split(b":")[1]
        )
        await asyncio.wait_for(reader.readexactly(length), 3)
        started = time.monotonic()
        writer.write(b"GET /health HTTP/1.1\r\n")  # the second head, never finished
        await writer.drain()
        rest = await asyncio.wait_for(reader.read(), 3)
        assert time.monotonic() - started < SHORT + 2.0
        assert _status_and_body(rest)[0] == 408
    finally:
        writer.close()
        await asyncio.gather(writer.wait_closed(), return_exceptions=True)


async def test_idle_keep_alive_is_bounded() -> None:
    ops, _, _ = await _start(
        HttpLimits(header_timeout_s=5, body_timeout_s=5, keepalive_timeout_s=SHORT, write_rate_per_s=1, write_burst=1)
    )
    try:
        assert ops.port is not None
        reader, writer = await asyncio.open_connection("127.0.0.1", ops.port)
        try:
            writer.write(b"GET /health HTTP/1.1\r\nHost: t\r\n\r\n")
            await writer.drain()
            started = time.monotonic()
            answer = await asyncio.wait_for(reader.read(), 4)
            assert answer.startswith(b"HTTP/1.1 200")
            assert time.monotonic() - started < SHORT + 2.0
        finally:
            writer.close()
            await asyncio.gather(writer.wait_closed(), return_exceptions=True)
    finally:
        await ops.stop()


async def test_a_partial_body_gets_408_and_nothing_is_done(site: Site) -> None:
    head = b"POST /act HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n"
    reader, writer = await asyncio.open_connection("127.0.0.1", site.port)
    started = time.monotonic()
    try:
        writer.write(head + b'{"note": "')  # 10 of the 100 bytes, then a stall
        await writer.drain()
        answer = await asyncio.wait_for(reader.readuntil(b"}"), 3)
        elapsed = time.monotonic() - started
    finally:
        writer.close()
        await asyncio.gather(writer.wait_closed(), return_exceptions=True)
    status, body = _status_and_body(answer)
    assert status == 408
    assert body == {"error": "request body not complete within 0.5 s"}
    assert SHORT - 0.1 < elapsed < SHORT + 2.0
    assert site.actions == []
    assert site.refused("body_timeout") == 1


async def test_a_client_gone_mid_body_is_not_an_error(site: Site, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    _, writer = await asyncio.open_connection("127.0.0.1", site.port)
    writer.write(b"POST /act HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\n{")
    await writer.drain()
    await asyncio.sleep(0.1)  # the handler is waiting for the rest of the body
    writer.close()
    await asyncio.gather(writer.wait_closed(), return_exceptions=True)
    for _ in range(100):  # until the server has noticed
        if site.refused("client_gone"):
            break
        await asyncio.sleep(0.02)
    assert site.refused("client_gone") == 1
    assert site.actions == []
    _no_tracebacks(caplog)


async def test_a_complete_body_is_acted_on(site: Site) -> None:
    async with (
        aiohttp.ClientSession(timeout=TIMEOUT) as http,
        http.post(f"{site.base}/act", json={"note": "x" * 500}) as resp,
    ):
        assert resp.status == 202
    assert site.actions == [{"note": "x" * 500}]


async def test_a_body_over_the_limit_gets_413(site: Site) -> None:
    async with aiohttp.ClientSession(timeout=TIMEOUT) as http:
        async with http.post(f"{site.base}/act", data=b"x" * 1025) as resp:
            assert resp.status == 413
            assert await resp.json() == {"error": "request body larger than 1024 bytes"}

        async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: found while reading
            for _ in range(5):
                yield b" " * 400

        async with http.post(f"{site.base}/act", data=chunks()) as resp:
            assert resp.status == 413
    assert site.actions == []
    assert site.refused("body_too_large") == 2


async def test_writes_are_rate_limited_per_client(site: Site) -> None:
    statuses: list[int] = []
    retry_after: set[str] = set()
    async with aiohttp.ClientSession(timeout=TIMEOUT, connector=aiohttp.TCPConnector(limit=20)) as http:

        async def post() -> None:
            async with http.post(f"{site.base}/act", json={}) as resp:
                statuses.append(resp.status)
                if resp.status == 429:
                    assert (await resp.json())["error"] == "too many write requests"
                    retry_after.add(resp.headers["Retry-After"])

        # 300 writes as fast as one client can (the defect report had them in 2 s); at 0.01 tokens
        # a second the bucket earns nothing meanwhile, so exactly the burst gets through.
        await asyncio.gather(*(post() for _ in range(300)))
        async with http.get(f"{site.base}/echo") as resp:
            assert resp.status == 200  # reads are not limited
    assert statuses.count(202) == LIMITS.write_burst
    assert statuses.count(429) == 300 - LIMITS.write_burst
    assert len(site.actions) == LIMITS.write_burst
    assert all(int(v) >= 1 for v in retry_after)
    assert site.refused("rate_limited") == 300 - LIMITS.write_burst


async def test_rate_limit_key_is_a_function() -> None:
    registry = CollectorRegistry()
    ops = OpsServer(
        "127.0.0.1",
        0,
        registry=registry,
        limits=HttpLimits(write_rate_per_s=0.01, write_burst=1),
        client_key=lambda request: request.headers.get("X-Principal", "anonymous"),
    )

    async def write(_: web.Request) -> web.Response:
        return web.json_response({}, status=201)

    ops.app.router.add_post("/w", public(write))
    port = await ops.start()
    try:
        async with aiohttp.ClientSession(timeout=TIMEOUT) as http:
            got = []
            for who in ("alice", "bob", "alice", "bob", "carol"):
                async with http.post(f"http://127.0.0.1:{port}/w", headers={"X-Principal": who}) as resp:
                    got.append(resp.status)
        assert got == [201, 201, 429, 429, 201]
    finally:
        await ops.stop()


def test_token_buckets_refill_and_say_when() -> None:
    now = [100.0]
    buckets = TokenBuckets(rate=2.0, burst=3, clock=lambda: now[0])
    assert [buckets.take("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert buckets.take("a") == pytest.approx(0.5)
    assert buckets.take("b") == 0.0  # another client has its own bucket
    now[0] += 0.5
    assert buckets.take("a") == 0.0
    assert buckets.take("a") == pytest.approx(0.5)
    now[0] += 60
    assert [buckets.take("a") for _ in range(4)][:3] == [0.0, 0.0, 0.0]  # refilled, but never above the burst


def test_token_buckets_are_bounded() -> None:
    now = [0.0]
    buckets = TokenBuckets(rate=1.0, burst=2, max_keys=100, clock=lambda: now[0])
    for i in range(1000):
        buckets.take(f"client-{i}")
        now[0] += 0.001
    assert len(buckets) <= 100
    for bad in ({"rate": 0.0, "burst": 1}, {"rate": float("inf"), "burst": 1}, {"rate": 1.0, "burst": 0}):
        with pytest.raises(ValueError):
            TokenBuckets(**bad)  # type: ignore[arg-type]  # mixed kwargs on purpose


def test_limits_come_from_settings_and_are_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GXAMI_HTTP_HEADER_TIMEOUT_S", "2.5")
    monkeypatch.setenv("GXAMI_HTTP_MAX_BODY_BYTES", "4096")
    monkeypatch.setenv("GXAMI_HTTP_WRITE_BURST", "7")
    limits = HttpLimits.from_settings(ServiceSettings())
    assert (limits.header_timeout_s, limits.max_body_bytes, limits.write_burst) == (2.5, 4096, 7)
    assert HttpLimits.from_settings(ServiceSettings.model_construct()) == HttpLimits()  # same defaults
    with pytest.raises(ValueError, match="body_timeout_s"):
        HttpLimits(body_timeout_s=0)
    monkeypatch.setenv("GXAMI_HTTP_WRITE_RATE_PER_S", "-1")
    with pytest.raises(ValueError, match="http_write_rate_per_s"):
        ServiceSettings()


@pytest.mark.parametrize(
    ("target", "problem"),
    [
        ("/meters?after=abc", None),
        ("/meters/%C3%A9", None),
        ("/m?q=a+b&r=%20", None),
        ("/m?q=%", "bad percent-encoding in the query"),
        ("/m%0", "bad percent-encoding in the path"),
        ("/m?q=%c3", "the query is not UTF-8 once percent-decoded"),
        ("/m?q=%00", "NUL byte in the query"),
        ("/m%0a", "control character in the path"),
    ],
)
def test_target_problems(target: str, problem: str | None) -> None:
    assert target_problem(target) == problem
