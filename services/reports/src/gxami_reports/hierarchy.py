"""SQL for the energy reports: the tree, interval consumption per meter and bucket, load curves, completeness."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime

from gxami_reports.energy import MEDIUM_OF_QUANTITY, Bucket, Key, Medium, Membership, Period
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


# Interval consumption summed per meter, register and bucket. The range filter is on the readings'
# own timestamp (interval_end), so it reaches the readings' primary key and partitions.
PER_METER_SQL = """
SELECT meter_id, quantity,
       CASE $4::text WHEN 'day' THEN ((interval_end - interval '1 microsecond') AT TIME ZONE 'UTC')::date
                     WHEN 'month' THEN date_trunc('month', (interval_end - interval '1 microsecond')
                                                            AT TIME ZONE 'UTC')::date
                     ELSE $5::date END AS bucket,
       sum(consumption) AS consumption,
       bool_or(quality = 'estimated') AS estimated
  FROM interval_consumption
 WHERE meter_id = ANY($1::text[]) AND quantity = ANY($6::text[])
   AND interval_end > $2 AND interval_end <= $3
 GROUP BY 1, 2, 3
"""


@dataclass(frozen=True, slots=True)
class PerMeter:
    """Consumption per (meter, medium, bucket), and the keys whose sum includes an estimate."""

    values: dict[Key, float]
    estimated: frozenset[Key]


async def consumption_per_meter(
    conn: Conn, meters: Sequence[str], media: Sequence[Medium], period: Period, by: Bucket
) -> PerMeter:
    """Sum of interval consumption per meter, medium and bucket over the period."""
    rows = await conn.fetch(
        PER_METER_SQL, list(meters), period.start, period.end, by, period.first, [m.quantity for m in media]
    )
    values: dict[Key, float] = {}
    estimated: set[Key] = set()
    for r in rows:
        key = (r["meter_id"], MEDIUM_OF_QUANTITY[r["quantity"]].name, r["bucket"])
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


def to_date(value: date | datetime) -> date:
    return value.date() if isinstance(value, datetime) else value
