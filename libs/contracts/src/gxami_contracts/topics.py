"""The topic catalog: every topic's logical name, key, schema, producers, consumers and dead letters.

Physical names default to the logical ones and can be overridden per deployment
(``GXAMI_TOPIC_OVERRIDES``, handled by the runtime settings).
"""

from __future__ import annotations

from dataclasses import dataclass

from gxami_contracts.fleet import FleetEntry
from gxami_contracts.messages import (
    CommandResult,
    DeadLetter,
    JobResult,
    Message,
    MeterCommand,
    MeterEvent,
    ReadingBatch,
    ReadJob,
)

DEAD_LETTER = "ami.dead-letter"


@dataclass(frozen=True, slots=True)
class TopicSpec:
    """One topic: what flows on it and who touches it.

    ``producers`` and ``consumers`` are the services whose code publishes to or reads the topic
    today (``tests/test_topic_catalog.py`` scans the services and compares); ``planned_producers``
    and ``planned_consumers`` are the design's intentions that no code does yet, kept apart so the
    catalog never claims a flow that does not exist.
    """

    name: str
    model: type[Message]
    key: str
    partitions: int
    producers: tuple[str, ...]
    consumers: tuple[str, ...]
    dead_letter: str | None = DEAD_LETTER
    retention_ms: int | None = None
    compacted: bool = False
    # Copies of each partition in production (the Kubernetes KafkaTopics, and a dev broker as far as
    # it has brokers: see gxami_runtime.kafka.ensure_topics).
    replication_factor: int = 3  # cleanup.policy=compact: the latest record per key is kept for ever
    planned_producers: tuple[str, ...] = ()
    planned_consumers: tuple[str, ...] = ()

    @property
    def planned(self) -> bool:
        """True while no code produces to or consumes the topic (it exists for a coming feature)."""
        return not self.producers and not self.consumers


_DAY_MS = 86_400_000
# Retention: a job older than a day is past its deadline; readings, events and results are in the
# database within seconds, so a week covers an ingest outage or an edge uplink coming back; dead
# letters and command results are kept a month for operators and the audit trail.
READ_JOBS = TopicSpec("ami.read-jobs", ReadJob, "link_id", 12, ("scheduler",), ("collector",), retention_ms=_DAY_MS)
# reports will read readings and events for streaming aggregates and alarms; today it reads the database.
READINGS = TopicSpec(
    "ami.readings",
    ReadingBatch,
    "meter_id",
    12,
    ("collector",),
    ("ingest",),
    planned_consumers=("reports",),
    retention_ms=7 * _DAY_MS,
)
JOB_RESULTS = TopicSpec(
    "ami.job-results", JobResult, "meter_id", 6, ("collector",), ("scheduler",), retention_ms=7 * _DAY_MS
)
EVENTS = TopicSpec(
    "ami.events",
    MeterEvent,
    "meter_id",
    6,
    ("collector",),
    ("ingest",),
    planned_consumers=("reports",),
    retention_ms=30 * _DAY_MS,
)
# Commands come with the command API (issue 9): the collector executes them (gxami_collector.commands).
COMMANDS = TopicSpec(
    "ami.commands",
    MeterCommand,
    "link_id",
    6,
    (),
    ("collector",),
    planned_producers=("scheduler",),
    retention_ms=7 * _DAY_MS,
)
COMMAND_RESULTS = TopicSpec(
    "ami.command-results",
    CommandResult,
    "meter_id",
    6,
    ("collector",),
    (),
    planned_consumers=("scheduler",),
    retention_ms=30 * _DAY_MS,
)
DEAD_LETTERS = TopicSpec(
    DEAD_LETTER,
    DeadLetter,
    "source key",
    3,
    ("ingest", "collector", "scheduler"),
    ("ingest",),  # `gxami dlq list|replay`, which operators run, lives in the ingest package
    dead_letter=None,
    planned_producers=("reports",),
    retention_ms=30 * _DAY_MS,
)

# The registry as collectors need it (see gxami_contracts.fleet): compacted, a tombstone removes a meter.
FLEET = TopicSpec("ami.fleet", FleetEntry, "meter_id", 6, ("scheduler",), ("collector",), compacted=True)

CATALOG: dict[str, TopicSpec] = {
    t.name: t for t in (READ_JOBS, READINGS, JOB_RESULTS, EVENTS, COMMANDS, COMMAND_RESULTS, DEAD_LETTERS, FLEET)
}
