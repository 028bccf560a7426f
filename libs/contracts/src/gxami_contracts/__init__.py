"""gxami message contracts: pydantic models, the topic catalog and example messages (no Kafka client)."""

from gxami_contracts.dial_in import DialInClaim, DialInContact, DialInWork
from gxami_contracts.fleet import Connection, FleetEntry, MeterRegistration
from gxami_contracts.messages import (
    CommandKind,
    CommandOutcome,
    CommandResult,
    DeadLetter,
    JobResult,
    JobStatus,
    Message,
    MeterCommand,
    MeterEvent,
    ReadingBatch,
    ReadingSeries,
    ReadingValue,
    ReadJob,
    TextSeries,
    ValueKind,
)
from gxami_contracts.topics import CATALOG, DEAD_LETTER, TopicSpec

__all__ = [
    "CATALOG",
    "DEAD_LETTER",
    "CommandKind",
    "CommandOutcome",
    "CommandResult",
    "Connection",
    "DeadLetter",
    "DialInClaim",
    "DialInContact",
    "DialInWork",
    "FleetEntry",
    "JobResult",
    "JobStatus",
    "Message",
    "MeterCommand",
    "MeterEvent",
    "MeterRegistration",
    "ReadJob",
    "ReadingBatch",
    "ReadingSeries",
    "ReadingValue",
    "TextSeries",
    "TopicSpec",
    "ValueKind",
]
