"""Firmware images and rollouts: the image store, the HTTP routes, the rollout's database steps.

Routes (installed on the ops server by :meth:`FirmwareApi.install`):

* ``POST /firmware/images`` (admin): the body is the image bytes; its identification (what the
  meter will report once it runs it) comes as ``?identification=`` or the
  ``X-Firmware-Identification`` header. Stored once by SHA-256: the same bytes again return the
  stored image (200, ``created: false``), the same bytes under another identification are 409.
  The body is bounded by the ops server's ``http_max_body_bytes`` setting (1 MiB by default;
  raise it for larger images).
* ``GET /firmware/images/{sha256}`` (viewer): the bytes (``application/octet-stream``), with
  ``X-Firmware-Identification`` and ``X-Firmware-Sha256``; what a collector fetches.
* ``POST /firmware/rollouts`` (operator): ``{"image": sha256, "group": G, "waves": "1,10,100",
  "threshold": 0.05, "activate_at": optional}``; plans the group's enabled meters into waves
  (:mod:`gxami_scheduler.rollout`) and returns the rollout (201).
* ``GET /firmware/rollouts/{id}`` (viewer): the rollout and each meter's progress.

:func:`advance_rollout` applies the planner's next step to the database (the caller queues the
``firmware-update`` commands of a started wave); :func:`record_progress` stores what a meter's
command result reported.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

import asyncpg
from aiohttp import web
from asyncpg.pool import PoolConnectionProxy

from gxami_contracts import CommandOutcome, CommandResult
from gxami_runtime.auth import Role, principal_of, requires
from gxami_runtime.http import json_error, read_json_object
from gxami_scheduler.rollout import RolloutPlanError, Step, check_threshold, next_step, parse_waves, plan_waves

log = logging.getLogger(__name__)

Conn = asyncpg.Connection | PoolConnectionProxy
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_SHA256: Final = re.compile(r"^[0-9a-f]{64}$")
_IDENT: Final = re.compile(r"^[\x20-\x7e]{1,255}$")
METER_STATES: Final = frozenset({"pending", "queued", "transferring", "verified", "activated", "failed"})
DB_ERRORS = (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError)


class ImageConflictError(Exception):
    """The same bytes are stored under another identification."""

    def __init__(self, stored: str) -> None:
        self.stored = stored
        super().__init__(f"these bytes are stored as {stored!r}")


@dataclass(frozen=True, slots=True)
class StoredImage:
    sha256: str
    size: int
    identification: str
    created: bool


async def store_image(conn: Conn, data: bytes, identification: str, uploaded_by: str) -> StoredImage:
    """Keep ``data`` once by its SHA-256 (idempotent); ImageConflictError for another identification."""
    digest = hashlib.sha256(data).digest()
    row = await conn.fetchrow(
        """INSERT INTO firmware_images (sha256, image, size, identification, uploaded_by)
           VALUES ($1, $2, $3, $4, $5) ON CONFLICT (sha256) DO NOTHING RETURNING sha256""",
        digest,
        data,
        len(data),
        identification,
        uploaded_by,
    )
    if row is None:
        stored = await conn.fetchval("SELECT identification FROM firmware_images WHERE sha256 = $1", digest)
        if stored != identification:
            raise ImageConflictError(str(stored))
    return StoredImage(digest.hex(), len(data), identification, row is not None)


async def fetch_image(conn: Conn, sha256: str) -> tuple[bytes, str] | None:
    row = await conn.fetchrow(
        "SELECT image, identification FROM firmware_images WHERE sha256 = $1", bytes.fromhex(sha256)
    )
    return (bytes(row["image"]), str(row["identification"])) if row is not None else None


async def create_rollout(
    conn: Conn,
    sha256: str,
    group: str,
    waves: Sequence[float],
    threshold: float,
    created_by: str,
    activate_at: datetime | None = None,
) -> int:
    """Plan the group's enabled meters into waves and store the rollout; LookupError for an unknown image."""
    percentages = parse_waves(list(waves))
    check_threshold(threshold)
    digest = bytes.fromhex(sha256)
    async with conn.transaction():
        if await conn.fetchval("SELECT 1 FROM firmware_images WHERE sha256 = $1", digest) is None:
            raise LookupError(f"no firmware image {sha256}")
        meters = [
            r["meter_id"]
            for r in await conn.fetch("SELECT meter_id FROM meters WHERE meter_group = $1 AND enabled", group)
        ]
        rollout = await conn.fetchval(
            """INSERT INTO firmware_rollouts (image, meter_group, waves, threshold, activate_at, created_by)
               VALUES ($1, $2, $3, $4, $5, $6) RETURNING id""",
            digest,
            group,
            [round(p) for p in percentages],
            threshold,
            activate_at,
            created_by,
        )
        planned = plan_waves(meters, percentages, seed=str(rollout))
        await conn.executemany(
            "INSERT INTO firmware_rollout_meters (rollout, meter_id, wave) VALUES ($1, $2, $3)",
            [(rollout, meter, wave) for wave, members in enumerate(planned) for meter in members],
        )
    return int(rollout)


