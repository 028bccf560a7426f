"""What the scheduler plans to do: every run of a group's meters in a time range, from the registry.

Nothing is claimed or emitted. A meter's first run is its stored ``next_due_at`` (with its stored
class and purposes: what the next claim will do); later runs follow its named schedules, or its
plain ``schedule`` interval on the interval boundaries (``planner.next_slot``) when it has none.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime

from gxami_scheduler.planner import next_slot
from gxami_scheduler.registry import DbConn, plan_of, split_options
from gxami_scheduler.schedules import MeterPlan, PlannedRun, PriorityClass


@dataclass(frozen=True, slots=True)
class RegistryEntry:
    """A polled meter's registry row and schedule state, as far as the preview needs them."""

    meter_id: str
    interval_s: int
    purposes: tuple[str, ...]
    plan: MeterPlan | None
    next_due_at: datetime
    priority: PriorityClass
    due_purposes: tuple[str, ...] | None


def meter_runs(entry: RegistryEntry, start: datetime, end: datetime) -> Iterator[PlannedRun]:
    """The runs of one meter from ``start`` up to and including ``end``."""
    first = max(entry.next_due_at, start)
    if first > end:
        return
    yield PlannedRun(first, entry.meter_id, (), entry.due_purposes or entry.purposes, entry.priority)
    if entry.plan is not None:
        yield from entry.plan.runs(entry.meter_id, first, end)
        return
    at = next_slot(first, entry.interval_s)
    while at <= end:
        yield PlannedRun(at, entry.meter_id, (), entry.purposes, PriorityClass.INTERVAL)
        at = next_slot(at, entry.interval_s)


def planned_work(entries: Sequence[RegistryEntry], start: datetime, end: datetime) -> list[PlannedRun]:
    """All runs of the meters in the range, in claim order (time, then class highest first, then meter)."""
    runs = [run for entry in entries for run in meter_runs(entry, start, end)]
    return sorted(runs, key=lambda r: (r.at, -int(r.priority), r.meter_id))


async def registry_entries(conn: DbConn, group: str | None) -> list[RegistryEntry]:
    """The enabled, polled meters of ``group`` (all groups: None) with their schedule rows."""
    rows = await conn.fetch(
        "SELECT m.meter_id, m.interval_s, m.options, s.next_due_at, s.priority, s.due_purposes"
        " FROM meters m JOIN meter_schedule s ON s.meter_id = m.meter_id"
        " WHERE m.enabled AND ($1::text IS NULL OR m.meter_group = $1) ORDER BY m.meter_id",
        group,
    )
    out = []
    for r in rows:
        _, purposes = split_options(r["options"])
        plan, _ = plan_of(r["options"])
        out.append(
            RegistryEntry(
                meter_id=r["meter_id"],
                interval_s=r["interval_s"],
                purposes=tuple(purposes),
                plan=plan,
                next_due_at=r["next_due_at"],
                priority=PriorityClass(r["priority"]),
                due_purposes=tuple(r["due_purposes"]) if r["due_purposes"] else None,
            )
        )
    return out


def format_runs(runs: Sequence[PlannedRun]) -> str:
    """Planned runs as an aligned text table: TIME (UTC), METER, PRIORITY, PURPOSES."""
    cells = [["TIME", "METER", "PRIORITY", "PURPOSES"]]
    cells += [[r.at.isoformat(), r.meter_id, r.priority.label, ",".join(r.purposes)] for r in runs]
    widths = [max(len(row[i]) for row in cells) for i in range(4)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells)
