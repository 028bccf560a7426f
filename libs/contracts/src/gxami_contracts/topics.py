"""The topic catalog: every topic's logical name, key, schema, producers, consumers and dead letters.

Physical names default to the logical ones and can be overridden per deployment
(``GXAMI_TOPIC_OVERRIDES``, handled by the runtime settings).
"""

from __future__ import annotations

from dataclasses import dataclass

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
    """One topic: what flows on it and who touches it."""

    name: str
    model: type[Message]
    key: str
    partitions: int
    producers: tuple[str, ...]
    consumers: tuple[str, ...]
    dead_letter: str | None = DEAD_LETTER
    retention_ms: int | None = None


READ_JOBS = TopicSpec("ami.read-jobs", ReadJob, "link_id", 12, ("scheduler",), ("collector",))
READINGS = TopicSpec("ami.readings", ReadingBatch, "meter_id", 12, ("collector",), ("ingest", "reports"))
JOB_RESULTS = TopicSpec("ami.job-results", JobResult, "meter_id", 6, ("collector",), ("scheduler", "ingest"))
EVENTS = TopicSpec("ami.events", MeterEvent, "meter_id", 6, ("collector",), ("ingest", "reports"))
COMMANDS = TopicSpec("ami.commands", MeterCommand, "link_id", 6, ("scheduler",), ("collector",))
COMMAND_RESULTS = TopicSpec("ami.command-results", CommandResult, "meter_id", 6, ("collector",), ("scheduler",))
DEAD_LETTERS = TopicSpec(
    DEAD_LETTER,
    DeadLetter,
    "source key",
    3,
    ("ingest", "collector", "scheduler", "reports"),
    ("operators",),
    dead_letter=None,
)

CATALOG: dict[str, TopicSpec] = {
    t.name: t for t in (READ_JOBS, READINGS, JOB_RESULTS, EVENTS, COMMANDS, COMMAND_RESULTS, DEAD_LETTERS)
}
