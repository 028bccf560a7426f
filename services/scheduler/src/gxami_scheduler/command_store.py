"""Commands in the database: create (idempotent), approve, cancel, queue, expire, apply results, audit.

Every change of a meter's state goes through :func:`_move`, which only moves meters whose current
state the state table (:data:`~gxami_scheduler.command_model.TRANSITIONS`) allows, writes one
history row per meter moved and, for a final state, its audit row. A redelivered result therefore
changes nothing.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import Enum
from typing import Any

import asyncpg

from gxami_contracts import CommandKind, CommandOutcome, CommandResult, MeterCommand
from gxami_scheduler import firmware
from gxami_scheduler.command_model import (
    FINAL,
    OUTCOME_STATE,
    TRANSITIONS,
    WAITING,
    CommandError,
    CommandRequest,
    MeterState,
    summary_state,
    support_problem,
)
from gxami_scheduler.registry import DbConn, split_options
from gxcore.profiles import DeviceProfile, ProfileCatalog

# One replica queues at a time (any constant; the migration lock is another).
_QUEUE_LOCK = 0x67_78_63_6D_64  # "gxcmd"
SYSTEM_EXPIRY = "system:expiry"


class UnknownCommandResultError(Exception):
    """A result for a command or meter the scheduler never queued: dead-lettered, not retried."""


def command_result_refusal(exc: BaseException) -> str | None:
    return str(exc) if isinstance(exc, UnknownCommandResultError) else None


@dataclass(frozen=True, slots=True)
class TargetMeter:
    meter_id: str
    protocol: str
    profile: str
    enabled: bool


async def resolve_meters(conn: DbConn, request: CommandRequest) -> list[TargetMeter]:
    """The meters a request names; 404 for one unknown meter, 422 for unknown ones in a list or an empty group."""
    if request.group is not None:
        rows = await conn.fetch(
            "SELECT meter_id, protocol, profile, enabled FROM meters WHERE meter_group = $1 ORDER BY meter_id",
            request.group,
        )
        if not rows:
            raise CommandError(422, f"group {request.group!r} has no meters")
    else:
        rows = await conn.fetch(
            "SELECT meter_id, protocol, profile, enabled FROM meters WHERE meter_id = ANY($1::text[])",
            list(request.meters),
        )
        found = {r["meter_id"] for r in rows}
        missing = [m for m in request.meters if m not in found]
        if missing and len(request.meters) == 1:
            raise CommandError(404, f"unknown meter {missing[0]!r}")
        if missing:
            raise CommandError(422, f"{len(missing)} unknown meters, first {missing[0]!r}", unknown=missing[:100])
    meters = [TargetMeter(r["meter_id"], r["protocol"], r["profile"], r["enabled"]) for r in rows]
    disabled = [m.meter_id for m in meters if not m.enabled]
    if disabled:
        raise CommandError(422, f"meter {disabled[0]!r} is disabled", disabled=disabled[:100])
    return meters


async def load_profiles(conn: DbConn, names: Iterable[str]) -> dict[str, DeviceProfile]:
    """Device profiles by name: as imported with the fleet, else the built-in ones."""
    wanted = sorted(set(names))
    rows = await conn.fetch("SELECT name, definition FROM device_profiles WHERE name = ANY($1::text[])", wanted)
    out = {r["name"]: DeviceProfile.model_validate_json(r["definition"]) for r in rows}
    missing = [n for n in wanted if n not in out]
    if missing:
        builtin = ProfileCatalog()
        out.update({n: builtin.get(n) for n in missing if n in builtin.names()})
    return out


def check_support(request: CommandRequest, meters: Sequence[TargetMeter], profiles: dict[str, DeviceProfile]) -> None:
    """422 naming the first meter whose protocol or profile cannot take the command."""
    for meter in meters:
        problem = support_problem(request, meter.meter_id, meter.protocol, profiles.get(meter.profile))
        if problem is not None:
            raise CommandError(422, problem)


class Created(Enum):
    NEW = "new"
    EXISTING = "existing"  # the same command_id with the same content


_INSERT_COMMAND = """
INSERT INTO commands (command_id, kind, target, meter_count, point, value, clock, options, body, content_hash,
                      requested_by, requested_from, requested_at, not_before, expires_at, needs_approval, state,
                      updated_at)
