"""Commands in the database: racing requests with one id, racing queue ticks, expiry, the audit trail."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import asyncpg

from gxami_contracts import CommandOutcome, CommandResult
from gxami_scheduler.command_model import parse_request
from gxami_scheduler.command_store import (
    Created,
    apply_results,
    claim_due_commands,
    create_command,
    expire_overdue,
    resolve_meters,
)
from gxami_scheduler.fleet import parse_fleet
from gxami_scheduler.registry import import_fleet
from gxcore.profiles import ProfileCatalog

from .conftest import T0

FLEET = """\
meter_id,protocol,address,profile,schedule,enabled
e1,dlms,tcp://10.0.0.1:4059,em-dlms,15m,true
e2,dlms,tcp://10.0.0.2:4059,em-dlms,15m,true
"""


async def _create(pool: asyncpg.Pool, body: dict[str, object], minutes: float = 30, at: float = 0) -> Created:
    request = parse_request(body)
    async with pool.acquire() as conn:
        meters = await resolve_meters(conn, request)
        return await create_command(
            conn,
            request,
            meters,
            requested_by="op",
            requested_from="10.1.1.1",
            now=T0 + timedelta(seconds=at),
            expires_at=T0 + timedelta(minutes=minutes),
            needs_approval=False,
        )


async def test_racing_requests_queue_ticks_and_expiry(
    db: asyncpg.Connection, database_url: str, profiles: ProfileCatalog
) -> None:
    await import_fleet(db, parse_fleet("f.csv", FLEET, profiles), T0, [profiles.get("em-dlms")])
    pool = await asyncpg.create_pool(database_url, min_size=4, max_size=4)
    try:
        body = {"command_id": "same", "kind": "disconnect", "meters": ["e1", "e2"]}
        made = await asyncio.gather(*(_create(pool, body) for _ in range(4)))
        assert sorted(c.value for c in made) == ["existing", "existing", "existing", "new"]
        assert await db.fetchval("SELECT count(*) FROM command_meters WHERE command_id = 'same'") == 2
        assert await _create(pool, {"command_id": "next", "kind": "reconnect", "meter": "e1"}, at=1) is Created.NEW
        assert await _create(pool, {"command_id": "brief", "kind": "clock-sync", "meter": "e2"}, 1, at=2) is Created.NEW

        async def claim() -> list[tuple[str, str]]:
            async with pool.acquire() as conn:
                queued = await claim_due_commands(conn, T0 + timedelta(seconds=5), limit=100)
            return [(q.message.command_id, q.message.meter_id) for q in queued]

        claims = await asyncio.gather(*(claim() for _ in range(4)))
        # Two replicas' ticks at once queue each meter's first command once, and nothing behind it.
        assert sorted(p for c in claims for p in c) == [("same", "e1"), ("same", "e2")]
        async with pool.acquire() as conn:
            assert await claim_due_commands(conn, T0 + timedelta(seconds=5), limit=100) == []
            done = CommandResult(
                command_id="same",
                meter_id="e1",
                kind="disconnect",
                outcome=CommandOutcome.SUCCEEDED,
                finished_at=T0,
                state="disconnected",
            )
            assert await apply_results(conn, [done, done], T0) == 1  # a redelivery changes nothing
            queued = await claim_due_commands(conn, T0 + timedelta(seconds=5), limit=100)
            assert [(q.message.command_id, q.message.meter_id) for q in queued] == [("next", "e1")]
            # e2 is still busy with "same": "brief" expires waiting, never queued.
            assert (
                await expire_overdue(
                    conn, T0 + timedelta(minutes=2), result_grace=timedelta(0), lost_after=timedelta(hours=1)
                )
                == 1
            )
        states = dict(await db.fetch("SELECT command_id, state FROM commands ORDER BY command_id"))
        assert states == {"brief": "expired", "next": "queued", "same": "queued"}
        audit = await db.fetch("SELECT command_id, meter_id, result, actor, actor_from FROM command_audit ORDER BY id")
        assert [tuple(r.values()) for r in audit] == [
            ("same", "e1", "succeeded", "op", "10.1.1.1"),
            ("brief", "e2", "expired", "op", "10.1.1.1"),
        ]
    finally:
        await pool.close()
