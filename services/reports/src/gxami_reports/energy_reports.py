"""The energy reports, each a Table: the same rows become the JSON, the CSV and the charts."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from gxami_reports.energy import (
    MEDIA,
    Bucket,
    Medium,
    Membership,
    Period,
    ReportInputError,
    counted_meters,
    descendants,
    in_subtree,
    residuals,
    roll_up,
    rounded,
)
from gxami_reports.hierarchy import (
    IntervalPoint,
    PerMeter,
    completeness,
    consumption_per_meter,
    load_curve,
    memberships,
    node_paths,
)
from gxami_reports.queries import Conn
from gxami_reports.tou import tariff_at
from gxcore.tariffs import TariffCalendar

Cell = str | int | float | bool | None


@dataclass(frozen=True, slots=True)
class Table:
    """A report: its name, what it was asked for (``meta``), its columns, and its rows in column order."""

    report: str
    meta: dict[str, Cell]
    columns: tuple[str, ...]
    rows: list[dict[str, Cell]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"report": self.report, **self.meta, "columns": list(self.columns), "rows": self.rows}


def _iso(value: date | datetime) -> str:
    return value.isoformat()


@dataclass(frozen=True, slots=True)
class Scope:
    """What a report covers: one meter, or a node's counted meters."""

    meter: str | None
    node: str | None
    meters: list[str]
    members: list[Membership]

    @property
    def meta(self) -> dict[str, Cell]:
        return {"meter": self.meter, "node": self.node}


async def scope(conn: Conn, *, meter: str | None, node: str | None) -> Scope:
    """Resolve ``meter`` or ``node`` (exactly one) to the meters whose sum is reported."""
    if (meter is None) == (node is None):
        raise ReportInputError("give exactly one of 'meter' and 'node'")
    members = await memberships(conn)
    if meter is not None:
        if not any(m.meter_id == meter for m in members):
            raise ReportInputError(f"unknown meter {meter!r}")
        return Scope(meter, None, [meter], members)
    assert node is not None
    if node not in await node_paths(conn):
        raise ReportInputError(f"unknown node {node!r}")
    return Scope(None, node, counted_meters(members, node), members)


CONSUMPTION_COLUMNS = (
    "node",
    "line",
    "meter_id",
    "medium",
    "unit",
    "bucket",
    "value",
    "previous",
    "last_year",
    "estimated",
)


async def consumption_report(conn: Conn, node: str, period: Period, by: Bucket) -> Table:
    """Consumption of the node and every node below it, per medium and bucket, with the residual of each main meter.

    Each bucket is compared with the bucket before it (the previous day, month, or span of the
    same length) and with the same bucket one year earlier.
    """
    members = await memberships(conn)
    paths = await node_paths(conn)
    if node not in paths:
        raise ReportInputError(f"unknown node {node!r}")
    under = [m for m in members if in_subtree(m.node_path, node)]
    mains = sorted({m.submeter_of for m in members if m.submeter_of} & {m.meter_id for m in under})
    main_set = set(mains)
    wanted = sorted({m.meter_id for m in under} | {m.meter_id for m in members if m.submeter_of in main_set})
    periods = (period, period.previous(by), period.last_year())
    data = [await consumption_per_meter(conn, wanted, list(MEDIA.values()), p, by) for p in periods]
    # The arithmetic is pure and, for a large tree, not instant: off the event loop.
    rows = await asyncio.to_thread(consumption_rows, members, descendants(paths, node), mains, periods, by, data)
    meta: dict[str, Cell] = {"node": node, "from": _iso(period.first), "to": _iso(period.last), "by": by}
    return Table("consumption", meta, CONSUMPTION_COLUMNS, rows)


