"""The edge collector's local schedule: it keeps reading its site's meters when the scheduler's jobs stop.

The rule (README "Edge collectors"). The scheduler stays the one that plans reads; the edge plans
on its own only while the scheduler looks away, and then only the reads the scheduler would have
asked for:

* *Away*: no read job from the scheduler (one still before its deadline) has reached this
  collector for ``autonomous_after`` seconds (``GXAMI_EDGE_AUTONOMOUS_AFTER``, 2 minutes), counted
  from the collector's start. Both an unreachable scheduler and a cut uplink look like this.
* *Due*: while away, a polled, enabled meter of the site is read once per interval slot (slots end
  on the clock as the scheduler's do: ``floor(t / interval) * interval``), no sooner than
  ``min(autonomous_after, interval / 2)`` after the slot began, and only if no read of it (the
  scheduler's or a local one) was started in that slot: a late scheduler job of the slot wins,
  and a meter is not read twice for one slot by this collector (when reads started is kept on
  disk, so across a restart too). So a healthy scheduler, whose
  jobs come at the start of each slot, never sees a local read, however long the quiet between
  its slots; a meter the scheduler holds back (retry backoff after failures) may be tried once
  per slot locally while the scheduler is quiet.
* *What*: the meter's purposes from its fleet entry; the load profile from where the last good
  read of it left off (kept on disk), else ``LOCAL_HISTORY`` back. The job goes through the same
  reader and the same spool as the scheduler's jobs, so it produces the same readings, events and
  job result (job id ``local-...``; the scheduler logs such a result and leaves the meter's
  schedule alone, being no job it waits for).
* *Back*: the first fresh job from the scheduler ends the local schedule. The scheduler then asks
  for the load profile from the last point *it* knows of, so the intervals read locally are read
  once more: the same values on the same natural key, which ingest stores once.

The site's meters come from ``ami.fleet`` (:class:`SiteFleet`, fed by the collector's
:class:`~gxami_collector.fleet_cache.FleetFollower`) and are kept in ``edge-fleet.json`` in the
spool folder, so a collector restarted while the uplink is down still knows what to read.
"""

from __future__ import annotations

import json
import logging
import math
import os
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from prometheus_client import Counter, Gauge
from pydantic import ValidationError

from gxami_collector.fleet_cache import FleetDirectory
from gxami_contracts import FleetEntry, ReadJob
from gxami_runtime.kafka import describe_validation_error

log = logging.getLogger("gxami.collector.edge")

STATE_FILE = "edge-fleet.json"
# The load profile asked of a meter read locally with no earlier good read on record.
LOCAL_HISTORY = timedelta(days=1)
LOCAL_JOB_PREFIX = "local-"

AUTONOMOUS = Gauge("gxami_collector_edge_autonomous", "1 while the edge reads on its local schedule")
LOCAL_JOBS = Counter("gxami_collector_edge_local_jobs_total", "Read jobs the edge planned on its own")
SITE_METERS = Gauge("gxami_collector_edge_site_meters", "Meters of this site in the edge's local fleet copy")


class SiteFleet(FleetDirectory):
    """The :class:`FleetDirectory` of one site's meters, with a copy on disk (see :meth:`save`)."""

    def __init__(self, site: str, path: Path) -> None:
        super().__init__()
        self.site = site
        self.path = path
        self.profile_to: dict[str, datetime] = {}  # meter id -> end of its last good load-profile read
        # meter id -> when its last read (the scheduler's or a local one) started: kept on disk so
        # that a restarted edge does not read a meter twice in one slot.
        self.started: dict[str, datetime] = {}
        self.dirty = False
        self._unconfirmed: set[str] = set()  # loaded from disk, not yet seen again on the topic

    def put(self, entry: FleetEntry) -> None:
        """Keep the entry if it is this site's; a meter moved to another site is forgotten."""
        if entry.site != self.site:
            self.remove(entry.meter_id)
            return
        dirty = self.dirty or self.get(entry.meter_id) != entry
        horizon, started = self.profile_to.get(entry.meter_id), self.started.get(entry.meter_id)
        super().put(entry)  # which removes the old entry first (and with it what we know of its reads)
        if horizon is not None:
            self.profile_to[entry.meter_id] = horizon
        if started is not None:
            self.started[entry.meter_id] = started
        self.dirty = dirty
        SITE_METERS.set(len(self))

    def remove(self, meter_id: str) -> None:
        self._unconfirmed.discard(meter_id)
        if self.get(meter_id) is not None:
            self.dirty = True
            self.profile_to.pop(meter_id, None)
            self.started.pop(meter_id, None)
        super().remove(meter_id)
        SITE_METERS.set(len(self))

    def meters(self) -> list[FleetEntry]:
        """The site's entries, by meter id."""
        return sorted((e for e in self._entries.values()), key=lambda e: e.meter_id)

    def confirm(self) -> int:
        """Drop entries loaded from disk that the topic, now read to its end, no longer has; how many."""
        gone = sorted(self._unconfirmed)
        for meter_id in gone:
            self.remove(meter_id)
        return len(gone)

    def read_up_to(self, meter_id: str, profile_to: datetime) -> None:
        """A good read of ``meter_id`` covered its load profile up to ``profile_to``."""
        if self.get(meter_id) is not None and self.profile_to.get(meter_id, profile_to) <= profile_to:
            self.profile_to[meter_id] = profile_to
            self.dirty = True

    def mark_started(self, meter_id: str, at: datetime) -> None:
        """A read of ``meter_id`` started at ``at``."""
        self.started[meter_id] = at
        self.dirty = True

    def load(self) -> None:
        """Read the copy on disk (blocking: call it in a thread); a damaged copy is logged and left out."""
        try:
            data: Any = json.loads(self.path.read_text(encoding="utf-8"))
            entries = data["entries"]
            times = {name: data.get(name, {}) for name in ("profile_to", "started")}
        except FileNotFoundError:
            return
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning(
                "the local fleet copy is unreadable; starting without it",
                extra={"path": str(self.path), "error": type(exc).__name__},
            )
            return
        for raw in entries if isinstance(entries, list) else []:
            try:
                entry = FleetEntry.model_validate(raw)
            except ValidationError as exc:
                log.warning(
                    "a meter of the local fleet copy is refused", extra={"error": describe_validation_error(exc)}
                )
                continue
            self.put(entry)
            self._unconfirmed.add(entry.meter_id)
        for name, target in (("profile_to", self.profile_to), ("started", self.started)):
            given = times[name]
            for meter_id, ts in given.items() if isinstance(given, dict) else ():
                if self.get(meter_id) is not None:
                    try:
                        target[meter_id] = datetime.fromisoformat(ts)
                    except (TypeError, ValueError):
                        continue
        self.dirty = False
        log.info("local fleet copy loaded", extra={"meters": len(self), "site": self.site})

    def snapshot(self) -> bytes:
        """The copy to write (on the event loop: the directory is not to be read from another thread)."""
        data = {
            "site": self.site,
            "entries": [e.model_dump(mode="json") for e in self.meters()],
            "profile_to": {m: ts.isoformat() for m, ts in sorted(self.profile_to.items())},
            "started": {m: ts.isoformat() for m, ts in sorted(self.started.items()) if self.get(m) is not None},
        }
        self.dirty = False
        return json.dumps(data).encode()

    def write(self, snapshot: bytes) -> None:
        """Write a snapshot (blocking: call it in a thread): a temporary file, fsynced, renamed into place."""
        tmp = self.path.with_name(self.path.name + ".tmp")
        with tmp.open("wb") as fh:
            fh.write(snapshot)
            fh.flush()
            os.fsync(fh.fileno())
        tmp.replace(self.path)


