"""The meter registry in the database: fleet import, listing, and on-demand reads.

Purposes have no column of their own in ``meters`` yet; they are kept in its ``options``
JSON under ``PURPOSES_KEY``, a name fleet options cannot have (option names start with a
letter). How a meter is reached (``connection``) and the identities a listener matches it on
(``system_title``, ``serial``, ``wmbus_id``) are kept the same way under ``CONTACT_KEY``, so
no migration was needed. ``stored_options``, ``split_options`` and ``contact_of`` are the only
places that know. Meters that push or dial in get no poll schedule (``meter_schedule`` row):
the scheduler never emits read jobs for them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from typing import Any, TypeAlias

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from gxami_scheduler.fleet import DEFAULT_PURPOSES, FleetMeter
from gxami_scheduler.planner import first_due
from gxami_scheduler.schedules import MeterPlan, PriorityClass
from gxcore.profiles import DeviceProfile

PURPOSES_KEY = "_purposes"
CONTACT_KEY = "_contact"
# The meter's named schedules and network segment, resolved from the fleet file (gxami_scheduler.schedules).
PLAN_KEY = "_plan"
CONTACT_FIELDS = ("connection", "system_title", "serial", "wmbus_id")

# A connection of its own or one borrowed from a pool: the queries here take either.
DbConn: TypeAlias = asyncpg.Connection | PoolConnectionProxy


def stored_options(
    options: Mapping[str, str],
    purposes: Sequence[str],
    contact: Mapping[str, str] | None = None,
    plan: Mapping[str, Any] | None = None,
) -> str:
    """The ``meters.options`` JSON for a meter's options, purposes, (non-default) contact fields and plan."""
    data: dict[str, object] = {**options, PURPOSES_KEY: list(purposes)}
    if contact:
        data[CONTACT_KEY] = dict(contact)
    if plan:
        data[PLAN_KEY] = dict(plan)
    return json.dumps(data, sort_keys=True)


def meter_plan_json(meter: FleetMeter) -> dict[str, Any] | None:
    """What ``meters.options`` keeps of a meter's named schedules and segment, or None when it has neither."""
    if not meter.plan and meter.segment is None:
        return None
    out: dict[str, Any] = {"schedules": MeterPlan(meter.plan).to_json()}
    if meter.segment is not None and meter.segment_limits is not None:
        out["segment"] = meter.segment
        out["segment_limits"] = meter.segment_limits.to_json()
    return out


def plan_of(raw: str | Mapping[str, Any] | None) -> tuple[MeterPlan | None, str | None]:
    """The meter's named schedules (None: its plain interval) and segment name back from ``meters.options``."""
    data: Any = json.loads(raw) if isinstance(raw, str) else dict(raw or {})
    plan = data.get(PLAN_KEY) if isinstance(data, dict) else None
    if not isinstance(plan, dict):
        return None, None
    segment = plan.get("segment")
    return MeterPlan.from_json(plan.get("schedules")), str(segment) if segment else None


def meter_contact(meter: FleetMeter) -> dict[str, str]:
    """The contact fields of a fleet meter that differ from a polled meter without identities."""
    out = {name: getattr(meter, name) for name in CONTACT_FIELDS}
    return {k: v for k, v in out.items() if v is not None and not (k == "connection" and v == "poll")}


def contact_of(raw: str | Mapping[str, Any] | None) -> dict[str, str]:
    """The contact fields back from ``meters.options``: ``connection`` always, identities where given."""
    data: Any = json.loads(raw) if isinstance(raw, str) else dict(raw or {})
    contact = data.get(CONTACT_KEY) if isinstance(data, dict) else None
    out = {"connection": "poll"}
    if isinstance(contact, dict):
        out.update({k: str(v) for k, v in contact.items() if k in CONTACT_FIELDS and v is not None})
    return out


