"""Message models for every gxami topic. JSON on the wire, versioned by ``schema_version``.

Secrets never travel in these messages: jobs name meters and profiles, and the
collector resolves passwords and keys from its own secret store.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

MeterId = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]*$")]
LinkId = Annotated[str, Field(min_length=1, max_length=200)]
Quantity = Annotated[str, Field(min_length=3, max_length=32, pattern=r"^[0-9A-Za-z:.\-]+$")]


class Message(BaseModel):
    """Base of every message: strict, immutable, and unknown fields refused."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    schema_version: Literal[1] = 1


class ReadJob(Message):
    """Read one meter once. Keyed by link id so one collector owns a shared link."""

    job_id: str = Field(min_length=1, max_length=64)
    meter_id: MeterId
    link_id: LinkId
    protocol: str = Field(min_length=1, max_length=32)
    url: str = Field(min_length=1, max_length=500)
    profile: str = Field(min_length=1, max_length=100)
    options: dict[str, str] = Field(default_factory=dict)
    purposes: list[str] = Field(default_factory=lambda: ["billing"])
    profile_from: AwareDatetime | None = None
    profile_to: AwareDatetime | None = None
    attempt: int = Field(default=1, ge=1)
    issued_at: AwareDatetime
    deadline: AwareDatetime


class ReadingValue(Message):
    """One value of one quantity at one instant, as the meter reported it."""

    quantity: Quantity
    ts: AwareDatetime
    # NaN and infinities are refused inside pydantic-core: no Python call per reading on the hot path.
    value: float = Field(allow_inf_nan=False)
    unit: str = Field(max_length=16)
    status: int | None = None


class ReadingBatch(Message):
    """Readings of one meter from one job (or one push). Keyed by meter id."""

    batch_id: str = Field(min_length=1, max_length=64)
    meter_id: MeterId
    job_id: str | None = None
    collected_at: AwareDatetime
    readings: list[ReadingValue] = Field(max_length=100_000)


class JobStatus(StrEnum):
    OK = "ok"
    ERROR = "error"


class JobResult(Message):
    """Outcome of one read job. A meter failure is a typed error here, never a crash."""

    job_id: str
    meter_id: MeterId
    link_id: LinkId
    status: JobStatus
    attempt: int = Field(ge=1)
    started_at: AwareDatetime
    finished_at: AwareDatetime
    readings_count: int = Field(ge=0)
    meter_time: AwareDatetime | None = None
    error_kind: str | None = None
    error_message: str | None = Field(default=None, max_length=2000)


class MeterEvent(Message):
    """Push data, alarms and meter events."""

    event_id: str
    meter_id: MeterId
    ts: AwareDatetime
    kind: str = Field(min_length=1, max_length=64)
    severity: Literal["info", "warning", "alarm"] = "info"
    data: dict[str, str | int | float | bool | None] = Field(default_factory=dict)


class CommandAction(StrEnum):
    DISCONNECT = "disconnect"
    RECONNECT = "reconnect"
    CLOCK_SYNC = "clock-sync"
    WRITE = "write"
    READ = "read"


class MeterCommand(Message):
    """A control action on one meter, with who asked for it (audit)."""

    command_id: str
    meter_id: MeterId
    link_id: LinkId
    protocol: str
    url: str
    profile: str
    action: CommandAction
    params: dict[str, str] = Field(default_factory=dict)
    requested_by: str = Field(min_length=1, max_length=200)
    issued_at: AwareDatetime
    deadline: AwareDatetime


class CommandResult(Message):
    """Outcome of one command."""

    command_id: str
    meter_id: MeterId
    status: JobStatus
    finished_at: AwareDatetime
    error_kind: str | None = None
    error_message: str | None = Field(default=None, max_length=2000)
    data: dict[str, str | int | float | bool | None] = Field(default_factory=dict)


class DeadLetter(Message):
    """A message a consumer could not handle, with the reason and the original bytes (base64)."""

    source_topic: str
    partition: int
    offset: int
    key: str | None
    reason: str = Field(max_length=4000)
    consumer: str
    failed_at: datetime
    original_b64: str
