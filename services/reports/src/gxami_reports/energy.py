"""Media, rounding, report periods and the roll-up of meters over the site tree (pure functions)."""

from __future__ import annotations

import calendar
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Final, Literal

Bucket = Literal["total", "day", "month"]
BUCKETS: Final = ("total", "day", "month")


@dataclass(frozen=True, slots=True)
class Medium:
    """What a cumulative import register measures, and the unit the reports give it in."""

    name: str
    quantity: str
    unit: str


# Media stay apart: a node's electricity and its heat are both kWh but never summed together.
MEDIA: Final = {
    m.name: m
    for m in (
        Medium("electricity", "1-0:1.8.0", "kWh"),
        Medium("gas", "7-0:3.0.0", "m3"),
        Medium("water", "8-0:1.0.0", "m3"),
        Medium("heat", "6-0:1.0.0", "kWh"),
    )
}
MEDIUM_OF_QUANTITY: Final = {m.quantity: m for m in MEDIA.values()}

# The rounding rule: a value is rounded to its unit's resolution, 1 Wh for energy (and 1 W for
# power), 1 litre for volume. The register's own decimals are not kept by the database (values are
# doubles), so the unit decides. Sums, differences and residuals are computed unrounded and
# rounded once, at the end.
DECIMALS: Final = {"kWh": 3, "m3": 3, "kW": 3}


def rounded(value: float | None, unit: str) -> float | None:
    """The value at its unit's resolution (``None`` stays ``None``; -0.0 becomes 0.0)."""
    if value is None:
        return None
    return round(value, DECIMALS.get(unit, 3)) + 0.0


class ReportInputError(ValueError):
    """A report parameter that cannot be used: says which one and why."""


def medium(name: str) -> Medium:
    """The medium called ``name`` or a ReportInputError listing the known ones."""
    try:
        return MEDIA[name]
    except KeyError:
        raise ReportInputError(f"medium must be one of {', '.join(MEDIA)}, not {name!r}") from None


def day_start(d: date) -> datetime:
    return datetime(d.year, d.month, d.day, tzinfo=UTC)


def add_months(d: date, months: int) -> date:
    """The same day ``months`` later (earlier when negative), clamped to the month's length."""
    total = d.year * 12 + d.month - 1 + months
    year, month = divmod(total, 12)
    return date(year, month + 1, min(d.day, calendar.monthrange(year, month + 1)[1]))


@dataclass(frozen=True, slots=True)
class Period:
    """UTC days ``first`` .. ``last`` (inclusive), as the half-open instant range (start, end]."""

    first: date
    last: date

    def __post_init__(self) -> None:
        if self.last < self.first:
            raise ReportInputError(f"'to' ({self.last}) is before 'from' ({self.first})")

    @property
    def start(self) -> datetime:
        return day_start(self.first)

    @property
    def end(self) -> datetime:
        return day_start(self.last + timedelta(days=1))

    def previous(self, by: Bucket) -> Period:
        """The period one step earlier: each day's previous day, each month's previous month, or the span before."""
        if by == "month":
            return Period(add_months(self.first, -1), add_months(self.last + timedelta(days=1), -1) - timedelta(days=1))
        step = timedelta(days=1) if by == "day" else self.last - self.first + timedelta(days=1)
        return Period(self.first - step, self.last - step)

    def last_year(self) -> Period:
        """The same days one year earlier (29 February becomes the 28th)."""
        end = add_months(self.last + timedelta(days=1), -12) - timedelta(days=1)
        return Period(add_months(self.first, -12), end)

    def buckets(self, by: Bucket) -> list[date]:
        """The first day of each bucket, in order."""
        if by == "total":
            return [self.first]
        if by == "day":
            return [self.first + timedelta(days=i) for i in range((self.last - self.first).days + 1)]
        out: list[date] = []
        d = self.first.replace(day=1)
        while d <= self.last:
            out.append(d)
            d = add_months(d, 1)
        return out


def bucket_of(interval_end: datetime, by: Bucket, period: Period) -> date:
    """The bucket an interval ending at ``interval_end`` falls in (interval-ending convention)."""
    d = (interval_end.astimezone(UTC) - timedelta(microseconds=1)).date()
    if by == "total":
        return period.first
    if by == "month":
        return d.replace(day=1)
    return d