def split_options(raw: str | Mapping[str, Any] | None) -> tuple[dict[str, str], list[str]]:
    """Options and purposes back from ``meters.options`` (JSON text as asyncpg returns it)."""
    data: Any = json.loads(raw) if isinstance(raw, str) else dict(raw or {})
    purposes = data.pop(PURPOSES_KEY, None) if isinstance(data, dict) else None
    if not isinstance(data, dict):
        data = {}
    data.pop(CONTACT_KEY, None)  # not a driver option: see contact_of
    data.pop(PLAN_KEY, None)  # nor is the plan: see plan_of
    options = {str(k): str(v) for k, v in data.items()}
    if not isinstance(purposes, list) or not purposes:
        purposes = list(DEFAULT_PURPOSES)
    return options, [str(p) for p in purposes]


@dataclass(frozen=True, slots=True)
class ImportSummary:
    """What a fleet import did."""

    total: int
    new: int

    @property
    def updated(self) -> int:
        """Meters that existed already (their registry entry now matches the file)."""
        return self.total - self.new

    def __str__(self) -> str:
        return f"imported {self.total} meters ({self.new} new, {self.updated} updated)"


_UPSERT = """
INSERT INTO meters AS m (meter_id, protocol, url, link_id, profile, meter_group, interval_s, options, enabled,
                         site)
SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::int[],
                     $8::jsonb[], $9::bool[], $10::text[])
ON CONFLICT (meter_id) DO UPDATE SET
    protocol = EXCLUDED.protocol, url = EXCLUDED.url, link_id = EXCLUDED.link_id,
    profile = EXCLUDED.profile, meter_group = EXCLUDED.meter_group, interval_s = EXCLUDED.interval_s,
    options = EXCLUDED.options, enabled = EXCLUDED.enabled, site = EXCLUDED.site, updated_at = now()
WHERE (m.protocol, m.url, m.link_id, m.profile, m.meter_group, m.interval_s, m.options, m.enabled, m.site)
      IS DISTINCT FROM (EXCLUDED.protocol, EXCLUDED.url, EXCLUDED.link_id, EXCLUDED.profile,
                        EXCLUDED.meter_group, EXCLUDED.interval_s, EXCLUDED.options, EXCLUDED.enabled,
                        EXCLUDED.site)
RETURNING m.meter_id, (xmax = 0) AS inserted
"""

_NEW_SCHEDULES = """
INSERT INTO meter_schedule (meter_id, next_due_at, priority, due_purposes)
SELECT u.meter_id, u.next_due_at, u.priority, string_to_array(nullif(u.purposes, ''), ',')
  FROM unnest($1::text[], $2::timestamptz[], $3::int[], $4::text[]) AS u(meter_id, next_due_at, priority, purposes)
ON CONFLICT (meter_id) DO NOTHING
"""

# A shorter interval in the file takes effect now, not after the old, longer wait. Not for meters
# with named schedules: their next run is their schedules' (a changed plan applies from the run after it).
_PULL_IN = f"""
UPDATE meter_schedule s SET next_due_at = $2::timestamptz + make_interval(secs => m.interval_s)
  FROM meters m
 WHERE m.meter_id = s.meter_id AND s.meter_id = ANY($1::text[])
   AND s.next_due_at > $2::timestamptz + make_interval(secs => m.interval_s)
   AND NOT coalesce((m.options -> '{PLAN_KEY}' -> 'schedules') <> '{{}}'::jsonb, false)
"""  # noqa: S608 - composed from a constant only


_UPSERT_PROFILES = """
INSERT INTO device_profiles (name, protocol, description, definition, updated_at)
SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::jsonb[]) AS p(name, protocol, description, definition),
       LATERAL (SELECT now()) AS t(updated_at)
ON CONFLICT (name) DO UPDATE
   SET protocol = EXCLUDED.protocol, description = EXCLUDED.description, definition = EXCLUDED.definition,
       updated_at = now()
 WHERE device_profiles.definition IS DISTINCT FROM EXCLUDED.definition
"""


_UPSERT_NODES = """
INSERT INTO hierarchy_nodes (node_path, parent_path, name, depth)
SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::int[])
ON CONFLICT (node_path) DO NOTHING
"""

