"""A firmware rollout's waves go out as firmware-update commands, and their results move the rollout."""

from __future__ import annotations

from datetime import timedelta

import asyncpg

from gxami_contracts import CommandKind, CommandOutcome, CommandResult
from gxami_scheduler.command_store import apply_results, claim_due_commands, expire_overdue
from gxami_scheduler.firmware import create_rollout, rollout_progress, store_image
from gxami_scheduler.fleet import parse_fleet
from gxami_scheduler.registry import import_fleet
from gxami_scheduler.rollout_commands import advance_rollouts
from gxcore.profiles import ProfileCatalog

from .conftest import T0

FLEET = """\
meter_id,protocol,address,profile,schedule,enabled,group
f1,dlms,tcp://10.0.0.1:4059,em-dlms,1d,true,town
f2,dlms,tcp://10.0.0.2:4059,em-dlms,1d,true,town
"""


async def test_each_wave_is_one_command_and_its_results_advance_the_rollout(
    db: asyncpg.Connection, profiles: ProfileCatalog
) -> None:
    await import_fleet(db, parse_fleet("f.csv", FLEET, profiles), T0, [profiles.get("em-dlms")])
    image = await store_image(db, b"\x01firmware-image" * 64, "FW 2.0", "admin")
    rollout = await create_rollout(db, image.sha256, "town", [50, 100], 0.5, "op-a")
    now = T0 + timedelta(seconds=1)
    assert await advance_rollouts(db, now) == 1
    assert await advance_rollouts(db, now) == 0  # the wave is running: nothing new
    [first] = await claim_due_commands(db, now, limit=10)
    sent = first.message
    assert (sent.kind, sent.command_id, sent.requested_by) == (
        CommandKind.FIRMWARE_UPDATE,
        f"firmware-rollout-{rollout}-wave-0",
        "op-a",
    )
    assert sent.body == {"sha256": image.sha256, "identification": "FW 2.0"}

    def result(outcome: CommandOutcome, **data: int) -> CommandResult:
        return CommandResult(
            command_id=sent.command_id,
            meter_id=sent.meter_id,
            kind=CommandKind.FIRMWARE_UPDATE,
            outcome=outcome,
            finished_at=now,
            data=dict(data),
        )

    await apply_results(db, [result(CommandOutcome.SENT, blocks_done=3, blocks_total=8)], now)
    progress = await rollout_progress(db, rollout)
    assert progress is not None
    mine = next(m for m in progress["meters"] if m["meter_id"] == sent.meter_id)
    assert (mine["state"], mine["blocks_done"], mine["blocks_total"]) == ("transferring", 3, 8)
    await apply_results(db, [result(CommandOutcome.SUCCEEDED, blocks_done=8, blocks_total=8)], now)
    assert await advance_rollouts(db, now) == 1  # the next wave
    [second] = await claim_due_commands(db, now, limit=10)
    assert second.message.command_id == f"firmware-rollout-{rollout}-wave-1"
    assert second.message.meter_id != sent.meter_id
    # Sent long past its wave's expiry, a transfer is not given up on; anything else would be.
    await apply_results(db, [result(CommandOutcome.SENT)], now)  # no-op: wave 0 has ended
    second_sent = CommandResult(
        command_id=second.message.command_id,
        meter_id=second.message.meter_id,
        kind=CommandKind.FIRMWARE_UPDATE,
        outcome=CommandOutcome.SENT,
        finished_at=now,
    )
    await apply_results(db, [second_sent], now)
    assert await expire_overdue(db, now + timedelta(days=3), result_grace=timedelta(0), lost_after=timedelta(0)) == 0
    states = await db.fetch("SELECT command_id, state FROM commands ORDER BY command_id")
    assert [tuple(r.values()) for r in states] == [
        (f"firmware-rollout-{rollout}-wave-0", "succeeded"),
        (f"firmware-rollout-{rollout}-wave-1", "sent"),
    ]


async def test_verified_meters_are_activated_once_activate_at_is_due(
    db: asyncpg.Connection, profiles: ProfileCatalog
) -> None:
    await import_fleet(db, parse_fleet("f.csv", FLEET, profiles), T0, [profiles.get("em-dlms")])
    image = await store_image(db, b"\x02firmware-image" * 64, "FW 3.0", "admin")
    at = T0 + timedelta(hours=1)
    rollout = await create_rollout(db, image.sha256, "town", [100], 0.5, "op-a", activate_at=at)
    now = T0 + timedelta(seconds=1)
    assert await advance_rollouts(db, now) == 1
    wave = await claim_due_commands(db, now, limit=10)
    assert sorted(q.message.meter_id for q in wave) == ["f1", "f2"]
    assert wave[0].message.body == {"sha256": image.sha256, "identification": "FW 3.0", "activate_at": at.isoformat()}

    def result(command_id: str, meter: str, state: str) -> CommandResult:
        return CommandResult(
            command_id=command_id,
            meter_id=meter,
            kind=CommandKind.FIRMWARE_UPDATE,
            outcome=CommandOutcome.SUCCEEDED,
            state=state,
            finished_at=now,
        )

    wave_id = f"firmware-rollout-{rollout}-wave-0"
    await apply_results(db, [result(wave_id, "f1", "verified")], now)
    assert await advance_rollouts(db, at - timedelta(minutes=1)) == 0  # verified, not yet due
    due = at + timedelta(seconds=1)
    assert await advance_rollouts(db, due) == 1
    [first] = await claim_due_commands(db, due, limit=10)
    assert (first.message.command_id, first.message.meter_id) == (f"{wave_id}-activate-1", "f1")
    assert first.message.body == {"sha256": image.sha256, "identification": "FW 3.0"}  # activate now
    assert await advance_rollouts(db, due) == 0  # f1 has its activation; f2 is still transferring
    # f2 verifies after the first round went out: the next tick sends it a round of its own.
    await apply_results(db, [result(wave_id, "f2", "verified")], due)
    assert await advance_rollouts(db, due) == 1
    [second] = await claim_due_commands(db, due, limit=10)
    assert (second.message.command_id, second.message.meter_id) == (f"{wave_id}-activate-2", "f2")
    await apply_results(db, [result(f"{wave_id}-activate-1", "f1", "activated")], due)
    await apply_results(db, [result(f"{wave_id}-activate-2", "f2", "activated")], due)
    # A progress figure arriving late never takes an activated meter back to transferring.
    late = CommandResult(
        command_id=f"{wave_id}-activate-2",
        meter_id="f2",
        kind=CommandKind.FIRMWARE_UPDATE,
        outcome=CommandOutcome.SENT,
        finished_at=due,
    )
    await apply_results(db, [late], due)
    assert await advance_rollouts(db, due) == 0
    progress = await rollout_progress(db, rollout)
    assert progress is not None and progress["state"] == "finished", progress
    assert {m["meter_id"]: m["state"] for m in progress["meters"]} == {"f1": "activated", "f2": "activated"}