VALUES ($1, $2, $3::jsonb, $4, $5, $6::jsonb, $7, $8::jsonb, $9::jsonb, $10, $11, $12, $13, $14, $15, $16, $17, $13)
ON CONFLICT (command_id) DO NOTHING
"""


async def existing_command(conn: DbConn, request: CommandRequest) -> Created | None:
    """EXISTING when this command_id holds this content; 409 when it holds another; None when new."""
    stored = await conn.fetchval("SELECT content_hash FROM commands WHERE command_id = $1", request.command_id)
    if stored is None:
        return None
    if bytes(stored) != request.content_hash():
        raise CommandError(409, f"command {request.command_id!r} exists with different content")
    return Created.EXISTING


async def create_command(
    conn: DbConn,
    request: CommandRequest,
    meters: Sequence[TargetMeter],
    *,
    requested_by: str,
    requested_from: str,
    now: datetime,
    expires_at: datetime,
    needs_approval: bool,
) -> Created:
    """Store the command and its meters (requested, or approved at once); idempotent on command_id."""
    state = MeterState.REQUESTED if needs_approval else MeterState.APPROVED
    async with conn.transaction():
        status = await conn.execute(
            _INSERT_COMMAND,
            request.command_id,
            request.kind.value,
            json.dumps(request.target()),
            len(meters),
            request.point,
            json.dumps(request.value) if request.value is not None else None,
            request.clock,
            json.dumps(dict(request.options)),
            json.dumps(request.body) if request.body is not None else None,
            request.content_hash(),
            requested_by,
            requested_from,
            now,
            request.not_before,
            expires_at,
            needs_approval,
            state.value,
        )
        if status.endswith(" 0"):  # another request with this id won the race
            existing = await existing_command(conn, request)
            assert existing is not None
            return existing
        ids = [m.meter_id for m in meters]
        await conn.execute(
            "INSERT INTO command_meters (command_id, meter_id, state, updated_at)"
            " SELECT $1, m, $3, $4 FROM unnest($2::text[]) AS m",
            request.command_id,
            ids,
            state.value,
            now,
        )
        await _history(conn, request.command_id, ids, MeterState.REQUESTED, now, requested_by, "")
        if not needs_approval:
            await _history(
                conn, request.command_id, ids, MeterState.APPROVED, now, requested_by, "no second approval needed"
            )
    return Created.NEW


async def _history(
    conn: DbConn, command_id: str, meter_ids: Sequence[str], state: MeterState, at: datetime, actor: str, detail: str
) -> None:
    await conn.execute(
        "INSERT INTO command_state_history (command_id, meter_id, state, at, actor, detail)"
        " SELECT $1, m, $3, $4, $5, $6 FROM unnest($2::text[]) AS m",
        command_id,
        list(meter_ids),
        state.value,
        at,
        actor,
        detail,
    )


_AUDIT = """
INSERT INTO command_audit (command_id, meter_id, kind, params, actor, actor_from, approved_by, requested_at,
                           finished_at, result, result_state, read_back, error_kind, error_message)
SELECT c.command_id, cm.meter_id, c.kind,
       jsonb_strip_nulls(jsonb_build_object('point', c.point, 'value', c.value, 'clock', c.clock,
                                            'options', c.options, 'target', c.target,
                                            'not_before', c.not_before, 'expires_at', c.expires_at)),
       c.requested_by, c.requested_from,
       (SELECT string_agg(a.approved_by, ',' ORDER BY a.approved_at) FROM command_approvals a
         WHERE a.command_id = c.command_id),
       c.requested_at, cm.finished_at, cm.state, cm.result_state, cm.read_back, cm.error_kind, cm.error_message
  FROM commands c JOIN command_meters cm ON cm.command_id = c.command_id
 WHERE c.command_id = $1 AND cm.meter_id = ANY($2::text[])