def consumption_rows(
    members: list[Membership],
    nodes: list[str],
    mains: list[str],
    periods: tuple[Period, Period, Period],
    by: Bucket,
    data: list[PerMeter],
) -> list[dict[str, Cell]]:
    """The consumption report's rows: each node's, then each main meter's residual."""
    buckets = [p.buckets(by) for p in periods]
    node_of = {m.meter_id: m.node_path for m in members}
    rolled = [roll_up(d.values, members, d.estimated if i == 0 else ()) for i, d in enumerate(data)]
    estimated_nodes = rolled[0][1]
    rows: list[dict[str, Cell]] = []

    def emit(
        name: str, line: str, meter_id: str | None, key: str, series: list[dict[Any, float]], est: set[Any]
    ) -> None:
        for med in MEDIA.values():
            for i, b in enumerate(buckets[0]):
                vals = [
                    s.get((key, med.name, bs[i])) if i < len(bs) else None
                    for s, bs in zip(series, buckets, strict=True)
                ]
                if all(v is None for v in vals):
                    continue
                rows.append(
                    {
                        "node": name,
                        "line": line,
                        "meter_id": meter_id,
                        "medium": med.name,
                        "unit": med.unit,
                        "bucket": b.isoformat(),
                        "value": rounded(vals[0], med.unit),
                        "previous": rounded(vals[1], med.unit),
                        "last_year": rounded(vals[2], med.unit),
                        "estimated": (key, med.name, b) in est and vals[0] is not None,
                    }
                )

    totals = [r[0] for r in rolled]
    for path in nodes:
        emit(path, "node", None, path, totals, estimated_nodes)
    subs: dict[str, set[str]] = {}
    for m in members:
        if m.submeter_of is not None:
            subs.setdefault(m.submeter_of, set()).add(m.meter_id)
    res = [residuals(d.values, members, mains) for d in data]
    for main in mains:
        inside = subs.get(main, set()) | {main}
        est = {(main, k[1], k[2]) for k in data[0].estimated if k[0] in inside}
        emit(node_of.get(main) or "", "residual", main, main, res, est)
    return rows


LOAD_CURVE_COLUMNS = ("interval_start", "interval_end", "value", "unit", "kw", "estimated", "meters")


def _kw(p: IntervalPoint) -> float:
    seconds = (p.interval_end - p.interval_start).total_seconds()
    return p.consumption * 3600.0 / seconds


async def load_curve_report(conn: Conn, where: Scope, med: Medium, period: Period) -> Table:
    """Interval consumption (and mean power) of a meter or a node, estimated intervals marked."""
    points = await load_curve(conn, where.meters, med, period)
    power_unit = "kW" if med.unit == "kWh" else f"{med.unit}/h"
    rows: list[dict[str, Cell]] = [
        {
            "interval_start": _iso(p.interval_start),
            "interval_end": _iso(p.interval_end),
            "value": rounded(p.consumption, med.unit),
            "unit": med.unit,
            "kw": rounded(_kw(p), "kW"),
            "estimated": p.estimated,
            "meters": p.meters,
        }
        for p in points
    ]
    meta: dict[str, Cell] = {
        **where.meta,
        "medium": med.name,
        "unit": med.unit,
        "power_unit": power_unit,
        "from": _iso(period.first),
        "to": _iso(period.last),
    }
    return Table("load_curve", meta, LOAD_CURVE_COLUMNS, rows)


DEMAND_COLUMNS = ("base_load", "base_load_at", "peak", "peak_at", "unit", "intervals")


async def demand_report(conn: Conn, where: Scope, med: Medium, period: Period, night: tuple[int, int]) -> Table:
    """Base load (the lowest mean power of an interval starting in the night hours) and peak demand (the highest)."""
    points = await load_curve(conn, where.meters, med, period)
    first, last = night
    nightly = [p for p in points if _in_hours(p.interval_start.hour, first, last)]
    base = min(nightly, key=_kw, default=None)
    peak = max(points, key=_kw, default=None)
    unit = "kW" if med.unit == "kWh" else f"{med.unit}/h"
    row: dict[str, Cell] = {
        "base_load": rounded(_kw(base), "kW") if base else None,
        "base_load_at": _iso(base.interval_start) if base else None,
        "peak": rounded(_kw(peak), "kW") if peak else None,
        "peak_at": _iso(peak.interval_start) if peak else None,
        "unit": unit,
        "intervals": len(points),
    }
    meta: dict[str, Cell] = {
        **where.meta,
        "medium": med.name,
        "from": _iso(period.first),
        "to": _iso(period.last),
        "night": f"{first:02d}-{last:02d}",
    }
    return Table("demand", meta, DEMAND_COLUMNS, [row])