async def _waves(conn: Conn, rollout: int) -> tuple[list[list[str]], dict[str, str]]:
    rows = await conn.fetch(
        "SELECT meter_id, wave, state FROM firmware_rollout_meters WHERE rollout = $1 ORDER BY wave, meter_id",
        rollout,
    )
    waves: list[list[str]] = []
    for row in rows:
        while len(waves) <= row["wave"]:
            waves.append([])
        waves[row["wave"]].append(row["meter_id"])
    return [w for w in waves if w], {r["meter_id"]: r["state"] for r in rows}


async def advance_rollout(conn: Conn, rollout: int, now: datetime) -> Step:
    """Take the rollout's next step (see :func:`gxami_scheduler.rollout.next_step`) and store it.

    ``start`` marks the wave's meters ``queued`` (the caller sends their commands); ``halt`` and
    ``finish`` end the rollout; a rollout that is not running only reports ``wait``.
    """
    async with conn.transaction():
        row = await conn.fetchrow(
            "SELECT state, current_wave, threshold FROM firmware_rollouts WHERE id = $1 FOR UPDATE", rollout
        )
        if row is None:
            raise LookupError(f"no rollout {rollout}")
        if row["state"] != "running":
            return Step("wait", row["current_wave"], reason=f"rollout is {row['state']}")
        waves, states = await _waves(conn, rollout)
        current = min(row["current_wave"], max(len(waves) - 1, 0))
        started = bool(waves) and any(states[m] != "pending" for m in waves[current])
        step = next_step(waves, states, current, row["threshold"], started=started)
        if step.action == "start":
            await conn.execute(
                """UPDATE firmware_rollout_meters SET state = 'queued', updated_at = $3
                   WHERE rollout = $1 AND meter_id = ANY($2::text[]) AND state = 'pending'""",
                rollout,
                step.meters,
                now,
            )
            await conn.execute(
                "UPDATE firmware_rollouts SET current_wave = $2, updated_at = $3 WHERE id = $1", rollout, step.wave, now
            )
        elif step.action in ("halt", "finish"):
            await conn.execute(
                "UPDATE firmware_rollouts SET state = $2, reason = $3, updated_at = $4 WHERE id = $1",
                rollout,
                "halted" if step.action == "halt" else "finished",
                step.reason,
                now,
            )
    return step


async def record_progress(
    conn: Conn,
    rollout: int,
    meter_id: str,
    state: str,
    now: datetime,
    *,
    blocks_done: int | None = None,
    blocks_total: int | None = None,
    detail: str = "",
) -> bool:
    """Store one meter's progress (from its command result); False if the meter is not in the rollout
    (or it has finished and this is a late ``transferring``)."""
    if state not in METER_STATES:
        raise ValueError(f"firmware progress state {state!r} is not one of {sorted(METER_STATES)}")
    done = await conn.fetchval(
        """UPDATE firmware_rollout_meters
           SET state = $3, blocks_done = COALESCE($4, blocks_done), blocks_total = COALESCE($5, blocks_total),
               detail = $6, updated_at = $7
           WHERE rollout = $1 AND meter_id = $2
             -- a progress figure arriving late never reopens a meter that has finished
             AND NOT ($3 = 'transferring' AND state IN ('activated', 'failed'))
           RETURNING 1""",
        rollout,
        meter_id,
        state,
        blocks_done,
        blocks_total,
        detail[:1000],
        now,
    )
    return done is not None


