"""Firmware rollouts as commands: each started wave becomes one ``firmware-update`` command.

:func:`gxami_scheduler.firmware.advance_rollout` decides a rollout's next step; here a ``start``
becomes a command for the wave's meters (``command_id`` = :func:`~gxami_scheduler.firmware.wave_command_id`,
so the step and its command are stored in one transaction and a repeated tick creates nothing
twice), queued like any other: one command per meter at a time, expiry, state history, audit.
The rollout's creator is the command's requester; the rollout itself is the approval.
Results reach the rollout's progress through :func:`gxami_scheduler.command_store.apply_results`.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from gxami_contracts import CommandKind
from gxami_scheduler.command_model import CommandRequest
from gxami_scheduler.command_store import Created, TargetMeter, create_command
from gxami_scheduler.firmware import advance_rollout, firmware_command_body, wave_command_id
from gxami_scheduler.registry import DbConn

log = logging.getLogger(__name__)

# A wave's command may wait this long for its meters (a meter runs one command at a time); the
# collector checks it again before it starts a transfer, never in the middle of one.
WAVE_EXPIRY = timedelta(days=1)


async def advance_rollouts(conn: DbConn, now: datetime, *, expiry: timedelta = WAVE_EXPIRY) -> int:
    """Take every running rollout's next step; returns how many wave commands were created."""
    created = 0
    running = await conn.fetch("SELECT id FROM firmware_rollouts WHERE state = 'running' ORDER BY id")
    for row in running:
        async with conn.transaction():
            step = await advance_rollout(conn, row["id"], now)
            if step.action != "start" or not step.meters:
                continue
            rollout = await conn.fetchrow(
                "SELECT encode(r.image, 'hex') AS sha256, i.identification, r.activate_at, r.created_by"
                "  FROM firmware_rollouts r JOIN firmware_images i ON i.sha256 = r.image WHERE r.id = $1",
                row["id"],
            )
            assert rollout is not None  # the rollout row is locked by advance_rollout in this transaction
            meters = await conn.fetch(
                "SELECT meter_id, protocol, profile FROM meters WHERE meter_id = ANY($1::text[]) ORDER BY meter_id",
                step.meters,
            )
            request = CommandRequest(
                command_id=wave_command_id(row["id"], step.wave),
                kind=CommandKind.FIRMWARE_UPDATE,
                meters=tuple(m["meter_id"] for m in meters),
                body=firmware_command_body(rollout["sha256"], rollout["identification"], rollout["activate_at"]),
            )
            outcome = await create_command(
                conn,
                request,
                [TargetMeter(m["meter_id"], m["protocol"], m["profile"], True) for m in meters],
                requested_by=str(rollout["created_by"]),
                requested_from=f"rollout:{row['id']}",
                now=now,
                expires_at=now + expiry,
                needs_approval=False,
            )
            if outcome is Created.NEW:
                created += 1
                log.info(
                    "firmware wave queued",
                    extra={"rollout": row["id"], "wave": step.wave, "meters": len(meters)},
                )
    return created