ON CONFLICT (command_id, meter_id) DO NOTHING
"""


async def _move(
    conn: DbConn,
    command_id: str,
    meter_ids: Sequence[str],
    new: MeterState,
    now: datetime,
    actor: str,
    detail: str = "",
    **columns: Any,
) -> list[str]:
    """Move the meters whose state allows it to ``new``; history, audit on a final state; returns those moved."""
    allowed = [s.value for s, targets in TRANSITIONS.items() if new in targets]
    sets = ["state = $3", "updated_at = $4"]
    args: list[Any] = [command_id, list(meter_ids), new.value, now, allowed]
    if new is MeterState.QUEUED:
        sets.append("queued_at = $4")
    if new is MeterState.SENT:
        sets.append("sent_at = $4")
    if new in FINAL:
        sets.append("finished_at = $4")
    for name, value in columns.items():
        args.append(value)
        cast = "::jsonb" if name == "read_back" else ""
        sets.append(f"{name} = ${len(args)}{cast}")
    rows = await conn.fetch(
        f"UPDATE command_meters SET {', '.join(sets)}"  # noqa: S608 - column names are ours, values are parameters
        " WHERE command_id = $1 AND meter_id = ANY($2::text[]) AND state = ANY($5::text[]) RETURNING meter_id",
        *args,
    )
    moved = [r["meter_id"] for r in rows]
    if moved:
        await _history(conn, command_id, moved, new, now, actor, detail)
        if new in FINAL:
            await conn.execute(_AUDIT, command_id, moved)
    return moved


async def refresh_states(conn: DbConn, command_ids: Iterable[str], now: datetime) -> None:
    """Set each command's own state from its meters' (:func:`summary_state`)."""
    ids = sorted(set(command_ids))
    if not ids:
        return
    rows = await conn.fetch(
        "SELECT command_id, array_agg(state) AS states FROM command_meters WHERE command_id = ANY($1::text[])"
        " GROUP BY command_id",
        ids,
    )
    for r in rows:
        state = summary_state([MeterState(s) for s in r["states"]])
        await conn.execute(
            "UPDATE commands SET state = $2, updated_at = $3 WHERE command_id = $1 AND state <> $2",
            r["command_id"],
            state.value,
            now,
        )


class Decision(Enum):
    DONE = "done"
    UNKNOWN = "unknown"
    NOT_WAITING = "not-waiting"  # approve: nothing awaits approval; cancel: already queued or finished
    OWN_COMMAND = "own-command"  # approve: the requester cannot be the second pair of eyes


async def approve(conn: DbConn, command_id: str, who: str, where: str, now: datetime) -> Decision:
    """A second operator's approval: the requested meters become approved (queued by the next tick)."""
    async with conn.transaction():
        row = await conn.fetchrow(
            "SELECT requested_by, needs_approval FROM commands WHERE command_id = $1 FOR UPDATE", command_id
        )
        if row is None:
            return Decision.UNKNOWN
        if row["requested_by"] == who:
            return Decision.OWN_COMMAND
        waiting = [
            r["meter_id"]
            for r in await conn.fetch(
                "SELECT meter_id FROM command_meters WHERE command_id = $1 AND state = 'requested'", command_id
            )
        ]
        if not waiting:
            return Decision.NOT_WAITING
        await conn.execute(
            "INSERT INTO command_approvals (command_id, approved_by, approved_from, approved_at)"
            " VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
            command_id,
            who,
            where,
            now,
        )
        await _move(conn, command_id, waiting, MeterState.APPROVED, now, who, f"approved from {where}")
        await refresh_states(conn, [command_id], now)
    return Decision.DONE


async def cancel(conn: DbConn, command_id: str, who: str, where: str, now: datetime) -> Decision:
    """Cancel the meters not yet queued; DONE if any were, NOT_WAITING when all are queued or finished."""
    async with conn.transaction():
        if await conn.fetchval("SELECT 1 FROM commands WHERE command_id = $1 FOR UPDATE", command_id) is None:
            return Decision.UNKNOWN
        waiting = [
            r["meter_id"]
            for r in await conn.fetch(
                "SELECT meter_id FROM command_meters WHERE command_id = $1 AND state = ANY($2::text[])",
                command_id,
                [s.value for s in WAITING],
            )
        ]
        if not waiting:
            return Decision.NOT_WAITING
        await _move(conn, command_id, waiting, MeterState.CANCELLED, now, who, f"cancelled from {where}")
        await refresh_states(conn, [command_id], now)
    return Decision.DONE


