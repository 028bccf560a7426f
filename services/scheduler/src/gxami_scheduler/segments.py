"""Network-segment admission: the scheduler lets out only as much work as a segment's limits allow.

Why here and not in the collectors: the scheduler already owns a lease per job (the meter's
``in_flight_job`` row, kept until a result arrives or ``in_flight_until`` passes), and every
scheduler replica claims through the same database. Counting a segment's in-flight jobs there
bounds the sessions any number of collector replicas can open, with no new topic, no database
access for collectors, and nothing to reconcile after a consumer-group rebalance or a collector
crash: a job a dead collector held stays counted until its lease expires, then it is claimed
again. The count is conservative (a job waiting in a collector's queue counts as a session).

Serialisation: a claim locks the ``segment_buckets`` rows of the segments it admits work for,
in name order (no deadlocks), before counting; a second scheduler replica claiming for the same
segment waits for the first one's commit and then sees its in-flight jobs (READ COMMITTED takes a
new snapshot per statement). The same pass admits at most one job per link for meters in a
segment, counting jobs already in flight on that link, so a serial bus or a concentrator never has
two jobs out at once, whichever collector replica holds its partition during a rebalance.

``max_new_per_s`` is a token bucket in the same row: ``tokens`` refill at that rate up to a burst
of one second's worth. Admission times are the scheduler's; a collector that works through a
backlog can still start sessions closer together than that (see the README, "Schedules and
segments").
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from gxami_scheduler.registry import PLAN_KEY, DbConn


@dataclass(frozen=True, slots=True)
class SegmentLimits:
    """A segment's limits as kept with each of its meters."""

    max_sessions: int
    max_new_per_s: float


def segment_of(raw: str | Mapping[str, Any] | None) -> tuple[str, SegmentLimits] | None:
    """The segment name and limits from ``meters.options``, or None for a meter in no segment."""
    data: Any = json.loads(raw) if isinstance(raw, str) else dict(raw or {})
    plan = data.get(PLAN_KEY) if isinstance(data, dict) else None
    if not isinstance(plan, dict) or not plan.get("segment"):
        return None
    limits = plan.get("segment_limits") or {}
    return str(plan["segment"]), SegmentLimits(
        max_sessions=int(limits.get("max_sessions", 1)), max_new_per_s=float(limits.get("max_new_per_s", 0))
    )


def bucket_after(tokens: float, refilled_at: datetime, now: datetime, rate: float) -> float:
    """Tokens of a bucket refilled at ``rate`` per second since ``refilled_at``, capped at one second's worth."""
    if rate <= 0:
        return float("inf")
    burst = max(1.0, rate)
    return min(burst, tokens + max(0.0, (now - refilled_at).total_seconds()) * rate)


def _lock_key(link: str) -> int:
    return int.from_bytes(hashlib.blake2b(link.encode(), digest_size=8).digest(), "big", signed=True)


_IN_FLIGHT = f"""
SELECT m.options -> '{PLAN_KEY}' ->> 'segment' AS segment, m.link_id, count(*) AS n
  FROM meter_schedule s JOIN meters m ON m.meter_id = s.meter_id
 WHERE s.in_flight_job IS NOT NULL AND s.in_flight_until >= $1
   AND (m.options -> '{PLAN_KEY}' ->> 'segment' = ANY($2::text[]) OR m.link_id = ANY($3::text[]))
 GROUP BY 1, 2
"""  # noqa: S608 - composed from a constant only


async def admit_by_segment(conn: DbConn, rows: Sequence[asyncpg.Record], now: datetime) -> list[asyncpg.Record]:
    """The claimed rows (in claim order) the segments' limits admit; call inside the claim's transaction."""
    segments: dict[str, SegmentLimits] = {}
    for row in rows:
        seg = segment_of(row["options"])
        if seg is not None:
            segments.setdefault(seg[0], seg[1])
    if not segments:
        return list(rows)
    names = sorted(segments)
    links = sorted({r["link_id"] for r in rows if segment_of(r["options"]) is not None})
    await conn.execute(
        "INSERT INTO segment_buckets (segment, tokens, refilled_at) SELECT s, 1, $2 FROM unnest($1::text[]) AS s"
        " ON CONFLICT (segment) DO NOTHING",
        names,
        now,
    )
    buckets = {
        r["segment"]: r
        for r in await conn.fetch(
            "SELECT segment, tokens, refilled_at FROM segment_buckets WHERE segment = ANY($1::text[])"
            " ORDER BY segment FOR UPDATE",
            names,
        )
    }
    # Links may be shared by meters of several segments (or none): one transaction-scoped lock per
    # link, in a fixed order, so two replicas never both admit a job for one link.
    for link in links:
        await conn.execute("SELECT pg_advisory_xact_lock($1)", _lock_key(link))
    sessions: dict[str, int] = dict.fromkeys(names, 0)
    busy_links: set[str] = set()
    for r in await conn.fetch(_IN_FLIGHT, now, names, links):
        if r["segment"] in sessions:
            sessions[r["segment"]] += int(r["n"])
        busy_links.add(r["link_id"])
    tokens = {
        n: bucket_after(buckets[n]["tokens"], buckets[n]["refilled_at"], now, segments[n].max_new_per_s) for n in names
    }
    admitted: list[asyncpg.Record] = []
    for row in rows:
        seg = segment_of(row["options"])
        if seg is None:
            admitted.append(row)
            continue
        name, limits = seg
        if sessions[name] >= limits.max_sessions or tokens[name] < 1 or row["link_id"] in busy_links:
            continue
        sessions[name] += 1
        tokens[name] -= 1
        busy_links.add(row["link_id"])
        admitted.append(row)
    finite = [n for n in names if tokens[n] != float("inf")]
    if finite:
        await conn.execute(
            "UPDATE segment_buckets b SET tokens = u.tokens, refilled_at = $3"
            " FROM unnest($1::text[], $2::float8[]) AS u(segment, tokens) WHERE b.segment = u.segment",
            finite,
            [tokens[n] for n in finite],
            now,
        )
    return admitted
