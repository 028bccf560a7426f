"""Pure scheduling rules: when a meter is due next, what a read job asks for, which shard owns a meter.

Nothing here touches the database, the broker or the clock: ``now`` is passed in, and every
"random" spread is a deterministic function of the meter id so that replicas and tests agree.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from gxami_contracts import ReadJob

# Load-profile intervals end on the clock (…:00, :15, :30); a new meter is read within this
# many seconds of being imported, spread so that a large import is not one burst.
FIRST_READ_SPREAD_S = 30.0

# Past this many doublings every realistic backoff has hit its cap; also keeps factor**n finite.
_MAX_DOUBLINGS = 64


# Meters that push are never read by a job, even if they have a schedule row (an on-demand read
# makes one): what they send is their reading, served by a push listener or a wM-Bus receiver
# (gxami_collector.wmbus_service), and a job would only wait for the next telegram. Their last
# contact is their newest reading, not a job result.
NEVER_POLLED: frozenset[str] = frozenset({"push"})


@dataclass(frozen=True, slots=True)
class SchedulePolicy:
    """The knobs of the schedule, from the settings."""

    job_timeout_s: float = 300.0
    # A result sent just before the job's deadline is still in transit at the deadline; the meter
    # is claimed again only after this much longer, so that such a result is not taken as lost.
    result_grace_s: float = 30.0
    history_days: float = 2.0
    backfill_max_days: float = 31.0
    backoff_base_s: float = 60.0
    backoff_factor: float = 2.0
    backoff_cap_s: float = 3600.0
    backoff_jitter: float = 0.2


@dataclass(frozen=True, slots=True)
class Shard:
    """This replica owns the meters whose ``shard_of(meter_id, count) == index``."""

    index: int = 0
    count: int = 1

    def owns(self, meter_id: str) -> bool:
        return self.count == 1 or shard_of(meter_id, self.count) == self.index


def shard_of(meter_id: str, count: int) -> int:
    """Stable shard of a meter: first 32 bits of md5(meter_id), big-endian, mod ``count``.

    md5 because PostgreSQL has it built in, so the claim query computes the very same number
    (``SHARD_SQL``); hashtext() is internal to PostgreSQL and may change between versions.
    """
    digest = hashlib.md5(meter_id.encode(), usedforsecurity=False).digest()
    return int.from_bytes(digest[:4], "big") % count


# The SQL twin of shard_of for a column or expression ``expr`` (a text value).
def shard_sql(expr: str, count_param: str) -> str:
    return f"(('x' || substr(md5({expr}), 1, 8))::bit(32)::bigint % {count_param})"


def spread(meter_id: str, salt: str) -> float:
    """A deterministic fraction in [0, 1) per meter and salt: the jitter source."""
    digest = hashlib.blake2b(f"{meter_id}\x00{salt}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def first_due(meter_id: str, interval_s: int, now: datetime) -> datetime:
    """When a newly imported meter is first read: promptly, spread over min(interval, 30 s)."""
    window = min(float(interval_s), FIRST_READ_SPREAD_S)
    return now + timedelta(seconds=spread(meter_id, "first") * window)


def next_slot(now: datetime, interval_s: int) -> datetime:
    """The next interval boundary strictly after ``now``: (floor(now / interval) + 1) * interval (UTC epoch)."""
    if interval_s <= 0:
        raise ValueError("interval must be positive")
    epoch = math.floor(now.timestamp())
    return datetime.fromtimestamp((epoch // interval_s + 1) * interval_s, UTC)


def backoff_delay(failures: int, meter_id: str, policy: SchedulePolicy) -> float:
    """Seconds to wait after ``failures`` consecutive failures (>= 1).

    base * factor**(failures - 1), capped, then shortened by up to ``backoff_jitter`` of itself,
    deterministically per meter and failure count, so meters that failed together spread out.
    """
    if failures < 1:
        raise ValueError("backoff applies from the first failure on")
    exponent = min(failures - 1, _MAX_DOUBLINGS)
    delay = min(policy.backoff_cap_s, policy.backoff_base_s * policy.backoff_factor**exponent)
    return delay * (1.0 - policy.backoff_jitter * spread(meter_id, f"backoff:{failures}"))


def profile_from(last_profile_ts: datetime | None, now: datetime, policy: SchedulePolicy) -> datetime:
    """Start of the load-profile range: the last stored point, or ``history_days`` back for a new meter,
    never further back than ``backfill_max_days`` and never in the future."""
    start = last_profile_ts if last_profile_ts is not None else now - timedelta(days=policy.history_days)
    earliest = now - timedelta(days=policy.backfill_max_days)
    return min(max(start, earliest), now)


@dataclass(frozen=True, slots=True)
class DueMeter:
    """A claimed meter: its registry entry and the schedule state the job depends on."""

    meter_id: str
    protocol: str
    url: str
    link_id: str
    profile: str
    interval_s: int
    options: Mapping[str, str] = field(default_factory=dict)
    purposes: Sequence[str] = ("billing", "load-profile")
    last_profile_ts: datetime | None = None
    consecutive_failures: int = 0
    # Set when the previous job's in-flight window expired without a result (lost job).
    expired_job: str | None = None
    # The edge site that reads the meter (jobs to ``<read-jobs>.<site>``); None: the central topic.
    site: str | None = None


@dataclass(frozen=True, slots=True)
class PlannedRead:
    """A job to emit and the schedule state to record for it before emitting."""

    job: ReadJob
    failures: int
    in_flight_until: datetime
    lost_previous: bool
    site: str | None = None


def plan_read(meter: DueMeter, now: datetime, job_id: str, policy: SchedulePolicy) -> PlannedRead:
    """The read job for a due meter. A lost previous job (no result in time) counts as a failure."""
    lost = meter.expired_job is not None
    failures = meter.consecutive_failures + (1 if lost else 0)
    deadline = now + timedelta(seconds=policy.job_timeout_s)
    job = ReadJob(
        job_id=job_id,
        meter_id=meter.meter_id,
        link_id=meter.link_id,
        protocol=meter.protocol,
        url=meter.url,
        profile=meter.profile,
        options=dict(meter.options),
        purposes=list(meter.purposes),
        profile_from=profile_from(meter.last_profile_ts, now, policy),
        profile_to=now,
        attempt=failures + 1,
        issued_at=now,
        deadline=deadline,
    )
    until = deadline + timedelta(seconds=policy.result_grace_s)
    return PlannedRead(job=job, failures=failures, in_flight_until=until, lost_previous=lost, site=meter.site)


@dataclass(frozen=True, slots=True)
class ScheduleUpdate:
    """What a job result changes in a meter's schedule."""

    meter_id: str
    ok: bool
    next_due_at: datetime
    consecutive_failures: int


def after_success(meter_id: str, interval_s: int, now: datetime) -> ScheduleUpdate:
    """A good read: failures reset, next read at the next interval boundary."""
    return ScheduleUpdate(meter_id, True, next_slot(now, interval_s), 0)


def after_failure(meter_id: str, failures_before: int, now: datetime, policy: SchedulePolicy) -> ScheduleUpdate:
    """A failed read: one more failure, next try after the backoff."""
    failures = failures_before + 1
    delay = backoff_delay(failures, meter_id, policy)
    return ScheduleUpdate(meter_id, False, now + timedelta(seconds=delay), failures)