@dataclass(frozen=True, slots=True)
class LocalPolicy:
    """The knobs of the local schedule."""

    autonomous_after_s: float = 120.0
    job_timeout_s: float = 300.0


def slot_start(now: datetime, interval_s: int) -> datetime:
    """Start of the interval slot holding ``now`` (slots end on the clock, as the scheduler's)."""
    epoch = math.floor(now.timestamp())
    return datetime.fromtimestamp(epoch - epoch % interval_s, UTC)


class EdgeSchedule:
    """Decides, from the jobs seen and the site's fleet, which meters the edge reads on its own now."""

    def __init__(self, fleet: SiteFleet, policy: LocalPolicy, started: datetime) -> None:
        self.fleet = fleet
        self.policy = policy
        self.last_scheduler_job = started
        self._autonomous = False

    @property
    def autonomous(self) -> bool:
        """True from the first local job until the scheduler's next fresh job."""
        return self._autonomous

    def _set_autonomous(self, on: bool) -> None:
        if on == self._autonomous:
            return
        self._autonomous = on
        AUTONOMOUS.set(1 if on else 0)
        if on:
            log.warning(
                "no read jobs from the scheduler; reading on the local schedule",
                extra={"since": self.last_scheduler_job.isoformat(), "meters": len(self.fleet)},
            )
        else:
            log.info("read jobs from the scheduler again; local schedule stopped")

    def scheduler_job(self, job: ReadJob, now: datetime) -> None:
        """A job fetched from the site's topic; one past its deadline (a backlog) says nothing."""
        if job.deadline < now:
            return
        self.last_scheduler_job = max(self.last_scheduler_job, now)
        self.fleet.mark_started(job.meter_id, now)
        self._set_autonomous(False)

    def finished(self, job: ReadJob, ok: bool) -> None:
        """A job (either kind) is done; a good one moves the meter's load-profile horizon."""
        if ok and job.profile_to is not None and "load-profile" in job.purposes:
            self.fleet.read_up_to(job.meter_id, job.profile_to)

    def due(self, now: datetime) -> list[ReadJob]:
        """The local jobs to run now (none while the scheduler's jobs come); each is marked started."""
        if (now - self.last_scheduler_job).total_seconds() < self.policy.autonomous_after_s:
            return []
        jobs = [self._job(e, now) for e in self._due_meters(self.fleet.meters(), now)]
        for job in jobs:
            self.fleet.mark_started(job.meter_id, now)
        if jobs:
            self._set_autonomous(True)
            LOCAL_JOBS.inc(len(jobs))
        return jobs

    def _due_meters(self, entries: Iterable[FleetEntry], now: datetime) -> Iterable[FleetEntry]:
        for e in entries:
            if e.connection != "poll" or not e.enabled:
                continue
            slot = slot_start(now, e.interval_s)
            grace = timedelta(seconds=min(self.policy.autonomous_after_s, e.interval_s / 2))
            last = self.fleet.started.get(e.meter_id)
            if now >= slot + grace and (last is None or last < slot):
                yield e

    def _job(self, e: FleetEntry, now: datetime) -> ReadJob:
        start = self.fleet.profile_to.get(e.meter_id, now - LOCAL_HISTORY)
        return ReadJob(
            job_id=f"{LOCAL_JOB_PREFIX}{uuid.uuid4().hex}",
            meter_id=e.meter_id,
            link_id=e.link_id,
            protocol=e.protocol,
            url=e.url,
            profile=e.profile,
            options=dict(e.options),
            purposes=list(e.purposes),
            profile_from=min(start, now),
            profile_to=now,
            issued_at=now,
            deadline=now + timedelta(seconds=self.policy.job_timeout_s),
        )
