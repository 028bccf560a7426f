"""Running one read job: a meter session through its driver, turned into messages (readings, events).

Every failure becomes a typed error in the job result; nothing here raises.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from prometheus_client import Counter
from pydantic import ValidationError

from gxami_collector.batches import reading_batch
from gxami_collector.networks import MeterNetworks
from gxami_collector.secret_store import SecretStore
from gxami_contracts import JobResult, JobStatus, MeterEvent, ReadingBatch, ReadJob
from gxami_contracts.messages import FIRST_INSTANT, LAST_INSTANT
from gxami_runtime.kafka import describe_validation_error
from gxcore.drivers import Driver, MeterEventRecord, MeterTarget, PointProblem, ReadRequest, load_driver
from gxcore.drivers.dlms.counter_file import JsonInvocationCounters
from gxcore.errors import GxError
from gxcore.media import Medium
from gxcore.profiles import DeviceProfile, ProfileCatalog
from gxcore.protocols.dlms.invocation import InvocationCounterStore
from gxcore.readings import Reading

log = logging.getLogger("gxami.collector")
READINGS_REFUSED = Counter(
    "gxami_collector_readings_refused_total",
    "Readings a driver returned that the contract refuses (NaN, infinities, bad names)",
)
POINT_PROBLEMS = Counter(
    "gxami_collector_point_problems_total",
    "Profile points a read gave no reading for (ReadResult.problems), by protocol",
    ["protocol"],
)


@dataclass(frozen=True, slots=True)
class JobOutcome:
    """What a job produced: readings (possibly none), meter events (possibly none) and its result."""

    batch: ReadingBatch | None
    result: JobResult
    events: tuple[MeterEvent, ...] = ()


def _report_problems(job: ReadJob, problems: list[PointProblem]) -> None:
    """Log each point a read gave nothing for, with the meter, and count them (the good readings go on)."""
    if not problems:
        return
    POINT_PROBLEMS.labels(protocol=job.protocol).inc(len(problems))
    for problem in problems:
        log.warning(
            "meter %s: no reading: %s",
            job.meter_id,
            problem.describe(),
            extra={"meter_id": job.meter_id, "protocol": job.protocol, "quantity": problem.quantity},
        )


def meter_event(job: ReadJob, record: MeterEventRecord) -> MeterEvent:
    """The contract message for one event a driver read; ``data`` holds only what identifies it.

    Nothing job-specific goes into the message: the same event read by a later job must be the
    same message, so that ingest sees a redelivery, not a conflicting revision.
    """
    data: dict[str, str | int | float | bool | None] = {
        **record.extra,
        "source": record.source,
        "protocol": job.protocol,
    }
    if record.code is not None:
        data["code"] = record.code
    return MeterEvent(
        event_id=record.event_id,
        meter_id=job.meter_id,
        ts=record.timestamp,
        kind=record.kind,
        severity=record.severity,
        data=data,
    )


def _batch(job: ReadJob, readings: list[Reading], collected_at: datetime) -> ReadingBatch | None:
    """The job's reading batch, made once from the driver's readings (:func:`reading_batch`); a reading
    the contract refuses (a NaN or infinite value a meter sent as a float, a malformed quantity from a
    plug-in driver) is left out and logged, the others kept."""
    batch, refused = reading_batch(
        readings, batch_id=job.job_id, meter_id=job.meter_id, job_id=job.job_id, collected_at=collected_at
    )
    for r, reason in refused:
        READINGS_REFUSED.inc()
        log.warning(
            "reading outside the contract; not published",
            extra={
                "meter_id": job.meter_id,
                "protocol": job.protocol,
                "quantity": r.quantity,
                "error": reason,
            },
        )
    return batch


def _events(job: ReadJob, records: list[MeterEventRecord]) -> tuple[MeterEvent, ...]:
    out: list[MeterEvent] = []
    for record in records:
        try:
            out.append(meter_event(job, record))
        except ValidationError as exc:  # a driver bug: keep the readings and the other events
            log.warning(
                "driver produced an event outside the contract; not published",
                extra={"meter_id": job.meter_id, "protocol": job.protocol, "error": describe_validation_error(exc)},
            )
    return tuple(out)


def _meter_time(job: ReadJob, meter_time: datetime | None) -> datetime | None:
    """The meter's clock for the job result, or None when it lies outside what the contract carries
    (a meter set to 9999-12-31): the readings still go out, and the odd clock is logged."""
    if meter_time is None or FIRST_INSTANT <= meter_time <= LAST_INSTANT:
        return meter_time
    log.warning(
        "meter clock outside the contract's range; left out of the job result",
        extra={"meter_id": job.meter_id, "meter_time": meter_time.isoformat()},
    )
    return None


def _collector_time(
    meter_time: datetime | None, read_at: datetime | None, started: datetime, finished: datetime
) -> datetime | None:
    """The collector's clock when the meter's clock was read: the driver's stamp, or else the middle
    of the session (a driver that does not stamp: the drift is then off by half the session at most)."""
    if meter_time is None:
        return None
    if read_at is not None and started <= read_at <= finished:
        return read_at
    return started + (finished - started) / 2


class MeterReader:
    """Reads meters for jobs: resolves profile, driver and secrets, bounds the session in time."""

    def __init__(
        self,
        profiles: ProfileCatalog,
        secrets: SecretStore,
        *,
        exchange_timeout: float,
        session_timeout: float,
        invocation_counters: Path | None = None,
        networks: MeterNetworks | None = None,
        counter_store: InvocationCounterStore | None = None,
    ) -> None:
        self._networks = networks if networks is not None else MeterNetworks.of()  # loopback-only default
        self._profiles = profiles
        self._secrets = secrets
        self._drivers: dict[str, Driver] = {}
        self._exchange_timeout = exchange_timeout
        self._session_timeout = session_timeout
        # A durable store or none: without one a ciphered read is a configuration error, never a
        # session on counters kept only in memory.
        # ``counter_store`` (the PostgreSQL one, for many pods) wins over the file.
        self._counters: InvocationCounterStore | None = counter_store
        if counter_store is None and invocation_counters is not None:
            try:
                invocation_counters.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            except OSError as exc:  # ciphered jobs will then fail as configuration errors, plain ones run
                log.warning(
                    "cannot create the invocation counters folder",
                    extra={"path": str(invocation_counters.parent), "error": exc.strerror},
                )
            self._counters = JsonInvocationCounters(invocation_counters)

    @property
    def exchange_timeout(self) -> float:
        return self._exchange_timeout

    @property
    def session_timeout(self) -> float:
        return self._session_timeout

    async def meter(
        self,
        meter_id: str,
        url: str,
        protocol: str,
        profile: str,
        options: Mapping[str, str],
        *,
        check_url: bool = True,
    ) -> tuple[Driver, DeviceProfile, MeterTarget]:
        """The driver, profile and target (with its secrets) for one meter session; the URL checked
        against the allow-list before anything connects. Raises GxError (configuration) when refused."""
        if check_url:
            await self._networks.check(url)  # a job or a command names any URL it likes
        found = self._profiles.get(profile)
        driver = self.driver(protocol)
        return driver, found, MeterTarget(meter_id, url, options, self._secrets.for_meter(meter_id))

    def driver(self, protocol: str) -> Driver:
        if protocol not in self._drivers:
            driver = load_driver(protocol)
            if self._counters is not None and hasattr(driver, "counters"):
                driver.counters = self._counters  # drivers of ciphered protocols keep counters here
            self._drivers[protocol] = driver
        return self._drivers[protocol]

    async def run(self, job: ReadJob, medium: Medium | None = None) -> JobOutcome:
        """Run ``job``; with ``medium``, over that open connection (a meter that dialled in), left open."""
        started = datetime.now(UTC)
        if started > job.deadline:
            late = f"meter {job.meter_id}: job expired before it ran (deadline {job.deadline.isoformat()})"
            return self._failed(job, started, "expired", late)
        try:
            # A dial-in meter's URL is only where it calls (medium given): nothing connects to it.
            driver, profile, target = await self.meter(
                job.meter_id, job.url, job.protocol, job.profile, job.options, check_url=medium is None
            )
            request = ReadRequest(frozenset(job.purposes), job.profile_from, job.profile_to)
            async with asyncio.timeout(self._session_timeout):
                if medium is None:  # a polled meter: the driver opens the job's URL (plug-ins may take no medium)
                    result = await driver.read(target, profile, request, timeout=self._exchange_timeout)
                else:
                    result = await driver.read(target, profile, request, timeout=self._exchange_timeout, medium=medium)
        except GxError as exc:
            if exc.meter_id is None:
                exc.meter_id = job.meter_id
            return self._failed(job, started, exc.kind, str(exc))
        except TimeoutError:
            return self._failed(
                job, started, "timeout", f"meter {job.meter_id}: session exceeded {self._session_timeout:.0f} s"
            )
        except Exception as exc:  # a driver bug must not stop the collector
            log.exception("driver failed unexpectedly", extra={"meter_id": job.meter_id, "protocol": job.protocol})
            return self._failed(job, started, "internal", f"meter {job.meter_id}: {type(exc).__name__} in driver")
        _report_problems(job, result.problems)
        events = _events(job, result.events)
        finished = datetime.now(UTC)
        meter_time = _meter_time(job, result.meter_time)
        batch = _batch(job, result.readings, finished)
        # A load profile that failed while registers were read: the readings go out, but the job is
        # an error, so the scheduler keeps the meter's profile window where it was (read again next time).
        failed = result.load_profile_failures[0] if result.load_profile_failures else None
        if failed is not None and failed.meter_id is None:
            failed.meter_id = job.meter_id
        return JobOutcome(
            batch,
            JobResult(
                job_id=job.job_id,
                meter_id=job.meter_id,
                link_id=job.link_id,
                status=JobStatus.OK if failed is None else JobStatus.ERROR,
                attempt=job.attempt,
                started_at=started,
                finished_at=finished,
                readings_count=batch.count if batch is not None else 0,
                events_count=len(events),
                meter_time=meter_time,
                collector_time=_collector_time(meter_time, result.clock_read_at, started, finished),
                error_kind=failed.kind if failed is not None else None,
                error_message=f"load profile not read: {failed}".replace("\x00", "\\0")[:2000] if failed else None,
            ),
            events,
        )

    @staticmethod
    def _failed(job: ReadJob, started: datetime, kind: str, message: str) -> JobOutcome:
        return JobOutcome(
            None,
            JobResult(
                job_id=job.job_id,
                meter_id=job.meter_id,
                link_id=job.link_id,
                status=JobStatus.ERROR,
                attempt=job.attempt,
                started_at=started,
                finished_at=datetime.now(UTC),
                readings_count=0,
                error_kind=kind,
                error_message=message.replace("\x00", "\\0")[:2000],  # the contract (a text column) refuses NUL
            ),
        )