_SET_MEMBERSHIP = """
INSERT INTO meter_nodes (meter_id, node_path, submeter_of)
SELECT * FROM unnest($1::text[], $2::text[], $3::text[])
ON CONFLICT (meter_id) DO UPDATE SET node_path = EXCLUDED.node_path, submeter_of = EXCLUDED.submeter_of
WHERE (meter_nodes.node_path, meter_nodes.submeter_of) IS DISTINCT FROM (EXCLUDED.node_path, EXCLUDED.submeter_of)
"""


def hierarchy_nodes(paths: Sequence[str]) -> list[tuple[str, str | None, str, int]]:
    """Every node the paths name, ancestors first: (path, parent path, name, depth)."""
    out: dict[str, tuple[str, str | None, str, int]] = {}
    for path in paths:
        parts = path.split("/")
        for depth in range(1, len(parts) + 1):
            node = "/".join(parts[:depth])
            out.setdefault(node, (node, "/".join(parts[: depth - 1]) or None, parts[depth - 1], depth))
    return sorted(out.values(), key=lambda n: (n[3], n[0]))


async def _import_hierarchy(conn: DbConn, meters: Sequence[FleetMeter]) -> None:
    # Nodes are only added here (a node left empty by the file stays, without meters); a meter's
    # place and main meter always follow the file.
    nodes = hierarchy_nodes(sorted({m.node for m in meters if m.node}))
    if nodes:
        await conn.execute(
            _UPSERT_NODES, [n[0] for n in nodes], [n[1] for n in nodes], [n[2] for n in nodes], [n[3] for n in nodes]
        )
    await conn.execute(
        _SET_MEMBERSHIP,
        [m.meter_id for m in meters],
        [m.node for m in meters],
        [m.submeter_of for m in meters],
    )


async def import_fleet(
    conn: DbConn, meters: Sequence[FleetMeter], now: datetime, profiles: Sequence[DeviceProfile] = ()
) -> ImportSummary:
    """Upsert the meters (and the device profiles they use), create schedules for new ones, in one transaction."""
    async with conn.transaction():
        if profiles:
            await conn.execute(
                _UPSERT_PROFILES,
                [p.name for p in profiles],
                [p.protocol for p in profiles],
                [p.description for p in profiles],
                [p.model_dump_json() for p in profiles],
            )
        rows = await conn.fetch(
            _UPSERT,
            [m.meter_id for m in meters],
            [m.protocol for m in meters],
            [m.address for m in meters],
            [m.link for m in meters],
            [m.profile for m in meters],
            [m.group for m in meters],
            [m.interval_s for m in meters],
            [stored_options(m.options, m.purposes, meter_contact(m), meter_plan_json(m)) for m in meters],
            [m.enabled for m in meters],
            [m.site for m in meters],
        )
        inserted = {r["meter_id"] for r in rows if r["inserted"]}
        changed = [r["meter_id"] for r in rows if not r["inserted"]]
        new = [m for m in meters if m.meter_id in inserted and m.polled]
        # A meter that now pushes or dials in is no longer polled: its schedule row goes (its
        # history of job results stays); one that is polled again gets a schedule anew.
        # Only rows that changed can have changed their connection.
        changed_set = set(changed)
        unpolled = [m.meter_id for m in meters if not m.polled and m.meter_id in changed_set]
        if unpolled:
            await conn.execute("DELETE FROM meter_schedule WHERE meter_id = ANY($1::text[])", unpolled)
        new.extend(m for m in meters if m.polled and m.meter_id in changed_set)  # DO NOTHING keeps existing ones
        firsts = [_first_run(m, now) for m in new]
        await conn.execute(
            _NEW_SCHEDULES,
            [m.meter_id for m in new],
            [at for at, _, _ in firsts],
            [priority for _, priority, _ in firsts],
            [purposes for _, _, purposes in firsts],
        )
        if changed:
            await conn.execute(_PULL_IN, changed, now)
        await _import_hierarchy(conn, meters)
    return ImportSummary(total=len(meters), new=len(inserted))