async def expire_overdue(conn: DbConn, now: datetime, *, result_grace: timedelta, lost_after: timedelta) -> int:
    """Expire what waits past its expiry (never sent); give up on queued or sent ones the collector never answered."""
    moved = 0
    async with conn.transaction():
        rules: tuple[tuple[list[str], datetime, MeterState, str, dict[str, str], list[str]], ...] = (
            (
                [s.value for s in WAITING],
                now,
                MeterState.EXPIRED,
                "expired in the scheduler before it was sent; never executed",
                {},
                [],
            ),
            (
                [MeterState.QUEUED.value],
                now - result_grace,
                MeterState.EXPIRED,
                "no answer from the collector by its expiry; the collector executes nothing expired",
                {"error_kind": "no-result"},
                [],
            ),
            (
                [MeterState.SENT.value],
                now - lost_after,
                MeterState.FAILED,
                "the collector started it but sent no final result",
                {"error_kind": "lost", "error_message": "no final result from the collector"},
                # A firmware transfer may run for hours past its wave's expiry: it ends with its result.
                [CommandKind.FIRMWARE_UPDATE.value],
            ),
        )
        touched: set[str] = set()
        for states, before, new, detail, columns, spared in rules:
            rows = await conn.fetch(
                "SELECT cm.command_id, array_agg(cm.meter_id) AS meters FROM command_meters cm"
                " JOIN commands c ON c.command_id = cm.command_id"
                " WHERE cm.state = ANY($1::text[]) AND c.expires_at <= $2 AND NOT c.kind = ANY($3::text[])"
                " GROUP BY cm.command_id",
                states,
                before,
                spared,
            )
            for r in rows:
                done = await _move(conn, r["command_id"], r["meters"], new, now, SYSTEM_EXPIRY, detail, **columns)
                moved += len(done)
                touched.add(r["command_id"])
        await refresh_states(conn, touched, now)
    return moved


_DUE = """
WITH busy AS (SELECT DISTINCT meter_id FROM command_meters WHERE state IN ('queued', 'sent')),
     due AS (
         SELECT cm.command_id, cm.meter_id,
                row_number() OVER (PARTITION BY cm.meter_id ORDER BY c.requested_at, c.command_id) AS n
           FROM command_meters cm JOIN commands c ON c.command_id = cm.command_id
          WHERE cm.state = 'approved' AND (c.not_before IS NULL OR c.not_before <= $1) AND c.expires_at > $1
            AND cm.meter_id NOT IN (SELECT meter_id FROM busy))
SELECT c.command_id, c.kind, c.point, c.value, c.clock, c.options AS command_options, c.body, c.requested_by,
       c.not_before, c.expires_at, cm.attempt, m.meter_id, m.link_id, m.protocol, m.url, m.profile,
       m.options AS meter_options
  FROM due d
  JOIN commands c ON c.command_id = d.command_id
  JOIN command_meters cm ON cm.command_id = d.command_id AND cm.meter_id = d.meter_id
  JOIN meters m ON m.meter_id = d.meter_id
 WHERE d.n = 1
 ORDER BY c.requested_at, c.command_id, m.meter_id
 LIMIT $2
"""


@dataclass(frozen=True, slots=True)
class Queued:
    """A meter's command marked queued, to publish keyed by its link; ``site`` names an edge site's topic."""

    site: str | None
    message: MeterCommand


