"""API tokens: the store in the real database, the check with its cache and failure limit, the OpsServer's answers."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import AsyncIterator

import aiohttp
import asyncpg
import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest

from gxami_runtime import auth
from gxami_runtime.auth import (
    Authenticator,
    AuthPolicy,
    PoolTokens,
    Principal,
    Refusal,
    Role,
    create_token,
    list_tokens,
    public,
    requires,
    revoke_token,
)
from gxami_runtime.http import OpsServer
from gxami_store import migrate

pytestmark = pytest.mark.integration

TIMEOUT = aiohttp.ClientTimeout(total=10)


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    conn = await asyncpg.connect(database_url, timeout=10)
    try:
        await migrate(conn)
    finally:
        await conn.close()
    p = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
    try:
        yield p
    finally:
        await p.close()


def bearer(token: str) -> str:
    return f"Bearer {token}"


async def test_tokens_are_random_shown_once_and_stored_as_sha256_only(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        a = await create_token(conn, "grafana", Role.VIEWER, "ops")
        b = await create_token(conn, "ops-bot", Role.OPERATOR, "ops")
        assert a.token.startswith(f"gxa_{a.id}_") and len(a.token.split("_", 2)[2]) == 43  # 256 bits, base64url
        assert a.token != b.token and a.id != b.id
        assert a.token not in repr(a)
        rows = await conn.fetch("SELECT *, t::text AS whole FROM api_tokens t ORDER BY created_at")
        assert [bytes(r["hash"]) for r in rows] == [hashlib.sha256(t.token.encode()).digest() for t in (a, b)]
        for r, t in zip(rows, (a, b), strict=True):
            secret = t.token.split("_", 2)[2]
            assert secret not in r["whole"] and t.token not in r["whole"]
        with pytest.raises(ValueError, match="already named 'grafana'"):
            await create_token(conn, "grafana", Role.ADMIN, "ops")
        assert await revoke_token(conn, "grafana") == [a.id]
        assert await revoke_token(conn, "grafana") == []
        again = await create_token(conn, "grafana", Role.VIEWER, "ops")  # a revoked token frees its name
        assert await revoke_token(conn, again.id) == [again.id]  # by id as well
        assert [t.name for t in await list_tokens(conn)] == ["ops-bot"]
        listed = await list_tokens(conn, include_revoked=True)
        assert [(t.name, t.revoked_at is not None) for t in listed] == [
            ("grafana", True),
            ("ops-bot", False),
            ("grafana", True),
        ]


async def test_bi_reader_cannot_see_the_tokens(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        await create_token(conn, "x", Role.ADMIN, "ops")
        await conn.execute("SET ROLE bi_reader")
        try:
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.fetch("SELECT hash FROM api_tokens")
        finally:
            await conn.execute("RESET ROLE")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_the_check_verifies_caches_and_honours_revocation_after_the_cache_time(
    pool: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = Clock()
    check = Authenticator(PoolTokens(pool), AuthPolicy(cache_s=5.0, failure_burst=100), clock=clock)
    compared: list[bytes] = []
    real_compare = auth.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        compared.append(a)
        return real_compare(a, b)

    monkeypatch.setattr(auth, "compare_digest", spy)
    async with pool.acquire() as conn:
        op = await create_token(conn, "op", Role.OPERATOR, "ops")
    who = await check.check(bearer(op.token), "10.0.0.1", Role.OPERATOR)
    assert who == Principal(op.id, "op", Role.OPERATOR)
    assert compared == [hashlib.sha256(op.token.encode()).digest()]
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT last_used_at IS NOT NULL FROM api_tokens WHERE id = $1", op.id)

    # a wrong secret for a real id, and an unknown id: both compared in constant time, both 401
    forged = op.token[:-4] + ("AAAA" if not op.token.endswith("AAAA") else "BBBB")
    unknown = f"gxa_{'0' * 16}_{op.token.split('_', 2)[2]}"
    for bad in (forged, unknown):
        refused = await check.check(bearer(bad), "10.0.0.1", Role.VIEWER)
        assert isinstance(refused, Refusal) and (refused.status, refused.reason) == (401, "invalid or revoked token")
        assert refused.headers["WWW-Authenticate"] == 'Bearer realm="gxami", error="invalid_token"'
    assert len(compared) == 3

    async with pool.acquire() as conn:
        await revoke_token(conn, "op")
    clock.now += 4.0  # within the cache time: still accepted, without a look-up
    assert await check.check(bearer(op.token), "10.0.0.1", Role.VIEWER) == who
    assert len(compared) == 3
    clock.now += 1.5  # past it: looked up again, and refused
    refused = await check.check(bearer(op.token), "10.0.0.1", Role.VIEWER)
    assert isinstance(refused, Refusal) and refused.status == 401


async def test_repeated_failures_from_one_peer_are_rate_limited(pool: asyncpg.Pool) -> None:
    clock = Clock()
    check = Authenticator(PoolTokens(pool), AuthPolicy(failure_rate_per_s=0.5, failure_burst=3), clock=clock)
    async with pool.acquire() as conn:
        viewer = await create_token(conn, "v", Role.VIEWER, "ops")
    statuses = []
    for header in (None, "Basic dXNlcjpwdw==", "Bearer gxa_nope", "Bearer " + viewer.token[:-1] + "x"):
        outcome = await check.check(header, "10.0.0.9", Role.VIEWER)
        assert isinstance(outcome, Refusal)
        statuses.append(outcome.status)
    assert statuses == [401, 401, 401, 429]
    blocked = await check.check(bearer(viewer.token), "10.0.0.9", Role.VIEWER)  # even a good token, for a while
    assert isinstance(blocked, Refusal) and blocked.status == 429 and blocked.headers["Retry-After"] == "2"
    assert await check.check(bearer(viewer.token), "10.0.0.10", Role.VIEWER) == Principal(viewer.id, "v", Role.VIEWER)
    clock.now += 2.0
    assert isinstance(await check.check(bearer(viewer.token), "10.0.0.9", Role.VIEWER), Principal)
    forbidden = await check.check(bearer(viewer.token), "10.0.0.9", Role.OPERATOR)
    assert isinstance(forbidden, Refusal) and forbidden.status == 403  # a weak role is no failed login


async def test_repeated_forbidden_requests_of_one_token_are_rate_limited_per_token(pool: asyncpg.Pool) -> None:
    clock = Clock()
    check = Authenticator(PoolTokens(pool), AuthPolicy(failure_rate_per_s=0.5, failure_burst=2), clock=clock)
    async with pool.acquire() as conn:
        weak = await create_token(conn, "weak", Role.VIEWER, "ops")
        other = await create_token(conn, "other", Role.VIEWER, "ops")
    statuses = []
    for _ in range(3):
        outcome = await check.check(bearer(weak.token), "10.0.0.7", Role.OPERATOR)
        assert isinstance(outcome, Refusal)
        statuses.append(outcome.status)
    assert statuses == [403, 403, 429]
    # The token's reads still work, and so do the peer's other tokens: only that token's 403s are limited.
    assert isinstance(await check.check(bearer(weak.token), "10.0.0.7", Role.VIEWER), Principal)
    refused = await check.check(bearer(other.token), "10.0.0.7", Role.OPERATOR)
    assert isinstance(refused, Refusal) and refused.status == 403
    clock.now += 2.0
    again = await check.check(bearer(weak.token), "10.0.0.7", Role.OPERATOR)
    assert isinstance(again, Refusal) and again.status == 403


async def test_the_server_answers_401_403_429_in_json_and_never_logs_a_token(
    pool: asyncpg.Pool, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    registry = CollectorRegistry()
    check = Authenticator(PoolTokens(pool), AuthPolicy(failure_rate_per_s=0.01, failure_burst=3))
    ops = OpsServer("127.0.0.1", 0, registry=registry, auth=check)
    seen: list[Principal | None] = []

    async def look(request: web.Request) -> web.Response:
        seen.append(auth.principal_of(request))
        return web.json_response({"ok": True})

    ops.app.router.add_get("/look", requires(Role.VIEWER)(look))
    ops.app.router.add_post("/act", requires(Role.OPERATOR)(look))
    async with pool.acquire() as conn:
        viewer = await create_token(conn, "grafana", Role.VIEWER, "ops")
        operator = await create_token(conn, "ops-bot", Role.OPERATOR, "ops")
    port = await ops.start()
    base = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession(timeout=TIMEOUT) as http:
            for path in ("/health", "/ready", "/metrics"):
                async with http.get(base + path) as resp:
                    assert resp.status == 200, path  # open: probes and Prometheus carry no token
            async with http.get(f"{base}/look") as resp:
                assert resp.status == 401
                assert resp.headers["WWW-Authenticate"] == 'Bearer realm="gxami"'
                assert await resp.json() == {"error": "missing bearer token (Authorization: Bearer <token>)"}
            async with http.get(f"{base}/look", headers={"Authorization": bearer(viewer.token)}) as resp:
                assert (resp.status, await resp.json()) == (200, {"ok": True})
            async with http.post(f"{base}/act", headers={"Authorization": bearer(viewer.token)}) as resp:
                assert resp.status == 403
                assert await resp.json() == {"error": "token 'grafana' has the viewer role; this needs operator"}
            async with http.post(f"{base}/act", headers={"Authorization": bearer(operator.token)}) as resp:
                assert resp.status == 200
            wrong = viewer.token[:-1] + ("a" if viewer.token[-1] != "a" else "b")
            statuses = []
            for _ in range(3):
                async with http.get(f"{base}/look", headers={"Authorization": bearer(wrong)}) as resp:
                    statuses.append(resp.status)
                    body = await resp.json()
            assert statuses == [401, 401, 429]  # the missing token above was the first failure
            assert body == {"error": "too many failed authentications from this address"}
            assert int(resp.headers["Retry-After"]) >= 1
            async with http.get(f"{base}/metrics") as resp:
                metrics = await resp.text()
    finally:
        await ops.stop()
    assert seen == [Principal(viewer.id, "grafana", Role.VIEWER), Principal(operator.id, "ops-bot", Role.OPERATOR)]
    assert registry.get_sample_value("gxami_http_refused_total", {"reason": "unauthenticated"}) == 3
    assert registry.get_sample_value("gxami_http_refused_total", {"reason": "forbidden"}) == 1
    assert registry.get_sample_value("gxami_http_refused_total", {"reason": "auth_rate_limited"}) == 1
    logged = "\n".join(f"{r.getMessage()} {r.__dict__}" for r in caplog.records)
    assert "authorized a write request" in logged and "ops-bot" in logged
    for token in (viewer.token, operator.token, wrong):
        secret = token.split("_", 2)[2]
        assert secret not in logged and secret not in metrics
        assert secret not in generate_latest(registry).decode()


async def test_a_route_must_declare_its_access() -> None:
    ops = OpsServer("127.0.0.1", 0, registry=CollectorRegistry())

    async def page(_: web.Request) -> web.Response:
        return web.json_response({})

    ops.app.router.add_get("/open", public(page))
    ops.check_routes()
    ops.app.router.add_get("/meters", requires(Role.VIEWER)(page))
    with pytest.raises(ValueError, match="HEAD /meters needs the viewer role but the server has no authenticator"):
        await ops.start()
    bare = OpsServer("127.0.0.1", 0, registry=CollectorRegistry())
    bare.app.router.add_post("/write", page)
    with pytest.raises(ValueError, match="POST /write declares no access"):
        await bare.start()
    assert Role.ADMIN.includes(Role.OPERATOR) and Role.OPERATOR.includes(Role.VIEWER)
    assert not Role.VIEWER.includes(Role.OPERATOR)
