"""Message models for every gxami topic. JSON on the wire, versioned by ``schema_version``.

Secrets never travel in these messages: jobs name meters and profiles, and the
collector resolves passwords and keys from its own secret store.

Compatibility. ``schema_version`` is the *major* version of a topic's message. Within one
major version a producer may add optional fields (and nothing else: the snapshot check in
:mod:`gxami_contracts.snapshots` refuses any other change without a bump), so producers and
consumers can be upgraded in any order:

- Where a message is *made* (``Model(...)``, ``model_validate``, ``model_validate_json``) the
  models are strict: an unknown field is refused (``extra="forbid"``), so a misspelt field in
  producer code or a test fails at once instead of vanishing from the wire.
- Where a message is *read off the wire* (:meth:`Message.from_wire`, which the runtime's
  ``decode_batch`` and every other consumer use) unknown fields are dropped: a consumer reads a
  message from a newer producer of its major version. This is pydantic's per-call ``extra``
  override, applied inside pydantic-core to nested models too: no Python work per reading.
- A ``schema_version`` the model does not list (a newer major version) is refused on both paths
  with a reason that says so; the consumer dead-letters the message. A model that reads more
  than one major version lists them (``DeadLetter`` writes 2 and reads 1).

Values (see the README section "Values"). A reading's number travels as a JSON number: an
integer register as a JSON integer (an ``int`` here, never ``38296251.0``), anything else as a
finite double written as its shortest repr, so a decimal of up to 15 significant digits (every
scaled meter register) reads back digit for digit (``38296.251``, never ``38296.251000000004``);
the producer converts its exact ``Decimal`` once, correctly rounded, which is also what the
database's double column holds. Text, bytes, bit-strings and booleans travel in
``ReadingBatch.text_series``, an optional field (consumers of version 1 that predate it drop it),
each value as canonical text tagged by the series' ``kind``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, ClassVar, Literal, Self, get_args

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    JsonValue,
    ValidationError,
    ValidatorFunctionWrapHandler,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

# What the database columns hold, once for every message. PostgreSQL ``text`` cannot hold NUL,
# ``integer`` is int4, and ``timestamptz`` is fine but Python's datetime overflows converting a
# 0001-01-01 or 9999-12-31 with an offset to UTC, so instants stay a day inside those ends.
# These are pydantic-core constraints: checked in Rust, no Python call per value on the hot path.
INT4_MIN, INT4_MAX = -(2**31), 2**31 - 1
INT8_MIN, INT8_MAX = -(2**63), 2**63 - 1
_NO_NUL = r"^[^\x00]*$"
FIRST_INSTANT = datetime(1, 1, 2, tzinfo=UTC)
LAST_INSTANT = datetime(9999, 12, 30, tzinfo=UTC)

Text = Annotated[str, Field(pattern=_NO_NUL)]  # any text column: no NUL; every field bounds its length too
Int4 = Annotated[int, Field(ge=INT4_MIN, le=INT4_MAX)]
Count = Annotated[int, Field(ge=0, le=INT4_MAX)]
Attempt = Annotated[int, Field(ge=1, le=INT4_MAX)]
Instant = Annotated[AwareDatetime, Field(ge=FIRST_INSTANT, le=LAST_INSTANT)]
FiniteFloat = Annotated[float, Field(allow_inf_nan=False)]

MeterId = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]*$")]
LinkId = Annotated[Text, Field(min_length=1, max_length=200)]
Quantity = Annotated[str, Field(min_length=3, max_length=32, pattern=r"^[0-9A-Za-z:.\-]+$")]
Unit = Annotated[Text, Field(max_length=16)]
MessageId = Annotated[Text, Field(min_length=1, max_length=64)]  # job, batch and command ids
ProtocolName = Annotated[Text, Field(min_length=1, max_length=32)]
ProfileName = Annotated[Text, Field(min_length=1, max_length=100)]
MeterUrl = Annotated[Text, Field(min_length=1, max_length=500)]
ErrorKind = Annotated[Text, Field(max_length=64)]
ErrorMessage = Annotated[Text, Field(max_length=2000)]
OptionName = Annotated[Text, Field(min_length=1, max_length=64)]
OptionValue = Annotated[Text, Field(max_length=500)]
Options = Annotated[dict[OptionName, OptionValue], Field(max_length=64)]
# Free-form JSON of events and command results, stored as jsonb: numbers finite, ints int8, no NUL.
DataValue = (
    Annotated[Text, Field(max_length=2000)]
    | Annotated[int, Field(ge=INT8_MIN, le=INT8_MAX)]
    | FiniteFloat
    | bool
    | None
)
Data = Annotated[dict[OptionName, DataValue], Field(max_length=64)]
MAX_READINGS = 100_000  # per series
# A reading's number: an int8 integer stays an int, anything else is a finite double. The JSON
# Schema is plain ``number`` (JSON integers are numbers): consumers of the first version, which
# read every value as a double, read these messages unchanged. Float first: pydantic-core's smart
# union then takes a JSON float at once and a JSON integer as an int (measured per value on 100k
# values: 46 ns for floats, 53 ns for ints, against 29 ns for the float-only list; int first: 87 ns).
WireNumber = Annotated[
    FiniteFloat | Annotated[int, Field(ge=INT8_MIN, le=INT8_MAX)], WithJsonSchema({"type": "number"})
]
# What a non-numeric value is, and how it is written as text on the wire and in the database.
ValueKind = Literal["text", "bytes", "bits", "bool"]
TEXT_VALUE_LENGTH = 4096
TextValue = Annotated[Text, Field(max_length=TEXT_VALUE_LENGTH)]
_CANONICAL = {"bytes": r"^(?:[0-9a-f]{2})*$", "bits": r"^[01]*$", "bool": r"^(?:true|false)$"}


class Message(BaseModel):
    """Base of every message: immutable; unknown fields refused where made, dropped where read (:meth:`from_wire`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # The major version; a compatible change (an optional field added) keeps it.
    schema_version: Literal[1] = 1
    # The largest message a consumer parses; a bigger one is dead-lettered unread.
    max_wire_bytes: ClassVar[int] = 1 << 20

    @classmethod
    def from_wire(cls, data: str | bytes | bytearray) -> Self:
        """A message read off the wire: fields a newer producer added are dropped, anything else is checked."""
        return cls.model_validate_json(data, extra="ignore")

    @classmethod
    def schema_versions(cls) -> tuple[int, ...]:
        """The major versions this model reads."""
        versions: tuple[int, ...] = get_args(cls.model_fields["schema_version"].annotation)
        return versions

    @field_validator("schema_version", mode="wrap")
    @classmethod
    def _a_version_this_model_reads(cls, value: object, handler: ValidatorFunctionWrapHandler) -> int:
        # One Python call per message (not per reading), and the reason names both versions.
        try:
            version: int = handler(value)
        except ValidationError:
            seen = str(value) if type(value) is int else f"a {type(value).__name__}"
            raise PydanticCustomError(
                "schema_version",
                "{model} reads schema version {known}, not {seen}: a newer major version needs an upgraded consumer",
                {"seen": seen[:20], "model": cls.__name__, "known": ", ".join(map(str, cls.schema_versions()))},
            ) from None
        return version


class ReadJob(Message):
    """Read one meter once. Keyed by link id so one collector owns a shared link."""

    # A job is a few hundred bytes; a consumer refuses a bigger one before parsing it.
    max_wire_bytes: ClassVar[int] = 64 * 1024

    job_id: MessageId
    meter_id: MeterId
    link_id: LinkId
    protocol: ProtocolName
    url: MeterUrl
    profile: ProfileName
    options: Options = Field(default_factory=dict)
    purposes: list[OptionName] = Field(default_factory=lambda: ["billing"], max_length=16)
    profile_from: Instant | None = None
    profile_to: Instant | None = None
    attempt: Attempt = 1
    issued_at: Instant
    deadline: Instant


class ReadingValue(BaseModel):
    """One value of one quantity at one instant: how producers hand readings to :meth:`ReadingBatch.of`
    and how consumers get them back from :meth:`ReadingBatch.readings`. Not a wire format of its own."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    quantity: Quantity
    ts: Instant
    value: WireNumber | TextValue
    unit: Unit
    status: Int4 | None = None
    kind: Literal["number"] | ValueKind = "number"  # what ``value`` is; not "number": canonical text

    @model_validator(mode="after")
    def _value_of_its_kind(self) -> ReadingValue:
        if (self.kind == "number") == isinstance(self.value, str):
            raise ValueError(f"{self.quantity}: a {self.kind} reading with a {type(self.value).__name__} value")
        return self


class ReadingSeries(BaseModel):
    """The readings of one quantity in one unit, as parallel arrays (``ts[i]``, ``values[i]``, ``status[i]``).

    Columnar on purpose: a reading batch carries thousands of values of a handful of quantities,
    and repeating the quantity and unit in every reading made messages 3.7 times larger and
    cost ingest one validated object per reading (measured: 1.4 against 0.36 us per reading).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    quantity: Quantity
    unit: Unit
    ts: list[Instant] = Field(max_length=MAX_READINGS)
    # NaN and infinities are refused inside pydantic-core: no Python call per reading on the hot path.
    # An integer register's values are ints (JSON integers), others doubles (module doc, "Values").
    values: list[WireNumber] = Field(max_length=MAX_READINGS)
    # The meter's status word per reading (an int4 column); absent when the meter reports none (stored as 0).
    status: list[Int4] | None = Field(default=None, max_length=MAX_READINGS)

    @model_validator(mode="after")
    def _same_lengths(self) -> ReadingSeries:
        n = len(self.ts)
        if len(self.values) != n or (self.status is not None and len(self.status) != n):
            status = "" if self.status is None else f", status {len(self.status)}"
            raise ValueError(f"{self.quantity}: ts has {n} entries but values {len(self.values)}{status}")
        return self


class TextSeries(BaseModel):
    """Non-numeric readings of one quantity (a logical device name, a status bit-string), as parallel arrays.

    Each value is canonical text of the series' ``kind``: ``text`` as it is, ``bytes`` as lowercase
    hex, ``bits`` as ``0``/``1`` (first bit first), ``bool`` as ``true``/``false``. Ingest stores
    them in ``register_values`` (numbers go to ``readings``); numeric VEE rules never see them.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    quantity: Quantity
    unit: Unit
    kind: ValueKind
    ts: list[Instant] = Field(max_length=MAX_READINGS)
    values: list[TextValue] = Field(max_length=MAX_READINGS)
    status: list[Int4] | None = Field(default=None, max_length=MAX_READINGS)

    @model_validator(mode="after")
    def _same_lengths_and_canonical(self) -> TextSeries:
        n = len(self.ts)
        if len(self.values) != n or (self.status is not None and len(self.status) != n):
            status = "" if self.status is None else f", status {len(self.status)}"
            raise ValueError(f"{self.quantity}: ts has {n} entries but values {len(self.values)}{status}")
        pattern = _CANONICAL.get(self.kind)
        if pattern is not None:
            bad = next((i for i, v in enumerate(self.values) if not re.match(pattern, v)), None)
            if bad is not None:
                raise ValueError(f"{self.quantity}: values[{bad}] is not canonical {self.kind} text")
        return self


def _statuses(s: ReadingSeries | TextSeries) -> list[int | None]:
    return list(s.status) if s.status is not None else [None] * len(s.ts)


class ReadingBatch(Message):
    """Readings of one meter from one job (or one push), one series per quantity and unit. Keyed by meter id."""

    batch_id: MessageId
    meter_id: MeterId
    job_id: MessageId | None = None
    collected_at: Instant
    series: list[ReadingSeries] = Field(max_length=1_000)
    # Text, bytes, bit-string and boolean readings (added within version 1: optional, so consumers
    # that predate it drop it and store the numbers).
    text_series: list[TextSeries] = Field(default_factory=list, max_length=1_000)

    @classmethod
    def of(
        cls,
        *,
        batch_id: str,
        meter_id: str,
        collected_at: datetime,
        readings: Iterable[ReadingValue],
        job_id: str | None = None,
    ) -> ReadingBatch:
        """A batch from single readings (for tools and tests), grouped into series by (quantity, unit, kind)
        in order of first appearance."""
        groups: dict[tuple[str, str, str], list[ReadingValue]] = {}
        for r in readings:
            groups.setdefault((r.quantity, r.unit, r.kind), []).append(r)
        series: list[ReadingSeries] = []
        texts: list[TextSeries] = []
        for (q, u, kind), rs in groups.items():
            status = [r.status or 0 for r in rs] if any(r.status is not None for r in rs) else None
            ts, values = [r.ts for r in rs], [r.value for r in rs]
            fields = {"quantity": q, "unit": u, "ts": ts, "values": values, "status": status}
            if kind == "number":
                series.append(ReadingSeries.model_validate(fields))
            else:
                texts.append(TextSeries.model_validate({**fields, "kind": kind}))
        return cls(
            batch_id=batch_id,
            meter_id=meter_id,
            job_id=job_id,
            collected_at=collected_at,
            series=series,
            text_series=texts,
        )

    def readings(self) -> list[ReadingValue]:
        """Every reading of the batch, series after series (for tools and tests; ingest reads the series)."""
        out = [
            ReadingValue(quantity=s.quantity, ts=t, value=v, unit=s.unit, status=st)
            for s in self.series
            for t, v, st in zip(s.ts, s.values, _statuses(s), strict=True)
        ]
        out.extend(
            ReadingValue(quantity=s.quantity, ts=t, value=v, unit=s.unit, status=st, kind=s.kind)
            for s in self.text_series
            for t, v, st in zip(s.ts, s.values, _statuses(s), strict=True)
        )
        return out

    @property
    def count(self) -> int:
        return sum(len(s.ts) for s in self.series) + sum(len(s.ts) for s in self.text_series)


class JobStatus(StrEnum):
    OK = "ok"
    ERROR = "error"


class JobResult(Message):
    """Outcome of one read job. A meter failure is a typed error here, never a crash."""

    job_id: MessageId
    meter_id: MeterId
    link_id: LinkId
    status: JobStatus
    attempt: Attempt
    started_at: Instant
    finished_at: Instant
    readings_count: Count
    events_count: Count = 0  # meter events published to ami.events for this job
    meter_time: Instant | None = None
    # The collector's clock when it read ``meter_time``: the drift is meter_time - collector_time.
    collector_time: Instant | None = None
    error_kind: ErrorKind | None = None
    error_message: ErrorMessage | None = None


class MeterEvent(Message):
    """Push data, alarms and meter events. Keyed by meter id.

    ``event_id`` is stable for the same event however often it is read (collector: derived from
    meter, source, time and code), so ingest stores each event once.
    """

    event_id: Annotated[Text, Field(min_length=1, max_length=200)]
    meter_id: MeterId
    ts: Instant
    kind: Annotated[Text, Field(min_length=1, max_length=64)]
    severity: Literal["info", "warning", "alarm"] = "info"
    data: Data = Field(default_factory=dict)


class CommandKind(StrEnum):
    """What a command does to a meter; the driver API's ``DriverCommand.kind`` names the same kinds."""

    DISCONNECT = "disconnect"
    RECONNECT = "reconnect"
    ARM_RECONNECT = "arm-reconnect"  # IDIS "ready for reconnection": the customer presses the button
    RELAY_STATE = "relay-state"  # read the disconnect control's output and control state
    CLOCK_SYNC = "clock-sync"  # the meter's clock to the collector's (shift_time where the meter limits it)
    CLOCK_SET = "clock-set"  # the meter's clock to ``clock``
    SET_ATTRIBUTE = "set-attribute"  # a DLMS attribute the device profile marks writable
    WRITE_POINT = "write-point"  # a Modbus / M-Bus profile point marked writable
    READ = "read"  # an on-demand read, ordered with the other commands of the link
    FIRMWARE_UPDATE = "firmware-update"  # DLMS image transfer (class 18); ``body`` names the image
    TARIFF_CALENDAR = "tariff-calendar"  # activity calendar (class 20) and special days (class 11)


# A command's structured content (a tariff calendar, a firmware image reference): JSON, bounded
# by the message's wire size; the scheduler checks it against the kind's schema before it queues.
CommandBody = dict[OptionName, JsonValue]


class MeterCommand(Message):
    """One command for one meter, as the scheduler queues it for the collector of the meter's link.

    ``command_id`` is the client's idempotency key of the whole command; a command for several
    meters goes out as one message per meter with the same ``command_id``, so (``command_id``,
    ``meter_id``) is this message's identity. ``expires_at`` is checked by the collector right
    before it touches the meter: an expired command is reported ``expired`` and never executed.
    Keyed by ``link_id`` like read jobs, so one collector owns a link and its commands and reads
    are ordered. No secret travels here: the collector resolves keys from its own store.
    """

    max_wire_bytes: ClassVar[int] = 64 * 1024

    command_id: MessageId
    meter_id: MeterId
    link_id: LinkId
    protocol: ProtocolName
    url: MeterUrl
    profile: ProfileName
    kind: CommandKind
    point: Annotated[Text, Field(min_length=1, max_length=200)] | None = None  # write-point, set-attribute
    value: DataValue = None  # the value to write, in the point's unit as read
    clock: Instant | None = None  # clock-set
    options: Options = Field(default_factory=dict)  # target options (as in a read job) and kind details
    body: CommandBody | None = None  # firmware-update, tariff-calendar
    requested_by: Annotated[Text, Field(min_length=1, max_length=200)]
    issued_at: Instant
    not_before: Instant | None = None
    expires_at: Instant
    attempt: Attempt = 1


class CommandOutcome(StrEnum):
    """What the collector reports for one meter's command; the scheduler keeps the full state history."""

    SENT = "sent"  # the collector is touching the meter now (``data`` may carry progress)
    SUCCEEDED = "succeeded"  # done and read back
    FAILED = "failed"  # refused by the meter, unreachable, or the read-back did not match
    EXPIRED = "expired"  # ``expires_at`` had passed before the meter was touched: nothing was executed


class CommandResult(Message):
    """Outcome of one meter's command, with what was read back from the meter (``data``)."""

    command_id: MessageId
    meter_id: MeterId
    kind: CommandKind
    outcome: CommandOutcome
    attempt: Attempt = 1
    started_at: Instant | None = None
    finished_at: Instant
    state: Annotated[Text, Field(max_length=64)] | None = None  # the relay state read back
    meter_time_before: Instant | None = None
    meter_time_after: Instant | None = None
    error_kind: ErrorKind | None = None
    error_message: ErrorMessage | None = None
    data: Data = Field(default_factory=dict)  # read-back values and progress (blocks sent, of how many)
    collector: Annotated[Text, Field(max_length=200)] | None = None  # the instance that executed it


class DeadLetter(Message):
    """A message a consumer could not handle, with the reason and the original bytes (base64).

    Version 2 records the original's size and SHA-256, and ``original_b64`` may be only a prefix
    of it (``original_truncated``) so that the letter fits the broker however large the original
    was. Version 1 letters (no size, no digest, never cut) are still read.
    """

    schema_version: Literal[1, 2] = 2  # type: ignore[assignment]  # a DeadLetter widens the base's Literal[1]

    source_topic: Annotated[str, Field(max_length=300)]
    partition: int
    offset: int
    key: Annotated[str, Field(max_length=1000)] | None
    reason: str = Field(max_length=4000)
    consumer: Annotated[str, Field(max_length=100)]
    failed_at: datetime
    original_b64: str
    original_size: Annotated[int, Field(ge=0)] | None = None  # bytes of the whole original
    original_sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")] | None = None  # of the whole original
    original_truncated: bool = False  # original_b64 holds only the first bytes of it

    @model_validator(mode="after")
    def _version_fields(self) -> DeadLetter:
        if self.schema_version >= 2 and (self.original_size is None or self.original_sha256 is None):
            raise ValueError("a version 2 dead letter records original_size and original_sha256")
        if self.schema_version == 1 and self.original_truncated:
            raise ValueError("a version 1 dead letter always holds the whole original")
        return self