async def rollout_progress(conn: Conn, rollout: int) -> dict[str, Any] | None:
    row = await conn.fetchrow(
        """SELECT id, encode(image, 'hex') AS image, meter_group, waves, threshold, state, current_wave,
                  activate_at, reason, created_by, created_at, updated_at
           FROM firmware_rollouts WHERE id = $1""",
        rollout,
    )
    if row is None:
        return None
    meters = await conn.fetch(
        """SELECT meter_id, wave, state, blocks_done, blocks_total, detail, updated_at
           FROM firmware_rollout_meters WHERE rollout = $1 ORDER BY wave, meter_id""",
        rollout,
    )
    out: dict[str, Any] = {k: _json(v) for k, v in dict(row).items()}
    out["group"] = out.pop("meter_group")
    out["meters"] = [{k: _json(v) for k, v in dict(m).items()} for m in meters]
    counts: dict[str, int] = {}
    for m in meters:
        counts[m["state"]] = counts.get(m["state"], 0) + 1
    out["summary"] = counts
    return out


_WAVE_COMMAND: Final = re.compile(r"^firmware-rollout-(\d{1,18})-wave-(\d{1,2})(?:-activate-\d{1,6})?$")


def wave_command_id(rollout: int, wave: int) -> str:
    """The command_id of one wave's firmware-update command (one message per meter shares it)."""
    return f"firmware-rollout-{rollout}-wave-{wave}"


def activation_command_id(rollout: int, wave: int, round_: int) -> str:
    """The command_id of a wave's ``round_``-th activation (verified meters whose activate_at is due)."""
    return f"{wave_command_id(rollout, wave)}-activate-{round_}"


def rollout_of(command_id: str) -> tuple[int, int] | None:
    """(rollout, wave) of a wave's command_id, None for any other command."""
    match = _WAVE_COMMAND.match(command_id)
    return (int(match.group(1)), int(match.group(2))) if match else None


def firmware_command_body(sha256: str, identification: str, activate_at: datetime | None = None) -> dict[str, Any]:
    """The ``body`` of a firmware-update MeterCommand: the image by hash (the collector fetches the bytes)."""
    body: dict[str, Any] = {"sha256": sha256, "identification": identification}
    if activate_at is not None:
        body["activate_at"] = activate_at.isoformat()
    return body


def progress_of(result: CommandResult) -> tuple[str, int | None, int | None, str]:
    """A meter's rollout state, blocks done and in all, and detail, from its command result."""
    data = result.data

    def figure(*names: str) -> int | None:
        for name in names:
            value = data.get(name)
            if isinstance(value, int | float) and not isinstance(value, bool):
                return int(value)
        return None

    done = figure("firmware-blocks-done", "blocks_done")
    total = figure("firmware-blocks-total", "blocks_total")
    if result.outcome is CommandOutcome.SENT:
        state = "transferring"
    elif result.outcome is CommandOutcome.SUCCEEDED:
        state = "verified" if result.state == "verified" else "activated"
    else:
        state = "failed"
    detail = result.error_message or result.state or result.outcome.value
    return state, done, total, str(detail)


async def record_result(conn: Conn, result: CommandResult, now: datetime) -> bool:
    """Apply a firmware-update command result to its rollout's progress; False if it is no rollout's."""
    wave = rollout_of(result.command_id)
    if result.kind != "firmware-update" or wave is None:
        return False
    state, done, total, detail = progress_of(result)
    return await record_progress(
        conn, wave[0], result.meter_id, state, now, blocks_done=done, blocks_total=total, detail=detail
    )


def _rollout_request(body: dict[str, Any]) -> tuple[list[float], float, datetime | None]:
    """Waves, threshold and activation time of a rollout request; RolloutPlanError/ValueError say what is wrong."""
    waves = parse_waves(body.get("waves", "1,10,100"))
    threshold = body.get("threshold", 0.05)
    if isinstance(threshold, bool) or not isinstance(threshold, int | float):
        raise RolloutPlanError("threshold must be a number between 0 and 1")
    activate_at = body.get("activate_at")
    at = datetime.fromisoformat(activate_at) if isinstance(activate_at, str) else None
    if at is not None and at.tzinfo is None:
        raise RolloutPlanError("activate_at must carry a time zone")
    return waves, check_threshold(float(threshold)), at


def _json(value: object) -> object:
    return value.isoformat() if isinstance(value, datetime) else value