def _in_hours(hour: int, first: int, last: int) -> bool:
    """Whether ``hour`` lies in [first, last), the range wrapping past midnight when first > last."""
    return first <= hour < last if first <= last else hour >= first or hour < last


TOU_COLUMNS = ("tariff", "value", "unit", "intervals")


async def tou_report(conn: Conn, where: Scope, med: Medium, period: Period, tou: TariffCalendar) -> Table:
    """Consumption split by the tariff the calendar gives each interval's start."""
    points = await load_curve(conn, where.meters, med, period)
    sums: dict[int, float] = {}
    counts: dict[int, int] = {}
    for p in points:
        t = tariff_at(tou, p.interval_start)
        sums[t] = sums.get(t, 0.0) + p.consumption
        counts[t] = counts.get(t, 0) + 1
    rows: list[dict[str, Cell]] = [
        {"tariff": t, "value": rounded(sums[t], med.unit), "unit": med.unit, "intervals": counts[t]}
        for t in sorted(sums)
    ]
    meta: dict[str, Cell] = {
        **where.meta,
        "medium": med.name,
        "calendar": tou.name,
        "from": _iso(period.first),
        "to": _iso(period.last),
    }
    return Table("tou", meta, TOU_COLUMNS, rows)


TOP_COLUMNS = ("rank", "meter_id", "node", "medium", "unit", "value", "estimated")


async def top_report(conn: Conn, node: str | None, med: Medium, period: Period, n: int) -> Table:
    """The ``n`` meters (under the node, or all) that used the most of the medium over the period."""
    members = await memberships(conn)
    if node is not None and node not in await node_paths(conn):
        raise ReportInputError(f"unknown node {node!r}")
    chosen = [m for m in members if node is None or in_subtree(m.node_path, node)]
    data = await consumption_per_meter(conn, [m.meter_id for m in chosen], [med], period, "total")
    node_of = {m.meter_id: m.node_path for m in chosen}
    ranked = sorted(data.values.items(), key=lambda kv: (-kv[1], kv[0][0]))[:n]
    rows: list[dict[str, Cell]] = [
        {
            "rank": i + 1,
            "meter_id": key[0],
            "node": node_of.get(key[0]),
            "medium": med.name,
            "unit": med.unit,
            "value": rounded(value, med.unit),
            "estimated": key in data.estimated,
        }
        for i, (key, value) in enumerate(ranked)
    ]
    meta: dict[str, Cell] = {
        "node": node,
        "medium": med.name,
        "n": n,
        "from": _iso(period.first),
        "to": _iso(period.last),
    }
    return Table("top", meta, TOP_COLUMNS, rows)


COMPLETENESS_COLUMNS = ("meter_id", "node", "quantity", "expected", "received", "estimated", "missing", "completeness")


async def completeness_report(conn: Conn, node: str | None, period: Period) -> Table:
    """Per meter and interval register: load-profile intervals expected, received, estimated and missing."""
    members = await memberships(conn)
    if node is not None and node not in await node_paths(conn):
        raise ReportInputError(f"unknown node {node!r}")
    chosen = [m for m in members if node is None or in_subtree(m.node_path, node)]
    node_of = {m.meter_id: m.node_path for m in chosen}
    rows: list[dict[str, Cell]] = [
        {
            "meter_id": c.meter_id,
            "node": node_of.get(c.meter_id),
            "quantity": c.quantity,
            "expected": c.expected,
            "received": c.received,
            "estimated": c.estimated,
            "missing": c.missing,
            "completeness": round(c.received / c.expected, 4) if c.expected else None,
        }
        for c in await completeness(conn, [m.meter_id for m in chosen], period)
    ]
    meta: dict[str, Cell] = {"node": node, "from": _iso(period.first), "to": _iso(period.last)}
    return Table("completeness", meta, COMPLETENESS_COLUMNS, rows)