def meter_site(meter_options: Any) -> str | None:
    """The edge site whose collectors serve this meter: its commands go to ``<commands topic>.<site>``.

    Seam: the registry has no site column yet (the edge work adds it to the fleet); until then a
    site is read from the meter's stored contact details only, and a meter without one is served
    through the central topic, like its read jobs.
    """
    data = json.loads(meter_options) if isinstance(meter_options, str) else dict(meter_options or {})
    contact = data.get("_contact") if isinstance(data, dict) else None
    site = contact.get("site") if isinstance(contact, dict) else None
    return site if isinstance(site, str) and site else None


async def claim_due_commands(conn: DbConn, now: datetime, *, limit: int) -> list[Queued]:
    """Mark the next command of each free meter queued (one transaction, one replica at a time); return them."""
    out: list[Queued] = []
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", _QUEUE_LOCK)
        rows = await conn.fetch(_DUE, now, limit)
        by_command: dict[str, list[asyncpg.Record]] = {}
        for r in rows:
            by_command.setdefault(r["command_id"], []).append(r)
        for command_id, group in by_command.items():
            moved = set(
                await _move(conn, command_id, [r["meter_id"] for r in group], MeterState.QUEUED, now, "system:queue")
            )
            out.extend(_queued(r, now) for r in group if r["meter_id"] in moved)
        await refresh_states(conn, by_command, now)
    return out


def _queued(r: asyncpg.Record, now: datetime) -> Queued:
    options, _ = split_options(r["meter_options"])
    options.update(json.loads(r["command_options"]) if r["command_options"] else {})
    message = MeterCommand(
        command_id=r["command_id"],
        meter_id=r["meter_id"],
        link_id=r["link_id"],
        protocol=r["protocol"],
        url=r["url"],
        profile=r["profile"],
        kind=CommandKind(r["kind"]),
        point=r["point"],
        value=json.loads(r["value"]) if r["value"] is not None else None,
        clock=r["clock"],
        options=options,
        body=json.loads(r["body"]) if r["body"] is not None else None,
        requested_by=r["requested_by"],
        issued_at=now,
        not_before=r["not_before"],
        expires_at=r["expires_at"],
        attempt=r["attempt"],
    )
    return Queued(meter_site(r["meter_options"]), message)


async def unqueue(conn: DbConn, queued: Sequence[MeterCommand], now: datetime) -> None:
    """Back to approved: these could not be published; the next tick tries again."""
    async with conn.transaction():
        by_command: dict[str, list[str]] = {}
        for m in queued:
            by_command.setdefault(m.command_id, []).append(m.meter_id)
        for command_id, meters in by_command.items():
            await _move(conn, command_id, meters, MeterState.APPROVED, now, "system:queue", "publishing failed")
        await refresh_states(conn, by_command, now)


def _read_back(result: CommandResult) -> str:
    data: dict[str, Any] = dict(result.data)
    if result.state is not None:
        data["state"] = result.state
    for name in ("meter_time_before", "meter_time_after", "started_at"):
        value = getattr(result, name)
        if value is not None:
            data[name] = value.isoformat()
    return json.dumps(data)


async def apply_results(conn: DbConn, results: Sequence[CommandResult], now: datetime) -> int:
    """Move each result's meter (one transaction); an unknown command or meter raises UnknownCommandResultError."""
    moved = 0
    async with conn.transaction():
        for result in results:
            current = await conn.fetchval(
                "SELECT state FROM command_meters WHERE command_id = $1 AND meter_id = $2 FOR UPDATE",
                result.command_id,
                result.meter_id,
            )
            if current is None:
                raise UnknownCommandResultError(
                    f"result for command {result.command_id!r} meter {result.meter_id!r},"
                    " which the scheduler never queued"
                )
            new = OUTCOME_STATE[result.outcome]
            actor = f"collector:{result.collector}" if result.collector else "collector"
            columns: dict[str, Any] = {"collector": result.collector}
            if result.outcome is not CommandOutcome.SENT:
                columns.update(
                    result_state=result.state,
                    read_back=_read_back(result),
                    error_kind=result.error_kind,
                    error_message=result.error_message,
                )
            if result.kind is CommandKind.FIRMWARE_UPDATE:  # a rollout wave's: its progress too
                await firmware.record_result(conn, result, now)
            detail = result.error_message or (f"state {result.state}" if result.state else "")
            done = await _move(
                conn, result.command_id, [result.meter_id], new, result.finished_at, actor, detail[:500], **columns
            )
            moved += len(done)
        await refresh_states(conn, {r.command_id for r in results}, now)
    return moved