class FirmwareApi:
    """The firmware routes (see the module doc) over a database pool."""

    def __init__(self, pool: asyncpg.Pool, clock: Callable[[], datetime]) -> None:
        self._pool = pool
        self._clock = clock

    def install(self, app: web.Application) -> None:
        viewer, operator, admin = requires(Role.VIEWER), requires(Role.OPERATOR), requires(Role.ADMIN)
        app.router.add_post("/firmware/images", admin(self._guard(self.upload)))
        app.router.add_get("/firmware/images/{sha256}", viewer(self._guard(self.download)))
        app.router.add_post("/firmware/rollouts", operator(self._guard(self.start_rollout)))
        app.router.add_get("/firmware/rollouts/{rollout}", viewer(self._guard(self.show_rollout)))

    def _guard(self, handler: Handler) -> Handler:
        async def guarded(request: web.Request) -> web.StreamResponse:
            try:
                return await handler(request)
            except DB_ERRORS as exc:
                log.warning("firmware API: database unavailable", extra={"error": type(exc).__name__})
                return json_error(503, "database unavailable")

        return guarded

    async def upload(self, request: web.Request) -> web.StreamResponse:
        ident = str(request.query.get("identification") or request.headers.get("X-Firmware-Identification", ""))
        if not _IDENT.match(ident):
            return json_error(400, "identification (query or X-Firmware-Identification) must be 1-255 printable ASCII")
        data = await request.read()  # read in full, bounded, by the ops server before this runs
        if not data:
            return json_error(400, "the body must be the image bytes")
        who = principal_of(request)
        by = who.name if who is not None else "unknown"
        try:
            async with self._pool.acquire() as conn:
                stored = await store_image(conn, data, ident, by)
        except ImageConflictError as exc:
            return json_error(409, f"image already stored under identification {exc.stored!r}")
        log.info(
            "firmware image stored" if stored.created else "firmware image already stored",
            extra={"sha256": stored.sha256, "size": stored.size, "token_name": by},
        )
        body = {"sha256": stored.sha256, "size": stored.size, "identification": ident, "created": stored.created}
        return web.json_response(body, status=201 if stored.created else 200)

    async def download(self, request: web.Request) -> web.StreamResponse:
        sha256 = request.match_info["sha256"].lower()
        if not _SHA256.match(sha256):
            return json_error(400, "an image is named by the 64 hex digits of its SHA-256")
        async with self._pool.acquire() as conn:
            found = await fetch_image(conn, sha256)
        if found is None:
            return json_error(404, f"no firmware image {sha256}")
        data, ident = found
        headers = {"X-Firmware-Identification": ident, "X-Firmware-Sha256": sha256, "ETag": f'"{sha256}"'}
        return web.Response(body=data, content_type="application/octet-stream", headers=headers)

    async def start_rollout(self, request: web.Request) -> web.StreamResponse:
        body = await read_json_object(
            request, allowed=frozenset({"image", "group", "waves", "threshold", "activate_at"})
        )
        image, group = body.get("image"), body.get("group")
        if not isinstance(image, str) or not _SHA256.match(image):
            return json_error(400, "image must be the 64 hex digits of a stored image's SHA-256")
        if not isinstance(group, str) or not group:
            return json_error(400, "group must name a meter group")
        try:
            waves, threshold, at = _rollout_request(body)
        except (RolloutPlanError, TypeError, ValueError) as exc:
            return json_error(400, str(exc))
        who = principal_of(request)
        try:
            async with self._pool.acquire() as conn:
                rollout = await create_rollout(conn, image, group, waves, threshold, who.name if who else "unknown", at)
                progress = await rollout_progress(conn, rollout)
        except LookupError as exc:
            return json_error(404, str(exc))
        except RolloutPlanError as exc:
            return json_error(400, str(exc))
        log.info("firmware rollout created", extra={"rollout": rollout, "group": group, "sha256": image})
        return web.json_response(progress, status=201)

    async def show_rollout(self, request: web.Request) -> web.StreamResponse:
        try:
            rollout = int(request.match_info["rollout"])
        except ValueError:
            return json_error(400, "a rollout is named by its number")
        async with self._pool.acquire() as conn:
            progress = await rollout_progress(conn, rollout) if 0 < rollout < 2**63 else None
        if progress is None:
            return json_error(404, f"no rollout {rollout}")
        return web.json_response(progress)