@dataclass(frozen=True, slots=True)
class Membership:
    """One meter's place: its node path (or None) and its main meter (or None)."""

    meter_id: str
    node_path: str | None
    submeter_of: str | None


def in_subtree(path: str | None, node: str) -> bool:
    return path is not None and (path == node or path.startswith(node + "/"))


def counted_meters(members: Iterable[Membership], node: str) -> list[str]:
    """Meters whose consumption adds up to the node's: those under it whose main meter is not under it too.

    A submeter under the same node as its main meter is already inside the main meter's reading;
    one whose main meter lies elsewhere (a floor's submeters of the building's main) counts.
    """
    under = {m.meter_id: m for m in members if in_subtree(m.node_path, node)}
    return sorted(mid for mid, m in under.items() if m.submeter_of is None or m.submeter_of not in under)


def descendants(paths: Iterable[str], node: str) -> list[str]:
    """The node and every node below it, in path order."""
    return sorted({p for p in paths if in_subtree(p, node)})


Key = tuple[str, str, date]  # (meter id, medium name, bucket)


def ancestors(path: str) -> list[str]:
    """The node and every node above it: a/b/c -> [a, a/b, a/b/c]."""
    parts = path.split("/")
    return ["/".join(parts[: i + 1]) for i in range(len(parts))]


def counted_at(member: Membership, node_of: Mapping[str, str | None]) -> list[str]:
    """The nodes whose consumption includes this meter's: its node and those above it, except
    where its main meter is under the same node (then the main meter's reading holds it)."""
    if member.node_path is None:
        return []
    mine = ancestors(member.node_path)
    main_path = node_of.get(member.submeter_of) if member.submeter_of is not None else None
    if main_path is None:
        return mine
    theirs = set(ancestors(main_path))
    return [a for a in mine if a not in theirs]


def roll_up(
    per_meter: Mapping[Key, float], members: Iterable[Membership], keys: Iterable[Key] = ()
) -> tuple[dict[tuple[str, str, date], float], set[tuple[str, str, date]]]:
    """(node, medium, bucket) -> consumption for every node at once, in one pass over the meters;
    and the (node, medium, bucket) whose sum includes one of ``keys`` (the estimated ones)."""
    listed = list(members)
    node_of = {m.meter_id: m.node_path for m in listed}
    where = {m.meter_id: counted_at(m, node_of) for m in listed}
    totals: dict[tuple[str, str, date], float] = defaultdict(float)
    for (meter_id, medium_name, bucket), value in per_meter.items():
        for node in where.get(meter_id, ()):
            totals[(node, medium_name, bucket)] += value
    flagged = {(node, k[1], k[2]) for k in keys for node in where.get(k[0], ())}
    return dict(totals), flagged


def node_totals(
    per_meter: Mapping[Key, float], members: Iterable[Membership], node: str
) -> dict[tuple[str, date], float]:
    """(medium, bucket) -> consumption of one node: the sum over its counted meters."""
    totals, _ = roll_up(per_meter, members)
    return {(med, b): v for (n, med, b), v in totals.items() if n == node}


def residuals(
    per_meter: Mapping[Key, float], members: Iterable[Membership], mains: Iterable[str]
) -> dict[tuple[str, str, date], float]:
    """(main meter, medium, bucket) -> the unmetered residual: the main meter minus the sum of its submeters.

    Only a main meter's own medium counts (a gas submeter of an electricity main is not subtracted);
    a bucket where the main has no data has no residual.
    """
    subs: dict[str, list[str]] = defaultdict(list)
    for m in members:
        if m.submeter_of is not None:
            subs[m.submeter_of].append(m.meter_id)
    own: dict[str, list[tuple[str, date, float]]] = defaultdict(list)
    for (meter_id, medium_name, bucket), value in per_meter.items():
        own[meter_id].append((medium_name, bucket, value))
    out: dict[tuple[str, str, date], float] = {}
    for main in mains:
        for medium_name, bucket, value in own.get(main, []):
            sub_sum = sum(per_meter.get((s, medium_name, bucket), 0.0) for s in subs.get(main, []))
            out[(main, medium_name, bucket)] = value - sub_sum
    return out