def _iso(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value


async def command_json(conn: DbConn, command_id: str) -> dict[str, Any] | None:
    """The command, each meter's state, the approvals and the full state history."""
    c = await conn.fetchrow(
        "SELECT command_id, kind, target, meter_count, point, value, clock, options, body, requested_by,"
        " requested_from, requested_at, not_before, expires_at, needs_approval, state, updated_at"
        " FROM commands WHERE command_id = $1",
        command_id,
    )
    if c is None:
        return None
    out: dict[str, Any] = {k: _iso(v) for k, v in c.items()}
    for name in ("target", "value", "options", "body"):
        out[name] = json.loads(c[name]) if c[name] is not None else None
    meters = await conn.fetch(
        "SELECT meter_id, state, attempt, result_state, read_back, error_kind, error_message, collector, queued_at,"
        " sent_at, finished_at FROM command_meters WHERE command_id = $1 ORDER BY meter_id",
        command_id,
    )
    out["meters"] = [
        {k: (json.loads(v) if k == "read_back" and v is not None else _iso(v)) for k, v in m.items()} for m in meters
    ]
    approvals = await conn.fetch(
        "SELECT approved_by, approved_from, approved_at FROM command_approvals WHERE command_id = $1"
        " ORDER BY approved_at",
        command_id,
    )
    out["approvals"] = [{k: _iso(v) for k, v in a.items()} for a in approvals]
    history = await conn.fetch(
        "SELECT meter_id, state, at, actor, detail FROM command_state_history WHERE command_id = $1 ORDER BY id",
        command_id,
    )
    out["history"] = [{k: _iso(v) for k, v in h.items()} for h in history]
    return out


async def list_commands(
    conn: DbConn, *, state: str | None, meter: str | None, limit: int, before: str | None
) -> list[dict[str, Any]]:
    """Newest first; ``before`` a command id to continue after."""
    rows = await conn.fetch(
        "SELECT c.command_id, c.kind, c.meter_count, c.requested_by, c.requested_at, c.expires_at, c.state"
        "  FROM commands c"
        " WHERE ($1::text IS NULL OR c.state = $1)"
        "   AND ($2::text IS NULL OR EXISTS (SELECT 1 FROM command_meters cm"
        "                                     WHERE cm.command_id = c.command_id AND cm.meter_id = $2))"
        "   AND ($3::text IS NULL OR (c.requested_at, c.command_id) <"
        "        (SELECT requested_at, command_id FROM commands WHERE command_id = $3))"
        " ORDER BY c.requested_at DESC, c.command_id DESC LIMIT $4",
        state,
        meter,
        before,
        limit,
    )
    return [{k: _iso(v) for k, v in r.items()} for r in rows]


async def last_system_commands(conn: DbConn, meter_ids: Sequence[str], kind: str, actor: str) -> dict[str, datetime]:
    """When ``actor`` last asked ``kind`` of each meter."""
    rows = await conn.fetch(
        "SELECT cm.meter_id, max(c.requested_at) AS at FROM command_meters cm"
        " JOIN commands c ON c.command_id = cm.command_id"
        " WHERE cm.meter_id = ANY($1::text[]) AND c.kind = $2 AND c.requested_by = $3 GROUP BY cm.meter_id",
        list(meter_ids),
        kind,
        actor,
    )
    return {r["meter_id"]: r["at"] for r in rows}


__all__ = [
    "Created",
    "Decision",
    "Queued",
    "TargetMeter",
    "UnknownCommandResultError",
    "apply_results",
    "approve",
    "cancel",
    "check_support",
    "claim_due_commands",
    "command_json",
    "command_result_refusal",
    "create_command",
    "existing_command",
    "expire_overdue",
    "last_system_commands",
    "list_commands",
    "load_profiles",
    "meter_site",
    "refresh_states",
    "resolve_meters",
    "unqueue",
]