def _first_run(meter: FleetMeter, now: datetime) -> tuple[datetime, int, str]:
    """A new meter's first run: its named schedules' next one, else promptly (first_due) with its own purposes."""
    if meter.plan:
        run = MeterPlan(meter.plan).next_run(meter.meter_id, now)
        return run.at, int(run.priority), ",".join(run.purposes)
    return first_due(meter.meter_id, meter.interval_s, now), int(PriorityClass.INTERVAL), ""


_METER_COLUMNS = """
m.meter_id, m.protocol, m.url, m.link_id, m.profile, m.meter_group, m.interval_s, m.options, m.enabled,
m.site, m.created_at, m.updated_at, s.next_due_at, s.in_flight_job, s.in_flight_until, s.last_success_at,
s.last_error_at, s.last_error_kind, s.last_error, s.consecutive_failures, s.last_profile_ts
"""


def meter_json(row: asyncpg.Record) -> dict[str, Any]:
    """A registry row with its schedule state, as JSON-ready values (timestamps in ISO 8601)."""
    options, purposes = split_options(row["options"])
    out: dict[str, Any] = {}
    for key, value in row.items():
        if key == "options":
            continue
        out["group" if key == "meter_group" else key] = value.isoformat() if isinstance(value, datetime) else value
    out["options"] = options
    out["purposes"] = purposes
    out.update(contact_of(row["options"]))
    return out


async def list_meters(
    conn: DbConn, *, limit: int, after: str | None = None, group: str | None = None
) -> list[dict[str, Any]]:
    """One page of meters ordered by id, starting after ``after`` (keyset pagination)."""
    rows = await conn.fetch(
        f"SELECT {_METER_COLUMNS} FROM meters m LEFT JOIN meter_schedule s ON s.meter_id = m.meter_id"  # noqa: S608 - fixed column list, values are parameters
        " WHERE ($1::text IS NULL OR m.meter_id > $1) AND ($2::text IS NULL OR m.meter_group = $2)"
        " ORDER BY m.meter_id LIMIT $3",
        after,
        group,
        limit,
    )
    return [meter_json(r) for r in rows]


async def get_meter(conn: DbConn, meter_id: str) -> dict[str, Any] | None:
    """One meter with its schedule state, or None."""
    row = await conn.fetchrow(
        f"SELECT {_METER_COLUMNS} FROM meters m LEFT JOIN meter_schedule s ON s.meter_id = m.meter_id"  # noqa: S608 - fixed column list, values are parameters
        " WHERE m.meter_id = $1",
        meter_id,
    )
    return meter_json(row) if row is not None else None


class ReadRequestOutcome(Enum):
    QUEUED = "queued"
    IN_FLIGHT = "in-flight"
    UNKNOWN = "unknown"
    DISABLED = "disabled"


async def request_read(conn: DbConn, meter_id: str, now: datetime) -> ReadRequestOutcome:
    """Make a meter due now so the next tick emits a job for it."""
    async with conn.transaction():
        row = await conn.fetchrow(
            "SELECT m.enabled, s.in_flight_job, s.in_flight_until FROM meters m"
            " LEFT JOIN meter_schedule s ON s.meter_id = m.meter_id WHERE m.meter_id = $1",
            meter_id,
        )
        if row is None:
            return ReadRequestOutcome.UNKNOWN
        if not row["enabled"]:
            return ReadRequestOutcome.DISABLED
        await conn.execute(
            "INSERT INTO meter_schedule (meter_id, next_due_at, priority) VALUES ($1, $2, $3) ON CONFLICT (meter_id)"
            " DO UPDATE SET next_due_at = LEAST(meter_schedule.next_due_at, EXCLUDED.next_due_at),"
            " priority = GREATEST(meter_schedule.priority, EXCLUDED.priority)",
            meter_id,
            now,
            int(PriorityClass.ON_DEMAND),
        )
    until = row["in_flight_until"]
    in_flight = row["in_flight_job"] is not None and until is not None and until >= now
    return ReadRequestOutcome.IN_FLIGHT if in_flight else ReadRequestOutcome.QUEUED
