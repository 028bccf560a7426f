"""VEE (validation, estimation, editing) as a periodic pass over the readings stored since the last one.

Validation flags readings in ``readings.vee_flags`` without changing their values; estimation
fills short gaps of interval data by linear interpolation of the cumulative register and stores
the estimates flagged ESTIMATED; a real value arriving later replaces the estimate (the ingest
merge in :mod:`gxami_ingest.vee_merge` does that) and the next pass re-derives the rest.
The rules per quantity live in the ``vee_rules`` table (per meter overrides in ``meter_channels``);
the settings here are the fleet-wide ones. One pod at a time runs a pass (advisory lock); the
others skip. Flags and columns: docs/data-dictionary.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

import asyncpg
from pydantic import BaseModel, ConfigDict, Field

from gxami_ingest import vee_sql as q

log = logging.getLogger("gxami.ingest.vee")

_VEE_LOCK = 0x67_78_76_65_65  # "gxvee": one VEE pass at a time across pods


class VeeSettings(BaseModel):
    """Fleet-wide VEE settings (rules per quantity are in the vee_rules table)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    # Readings stamped further back than this when they arrive are not looked at: keep it within
    # the storage back-fill horizon so a pass never reads compressed chunks.
    lookback: timedelta = timedelta(days=60)
    spike_history: int = Field(default=96, ge=1, le=10_000, description="readings the spike baseline averages")
    spike_min_history: int = Field(default=4, ge=1, description="no spike verdict with less history than this")
    max_future: timedelta = timedelta(minutes=5)
    max_past: timedelta = timedelta(days=31)
    max_clock_drift: timedelta = timedelta(seconds=30)
    clock_span: timedelta = timedelta(days=1)
    # Longest gap between two measured readings filled by interpolation. At most 28 days, so that
    # an estimate never lands in a month without a partition.
    max_interpolated_gap: timedelta = Field(default=timedelta(hours=2), le=timedelta(days=28))
    # Ingest transactions stamp received_at when they start and commit later: each pass looks back
    # this much before the previous watermark so that no late-committed reading is missed.
    commit_margin: timedelta = timedelta(minutes=2)
    every: timedelta = Field(default=timedelta(seconds=60), gt=timedelta(0))


@dataclass(frozen=True, slots=True)
class VeeStats:
    """What one pass did."""

    skipped: bool
    channels: int = 0
    flags_changed: int = 0
    clock_flags_changed: int = 0
    estimates_written: int = 0
    estimates_updated: int = 0
    estimates_removed: int = 0
    validated_to: datetime | None = None


@dataclass(frozen=True, slots=True)
class Gap:
    """Missing interval readings between two measured ones (exclusive at both ends)."""

    after: datetime
    before: datetime
    missing: int


def _count(status: str) -> int:
    """Rows affected, from an asyncpg status string such as 'UPDATE 3'."""
    tail = status.rsplit(" ", 1)[-1]
    return int(tail) if tail.isdigit() else 0


async def run_vee(conn: asyncpg.Connection, *, settings: VeeSettings, since: datetime | None = None) -> VeeStats:
    """Validate and estimate what arrived since ``since`` (default: the stored watermark), in one transaction."""
    async with conn.transaction():
        if not await conn.fetchval("SELECT pg_try_advisory_xact_lock($1)", _VEE_LOCK):
            return VeeStats(skipped=True)
        now: datetime = await conn.fetchval("SELECT now()")
        if since is None:
            stored = await conn.fetchval("SELECT validated_to FROM vee_state WHERE id")
            since = stored if stored is not None else now - settings.lookback
        await conn.execute(q.CREATE_TOUCHED)
        await conn.execute(q.FILL_TOUCHED, since, now - settings.lookback)
        channels = int(await conn.fetchval("SELECT count(*) FROM vee_touched"))
        stats = VeeStats(skipped=False, validated_to=now - settings.commit_margin)
        if channels:
            await conn.execute(q.SET_CONTEXT, settings.spike_history)
            flag_sql = q.FLAG_READINGS.format(
                history=int(settings.spike_history), min_history=int(settings.spike_min_history)
            )
            flagged = _count(await conn.execute(flag_sql, settings.max_future, settings.max_past))
            clock = _count(
                await conn.execute(q.FLAG_CLOCK_DRIFT, settings.clock_span, settings.max_clock_drift.total_seconds())
            )
            await conn.execute(q.SET_ESTIMATE_FROM)
            await conn.execute(q.WANTED_ESTIMATES, settings.max_interpolated_gap)
            removed = _count(await conn.execute(q.DROP_STALE_ESTIMATES))
            written = await conn.fetchrow(q.WRITE_ESTIMATES, q.ESTIMATE_SOURCE)
            assert written is not None
            stats = VeeStats(
                skipped=False,
                channels=channels,
                flags_changed=flagged,
                clock_flags_changed=clock,
                estimates_written=int(written["inserted"]),
                estimates_updated=int(written["updated"]),
                estimates_removed=removed,
                validated_to=stats.validated_to,
            )
        await conn.execute(q.SAVE_WATERMARK, stats.validated_to)
    return stats


async def run_vee_periodically(dsn: str, settings: VeeSettings, stop: asyncio.Event) -> None:
    """Run a VEE pass every ``settings.every`` until ``stop`` is set; database trouble is logged and retried."""
    conn: asyncpg.Connection | None = None
    try:
        while not stop.is_set():
            try:
                if conn is None or conn.is_closed():
                    conn = await asyncpg.connect(dsn, timeout=10)
                stats = await run_vee(conn, settings=settings)
                if not stats.skipped and stats.channels:
                    log.info(
                        "vee pass",
                        extra={
                            "channels": stats.channels,
                            "flags_changed": stats.flags_changed + stats.clock_flags_changed,
                            "estimates_written": stats.estimates_written,
                            "estimates_removed": stats.estimates_removed,
                        },
                    )
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
                log.warning("vee pass failed; will retry", extra={"error": repr(exc)})
                if conn is not None:
                    conn.terminate()
                    conn = None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), settings.every.total_seconds())
    finally:
        if conn is not None:
            await conn.close()


async def record_meter_replacement(
    conn: asyncpg.Connection,
    meter_id: str,
    replaced_at: datetime,
    *,
    quantity: str = "*",
    old_final: float | None = None,
    new_initial: float | None = None,
    note: str = "",
) -> None:
    """Record a meter exchange; the next VEE pass re-validates the meter's registers from there."""
    await conn.execute(
        """INSERT INTO meter_replacements (meter_id, quantity, replaced_at, old_final, new_initial, note)
           VALUES ($1, $2, $3, $4, $5, $6)
           ON CONFLICT (meter_id, quantity, replaced_at) DO UPDATE
              SET old_final = EXCLUDED.old_final, new_initial = EXCLUDED.new_initial,
                  note = EXCLUDED.note, recorded_at = now()""",
        meter_id,
        quantity,
        replaced_at,
        old_final,
        new_initial,
        note,
    )


async def find_gaps(
    conn: asyncpg.Connection, meter_id: str, quantity: str, start: datetime, end: datetime
) -> list[Gap]:
    """Gaps in the measured interval data of one channel between ``start`` and ``end`` (inclusive)."""
    rows = await conn.fetch(q.FIND_GAPS, meter_id, quantity, start, end)
    return [Gap(r["after_ts"], r["before_ts"], r["missing"]) for r in rows]


def flag_names(flags: int) -> list[str]:
    """Names of the VEE bits set in ``flags``, lowest bit first."""
    return [name for bit, name in sorted(q.FLAG_NAMES.items()) if flags & bit]
