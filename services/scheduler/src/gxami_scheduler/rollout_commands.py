"""Firmware rollouts as commands: each started wave becomes one ``firmware-update`` command.

:func:`gxami_scheduler.firmware.advance_rollout` decides a rollout's next step; here a ``start``
becomes a command for the wave's meters (``command_id`` = :func:`~gxami_scheduler.firmware.wave_command_id`,
so the step and its command are stored in one transaction and a repeated tick creates nothing
twice), queued like any other: one command per meter at a time, expiry, state history, audit.
The rollout's creator is the command's requester; the rollout itself is the approval.
Results reach the rollout's progress through :func:`gxami_scheduler.command_store.apply_results`.

Activation at a time. A rollout with ``activate_at`` sends it in its wave's body; a meter whose
transfer ends before then stops at ``verified`` (the driver's rule). Once ``activate_at`` has
passed by the scheduler's clock, :func:`activate_due` gathers the wave's meters still
``verified`` (and not yet sent an activation) into one more ``firmware-update`` command,
``firmware-rollout-<id>-wave-<n>-activate-<k>``: the same image and identification but *no*
``activate_at``, so the driver (finding the image verified) only activates, whatever the
collector's clock says. ``k`` counts the wave's activation rounds: a meter that verifies after a
round went out is taken by the next tick's round. The wave waits (``next_step``) until its meters
are activated or failed, so a later wave never starts while one is left verified.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from asyncpg import Record

from gxami_contracts import CommandKind
from gxami_scheduler.command_model import CommandRequest
from gxami_scheduler.command_store import Created, TargetMeter, create_command
from gxami_scheduler.firmware import (
    activation_command_id,
    advance_rollout,
    firmware_command_body,
    wave_command_id,
)
from gxami_scheduler.registry import DbConn

log = logging.getLogger(__name__)

# A wave's command may wait this long for its meters (a meter runs one command at a time); the
# collector checks it again before it starts a transfer, never in the middle of one.
WAVE_EXPIRY = timedelta(days=1)


async def advance_rollouts(conn: DbConn, now: datetime, *, expiry: timedelta = WAVE_EXPIRY) -> int:
    """Take every running rollout's next step, and send due activations; returns how many commands were created."""
    created = await activate_due(conn, now, expiry=expiry)
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
            body = firmware_command_body(rollout["sha256"], rollout["identification"], rollout["activate_at"])
            command_id = wave_command_id(row["id"], step.wave)
            if await _queue(conn, command_id, body, meters, rollout["created_by"], row["id"], now, now + expiry):
                created += 1
                log.info(
                    "firmware wave queued",
                    extra={"rollout": row["id"], "wave": step.wave, "meters": len(meters)},
                )
    return created


async def activate_due(conn: DbConn, now: datetime, *, expiry: timedelta = WAVE_EXPIRY) -> int:
    """Send an activation to each wave's verified meters whose rollout's activate_at has passed (module doc)."""
    due = await conn.fetch(
        """SELECT DISTINCT m.rollout, m.wave FROM firmware_rollout_meters m
             JOIN firmware_rollouts r ON r.id = m.rollout
            WHERE r.state = 'running' AND r.activate_at IS NOT NULL AND r.activate_at <= $1
              AND m.state = 'verified'
            ORDER BY m.rollout, m.wave""",
        now,
    )
    created = 0
    for row in due:
        rollout, wave = int(row["rollout"]), int(row["wave"])
        prefix = wave_command_id(rollout, wave) + "-activate-"
        async with conn.transaction():
            # Locked so that two scheduler replicas cannot number one round twice.
            head = await conn.fetchrow(
                """SELECT encode(r.image, 'hex') AS sha256, i.identification, r.created_by
                     FROM firmware_rollouts r JOIN firmware_images i ON i.sha256 = r.image
                    WHERE r.id = $1 FOR UPDATE OF r""",
                rollout,
            )
            assert head is not None  # selected above; rollouts are never deleted
            meters = await conn.fetch(
                """SELECT mt.meter_id, mt.protocol, mt.profile FROM firmware_rollout_meters m
                     JOIN meters mt ON mt.meter_id = m.meter_id
                    WHERE m.rollout = $1 AND m.wave = $2 AND m.state = 'verified'
                      AND NOT EXISTS (SELECT 1 FROM command_meters c
                                       WHERE c.meter_id = m.meter_id AND starts_with(c.command_id, $3))
                    ORDER BY mt.meter_id""",
                rollout,
                wave,
                prefix,
            )
            if not meters:
                continue
            rounds = await conn.fetchval("SELECT count(*) FROM commands WHERE starts_with(command_id, $1)", prefix)
            command_id = activation_command_id(rollout, wave, int(rounds) + 1)
            body = firmware_command_body(head["sha256"], head["identification"])  # no activate_at: activate now
            if await _queue(conn, command_id, body, meters, head["created_by"], rollout, now, now + expiry):
                created += 1
                log.info(
                    "firmware activation queued",
                    extra={"rollout": rollout, "wave": wave, "command_id": command_id, "meters": len(meters)},
                )
    return created


async def _queue(
    conn: DbConn,
    command_id: str,
    body: dict[str, object],
    meters: list[Record],
    created_by: object,
    rollout: int,
    now: datetime,
    expires_at: datetime,
) -> bool:
    """Create one firmware-update command for ``meters``; True if it is new."""
    request = CommandRequest(
        command_id=command_id,
        kind=CommandKind.FIRMWARE_UPDATE,
        meters=tuple(m["meter_id"] for m in meters),
        body=body,
    )
    outcome = await create_command(
        conn,
        request,
        [TargetMeter(m["meter_id"], m["protocol"], m["profile"], True) for m in meters],
        requested_by=str(created_by),
        requested_from=f"rollout:{rollout}",
        now=now,
        expires_at=expires_at,
        needs_approval=False,
    )
    return outcome is Created.NEW
