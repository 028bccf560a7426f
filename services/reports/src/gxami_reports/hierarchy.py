"""SQL for the energy reports: the tree, interval consumption per meter and bucket, load curves, completeness."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from gxami_reports.energy import MEDIUM_OF_QUANTITY, Bucket, Key, Medium, Membership, Period, day_start
from gxami_reports.queries import Conn


async def memberships(conn: Conn) -> list[Membership]:
    """Every meter's node and main meter (meters outside the tree have node None)."""
    rows = await conn.fetch(
        "SELECT m.meter_id, n.node_path, n.submeter_of FROM meters m LEFT JOIN meter_nodes n USING (meter_id)"
    )
    return [Membership(r["meter_id"], r["node_path"], r["submeter_of"]) for r in rows]


async def node_paths(conn: Conn) -> list[str]:
    """Every node of the tree, in path order."""
    return [r["node_path"] for r in await conn.fetch("SELECT node_path FROM hierarchy_nodes ORDER BY node_path")]


# A register's value at each bucket edge: its last reading at or before the edge and at most a
# day older (one primary-key lookup per meter, register and edge, in one or two partitions). A
# bucket's consumption is the difference of its two edges, counted across a rollover (the same
# register_delta the BI views use); it is marked estimated when an edge reading is an estimate,
# as daily_consumption's quality is. Summing interval rows instead would cost a self-join of the
# whole period's readings.
PER_METER_SQL = """
WITH edges AS (
    SELECT e.edge, e.i FROM unnest($2::timestamptz[]) WITH ORDINALITY AS e(edge, i)
), channels AS (
    SELECT m.meter_id, q.quantity, COALESCE(c.register_modulus, r.register_modulus) AS modulus
      FROM unnest($1::text[]) AS m(meter_id)
     CROSS JOIN unnest($3::text[]) AS q(quantity)
      LEFT JOIN vee_rules r ON r.quantity = q.quantity
      LEFT JOIN meter_channels c ON c.meter_id = m.meter_id AND c.quantity = q.quantity
), at_edges AS (
    SELECT ch.meter_id, ch.quantity, ch.modulus, e.i, x.value, x.vee_flags
      FROM channels ch
     CROSS JOIN edges e
     CROSS JOIN LATERAL (
           SELECT value, vee_flags FROM readings
            WHERE meter_id = ch.meter_id AND quantity = ch.quantity
              AND ts <= e.edge AND ts > e.edge - interval '1 day'
            ORDER BY ts DESC LIMIT 1) x
), paired AS (
    SELECT meter_id, quantity, modulus, i, value, vee_flags,
           lag(value) OVER w AS prev_value, lag(vee_flags) OVER w AS prev_flags, lag(i) OVER w AS prev_i
      FROM at_edges
    WINDOW w AS (PARTITION BY meter_id, quantity ORDER BY i)
)
SELECT meter_id, quantity, i - 1 AS bucket_index,
       register_delta(prev_value, value, modulus) AS consumption,
       ((vee_flags | prev_flags) & 1) <> 0 AS estimated
  FROM paired
 WHERE prev_i = i - 1
"""


@dataclass(frozen=True, slots=True)
class PerMeter:
    """Consumption per (meter, medium, bucket), and the keys whose sum includes an estimate."""

    values: dict[Key, float]
    estimated: frozenset[Key]


def bucket_edges(period: Period, by: Bucket) -> list[datetime]:
    """The instants that bound the buckets: the start of each, then the period's end."""
    return [day_start(b) for b in period.buckets(by)] + [period.end]


async def consumption_per_meter(
    conn: Conn, meters: Sequence[str], media: Sequence[Medium], period: Period, by: Bucket
) -> PerMeter:
    """Consumption per meter, medium and bucket over the period (register at the bucket's end minus at its start)."""
    buckets = period.buckets(by)
    rows = await conn.fetch(PER_METER_SQL, list(meters), bucket_edges(period, by), [m.quantity for m in media])
    values: dict[Key, float] = {}
    estimated: set[Key] = set()
    for r in rows:
        key = (r["meter_id"], MEDIUM_OF_QUANTITY[r["quantity"]].name, buckets[r["bucket_index"] - 1])
        values[key] = float(r["consumption"])
        if r["estimated"]:
            estimated.add(key)
    return PerMeter(values, frozenset(estimated))


@dataclass(frozen=True, slots=True)
class IntervalPoint:
    interval_start: datetime
    interval_end: datetime
    consumption: float
    estimated: bool
    meters: int


async def load_curve(conn: Conn, meters: Sequence[str], medium: Medium, period: Period) -> list[IntervalPoint]:
    """The summed interval consumption of the meters, one point per interval, in time order."""
    rows = await conn.fetch(
        """SELECT interval_start, interval_end, sum(consumption) AS consumption,
                  bool_or(quality = 'estimated') AS estimated, count(*) AS meters
             FROM interval_consumption
            WHERE meter_id = ANY($1::text[]) AND quantity = $2 AND interval_end > $3 AND interval_end <= $4
            GROUP BY 1, 2
            ORDER BY 2, 1""",
        list(meters),
        medium.quantity,
        period.start,
        period.end,
    )
    return [
        IntervalPoint(r["interval_start"], r["interval_end"], float(r["consumption"]), r["estimated"], r["meters"])
        for r in rows
    ]


@dataclass(frozen=True, slots=True)
class CompletenessRow:
    meter_id: str
    quantity: str
    expected: int
    received: int
    estimated: int
    missing: int


async def completeness(conn: Conn, meters: Sequence[str], period: Period) -> list[CompletenessRow]:
    """Intervals expected, received, estimated and missing per meter and register over the period's days."""
    rows = await conn.fetch(
        """SELECT meter_id, quantity, sum(expected) AS expected, sum(received) AS received,
                  sum(estimated) AS estimated, sum(missing) AS missing
             FROM read_completeness
            WHERE meter_id = ANY($1::text[]) AND day >= $2 AND day <= $3
            GROUP BY 1, 2
            ORDER BY 1, 2""",
        list(meters),
        period.first,
        period.last,
    )
    return [
        CompletenessRow(
            r["meter_id"], r["quantity"], int(r["expected"]), int(r["received"]), int(r["estimated"]), int(r["missing"])
        )
        for r in rows
    ]
