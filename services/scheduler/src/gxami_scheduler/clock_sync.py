"""Automatic clock synchronisation: a meter whose clock drifts past the threshold gets a clock-sync command.

The drift of each read job (meter_time - collector_time) is stored with its job result
(:mod:`gxami_scheduler.schedule`); this issues at most one ``clock-sync`` per meter per period,
as ``system:clock-sync``, which the audit then shows as the actor. The command id is derived from
the job that saw the drift, so a redelivered job result issues nothing new.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta

import asyncpg

from gxami_contracts import CommandKind, JobResult
from gxami_scheduler.command_model import PROTOCOL_KINDS, CommandRequest
from gxami_scheduler.command_store import Created, TargetMeter, create_command, last_system_commands
from gxami_scheduler.schedule import clock_drift_s

log = logging.getLogger(__name__)

SYSTEM_CLOCK_SYNC = "system:clock-sync"


def sync_command_id(meter_id: str, job_id: str) -> str:
    return "clock-sync:" + hashlib.sha256(f"{meter_id}\x00{job_id}".encode()).hexdigest()[:40]


class ClockSync:
    """Turns drifting job results into clock-sync commands, at most one per meter per ``period``."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        *,
        threshold_s: float,
        period: timedelta,
        expiry: timedelta,
        clock: Callable[[], datetime],
    ) -> None:
        self._pool = pool
        self._threshold_s = threshold_s
        self._period = period
        self._expiry = expiry
        self._clock = clock

    async def after_results(self, results: Sequence[JobResult]) -> int:
        """Issue the clock-sync commands these results call for; returns how many were new."""
        drifting: dict[str, JobResult] = {}
        for r in results:
            drift = clock_drift_s(r)
            if drift is not None and abs(drift) > self._threshold_s:
                drifting[r.meter_id] = r
        if not drifting:
            return 0
        now = self._clock()
        issued = 0
        async with self._pool.acquire() as conn:
            rows = await conn.fetch(
                "SELECT meter_id, protocol, profile FROM meters WHERE meter_id = ANY($1::text[]) AND enabled",
                sorted(drifting),
            )
            able = [r for r in rows if CommandKind.CLOCK_SYNC in PROTOCOL_KINDS.get(r["protocol"], frozenset())]
            last = await last_system_commands(
                conn, [r["meter_id"] for r in able], CommandKind.CLOCK_SYNC.value, SYSTEM_CLOCK_SYNC
            )
            for row in able:
                meter_id = row["meter_id"]
                previous = last.get(meter_id)
                if previous is not None and now - previous < self._period:
                    continue
                result = drifting[meter_id]
                request = CommandRequest(
                    command_id=sync_command_id(meter_id, result.job_id),
                    kind=CommandKind.CLOCK_SYNC,
                    meters=(meter_id,),
                )
                created = await create_command(
                    conn,
                    request,
                    [TargetMeter(meter_id, row["protocol"], row["profile"], True)],
                    requested_by=SYSTEM_CLOCK_SYNC,
                    requested_from="scheduler",
                    now=now,
                    expires_at=now + self._expiry,
                    needs_approval=False,
                )
                if created is Created.NEW:
                    issued += 1
                    log.info(
                        "clock drift: clock-sync issued",
                        extra={
                            "meter_id": meter_id,
                            "drift_s": clock_drift_s(result),
                            "command_id": request.command_id,
                        },
                    )
        return issued
