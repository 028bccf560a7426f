"""Commands as plain data: parsing a request, its idempotency hash, what each protocol supports, the state table.

No I/O here: :mod:`gxami_scheduler.command_store` keeps commands in the database and
:mod:`gxami_scheduler.commands` serves them over HTTP.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

from pydantic import ValidationError

from gxami_contracts import CommandKind, CommandOutcome
from gxcore.profiles import DeviceProfile, ProfilePoint
from gxcore.tariffs import TariffCalendar

__all__ = [
    "CommandError",
    "CommandRequest",
    "MeterState",
    "parse_request",
    "summary_state",
    "support_problem",
    "transition_allowed",
]

_COMMAND_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$")
_METER_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$")
MAX_METERS = 10_000  # in one command's list
MAX_POINT = 200
MAX_BODY_BYTES = 48 * 1024  # a MeterCommand is at most 64 KiB on the wire

FIELDS = frozenset(
    {
        "command_id",
        "kind",
        "meter",
        "meters",
        "group",
        "not_before",
        "expires_at",
        "point",
        "value",
        "clock",
        "options",
        "body",
    }
)


class CommandError(Exception):
    """A request refused: the HTTP status and a message naming what is wrong and where."""

    def __init__(self, status: int, message: str, **detail: Any) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.detail = detail


class MeterState(StrEnum):
    """One meter's part of a command."""

    REQUESTED = "requested"  # waiting for a second operator's approval
    APPROVED = "approved"  # waiting in the scheduler: not_before, or the meter's previous command
    QUEUED = "queued"  # published on ami.commands
    SENT = "sent"  # the collector is touching the meter
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    EXPIRED = "expired"
    CANCELLED = "cancelled"

    @property
    def final(self) -> bool:
        return self in FINAL


FINAL = frozenset({MeterState.SUCCEEDED, MeterState.FAILED, MeterState.EXPIRED, MeterState.CANCELLED})
WAITING = frozenset({MeterState.REQUESTED, MeterState.APPROVED})  # not yet published: may be cancelled

# The state table: from each state, where a meter's command may go. Anything else is ignored
# (a redelivered or reordered result changes nothing).
TRANSITIONS: Mapping[MeterState, frozenset[MeterState]] = {
    MeterState.REQUESTED: frozenset({MeterState.APPROVED, MeterState.CANCELLED, MeterState.EXPIRED}),
    MeterState.APPROVED: frozenset({MeterState.QUEUED, MeterState.CANCELLED, MeterState.EXPIRED}),
    MeterState.QUEUED: frozenset(
        {MeterState.APPROVED, MeterState.SENT, MeterState.SUCCEEDED, MeterState.FAILED, MeterState.EXPIRED}
    ),
    MeterState.SENT: frozenset({MeterState.SUCCEEDED, MeterState.FAILED, MeterState.EXPIRED}),
}

OUTCOME_STATE: Mapping[CommandOutcome, MeterState] = {
    CommandOutcome.SENT: MeterState.SENT,
    CommandOutcome.SUCCEEDED: MeterState.SUCCEEDED,
    CommandOutcome.FAILED: MeterState.FAILED,
    CommandOutcome.EXPIRED: MeterState.EXPIRED,
}


def transition_allowed(current: MeterState, new: MeterState) -> bool:
    return new in TRANSITIONS.get(current, frozenset())


def summary_state(states: Sequence[MeterState]) -> MeterState:
    """A command's state from its meters': one final state when all share it, failed when they end mixed."""
    found = set(states)
    if len(found) == 1:
        return next(iter(found))
    if found <= FINAL:
        return MeterState.FAILED if found - {MeterState.CANCELLED} else MeterState.CANCELLED
    for state in (MeterState.SENT, MeterState.QUEUED, MeterState.APPROVED, MeterState.REQUESTED):
        if state in found:
            return state
    return MeterState.REQUESTED  # pragma: no cover - every state is covered above


# What each protocol's driver can do (gxcore.drivers): reads everywhere, the rest where the driver has it.
_DLMS_KINDS = frozenset(CommandKind) - {CommandKind.WRITE_POINT}
PROTOCOL_KINDS: Mapping[str, frozenset[CommandKind]] = {
    "dlms": _DLMS_KINDS,
    "modbus": frozenset({CommandKind.WRITE_POINT, CommandKind.READ}),
    "mbus": frozenset({CommandKind.WRITE_POINT, CommandKind.READ}),
}
READ_ONLY = frozenset({CommandKind.READ})
NEEDS_POINT = frozenset({CommandKind.SET_ATTRIBUTE, CommandKind.WRITE_POINT})
NEEDS_BODY = frozenset({CommandKind.FIRMWARE_UPDATE, CommandKind.TARIFF_CALENDAR})


@dataclass(frozen=True, slots=True)
class CommandRequest:
    """A POST /commands body, checked for form; ``meters`` or ``group`` is the target."""

    command_id: str
    kind: CommandKind
    meters: tuple[str, ...] = ()
    group: str | None = None
    not_before: datetime | None = None
    expires_at: datetime | None = None  # None: the scheduler's default lifetime
    point: str | None = None
    value: str | int | float | bool | None = None
    clock: datetime | None = None
    options: Mapping[str, str] = field(default_factory=dict)
    body: Mapping[str, Any] | None = None

    def target(self) -> dict[str, Any]:
        return {"group": self.group} if self.group is not None else {"meters": list(self.meters)}

    def content_hash(self) -> bytes:
        """SHA-256 of everything but the id, as the client sent it: the same request hashes the same."""
        content = {
            "kind": self.kind.value,
            "target": self.target(),
            "not_before": _iso(self.not_before),
            "expires_at": _iso(self.expires_at),
            "point": self.point,
            "value": self.value,
            "clock": _iso(self.clock),
            "options": dict(sorted(self.options.items())),
            "body": self.body,
        }
        return hashlib.sha256(json.dumps(content, sort_keys=True, separators=(",", ":")).encode()).digest()

    def lifetime_end(self, now: datetime, default: timedelta) -> datetime:
        """When the command expires: as asked, or ``default`` after it starts (not_before or now)."""
        if self.expires_at is not None:
            return self.expires_at
        return max(now, self.not_before or now) + default


def _iso(value: datetime | None) -> str | None:
    """In UTC: the same instant written with another offset is the same request."""
    return value.astimezone(UTC).isoformat() if value is not None else None


def _time(body: Mapping[str, Any], name: str) -> datetime | None:
    raw = body.get(name)
    if raw is None:
        return None
    if not isinstance(raw, str):
        raise CommandError(400, f"{name} must be an ISO 8601 time with a UTC offset, not a {type(raw).__name__}")
    try:
        value = datetime.fromisoformat(raw)
    except ValueError:
        raise CommandError(400, f"{name} {raw[:40]!r} is not an ISO 8601 time") from None
    if value.tzinfo is None:
        raise CommandError(400, f"{name} {raw[:40]!r} has no UTC offset")
    return value


def _text(body: Mapping[str, Any], name: str, limit: int) -> str | None:
    raw = body.get(name)
    if raw is None:
        return None
    if not isinstance(raw, str) or not raw or len(raw) > limit or "\x00" in raw:
        raise CommandError(400, f"{name} must be text of 1 to {limit} characters")
    return raw


def _meters(body: Mapping[str, Any]) -> tuple[tuple[str, ...], str | None]:
    given = [name for name in ("meter", "meters", "group") if body.get(name) is not None]
    if len(given) != 1:
        raise CommandError(400, "the target is exactly one of meter, meters (a list) or group")
    if given[0] == "group":
        group = _text(body, "group", 200)
        assert group is not None
        return (), group
    raw = [body["meter"]] if given[0] == "meter" else body["meters"]
    if not isinstance(raw, list) or not raw:
        raise CommandError(400, "meters must be a non-empty list of meter ids")
    if len(raw) > MAX_METERS:
        raise CommandError(400, f"at most {MAX_METERS} meters in one command")
    for i, meter in enumerate(raw):
        if not isinstance(meter, str) or not _METER_ID.fullmatch(meter):
            where = "meter" if given[0] == "meter" else f"meters[{i}]"
            raise CommandError(400, f"{where} is not a meter id (letters, digits, . _ : -, at most 64)")
    return tuple(dict.fromkeys(raw)), None


def parse_request(body: Mapping[str, Any]) -> CommandRequest:
    """A request checked for form (400 otherwise); what it means for the fleet is checked later."""
    unknown = sorted(set(body) - FIELDS)
    if unknown:
        raise CommandError(400, f"unknown field {unknown[0]!r} in the request body")
    command_id = body.get("command_id")
    if not isinstance(command_id, str) or not _COMMAND_ID.fullmatch(command_id):
        raise CommandError(400, "command_id is required: letters, digits, . _ : -, 1 to 64 characters")
    try:
        kind = CommandKind(str(body.get("kind")))
    except ValueError:
        raise CommandError(400, f"kind must be one of {', '.join(k.value for k in CommandKind)}") from None
    meters, group = _meters(body)
    value = body.get("value")
    if value is not None and not isinstance(value, str | int | float | bool):
        raise CommandError(400, "value must be a number, a boolean or text")
    if isinstance(value, str) and len(value) > 2000:
        raise CommandError(400, "value is longer than 2000 characters")
    if isinstance(value, float) and not math.isfinite(value):
        raise CommandError(400, "value must be a finite number")
    options = body.get("options") or {}
    if not isinstance(options, dict) or len(options) > 64:
        raise CommandError(400, "options must be an object of at most 64 text values")
    for key, item in options.items():
        if not (isinstance(item, str) and 1 <= len(key) <= 64 and len(item) <= 500):
            raise CommandError(400, f"option {key[:64]!r} must be text of at most 500 characters")
    cmd_body = body.get("body")
    if cmd_body is not None:
        if not isinstance(cmd_body, dict):
            raise CommandError(400, "body must be a JSON object")
        if len(json.dumps(cmd_body)) > MAX_BODY_BYTES:
            raise CommandError(400, f"body is larger than {MAX_BODY_BYTES} bytes")
    request = CommandRequest(
        command_id=command_id,
        kind=kind,
        meters=meters,
        group=group,
        not_before=_time(body, "not_before"),
        expires_at=_time(body, "expires_at"),
        point=_text(body, "point", MAX_POINT),
        value=value,
        clock=_time(body, "clock"),
        options=dict(options),
        body=cmd_body,
    )
    _kind_fields(request)
    return request


def _kind_fields(r: CommandRequest) -> None:
    """The kind's own fields are there, and no other kind's."""
    kind = r.kind.value
    if r.kind in NEEDS_POINT:
        if r.point is None:
            raise CommandError(400, f"{kind} needs point (the profile point's quantity or source)")
        if r.value is None:
            raise CommandError(400, f"{kind} needs value")
    elif r.point is not None or r.value is not None:
        raise CommandError(400, f"{kind} takes no point or value")
    if r.kind is CommandKind.CLOCK_SET:
        if r.clock is None:
            raise CommandError(400, "clock-set needs clock (the time to set)")
    elif r.clock is not None:
        raise CommandError(400, f"{kind} takes no clock")
    if r.kind in NEEDS_BODY:
        if r.body is None:
            raise CommandError(400, f"{kind} needs body")
    elif r.body is not None:
        raise CommandError(400, f"{kind} takes no body")
    if r.kind is CommandKind.TARIFF_CALENDAR:
        _check_calendar(r.body)
    if r.not_before is not None and r.expires_at is not None and r.expires_at <= r.not_before:
        raise CommandError(422, "expires_at must be after not_before")


def _check_calendar(body: Mapping[str, Any] | None) -> None:
    """A tariff-calendar body is a whole calendar (gxcore.tariffs), or 422 naming the first bad field."""
    try:
        TariffCalendar.model_validate(body or {})
    except ValidationError as exc:
        errors = exc.errors()
        first = errors[0]
        where = ".".join(["body", *(str(p) for p in first["loc"])])
        reason = str(first["msg"]).removeprefix("Value error, ")
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise CommandError(422, f"tariff-calendar {where}: {reason}{more}", field=where) from None


def _matching_points(profile: DeviceProfile, key: str) -> list[ProfilePoint]:
    return [p for p in profile.points if key in (p.quantity, p.source)]


def support_problem(request: CommandRequest, meter_id: str, protocol: str, profile: DeviceProfile | None) -> str | None:
    """Why this meter cannot take this command (its protocol or profile), or None when it can."""
    kinds = PROTOCOL_KINDS.get(protocol, READ_ONLY)
    if request.kind not in kinds:
        return f"meter {meter_id!r} speaks {protocol}, which has no {request.kind.value}"
    if request.kind not in NEEDS_POINT:
        return None
    assert request.point is not None
    if profile is None:
        return f"meter {meter_id!r}: its device profile is not known to the scheduler"
    points = _matching_points(profile, request.point)
    if len(points) != 1:
        found = "no point" if not points else f"{len(points)} points"
        return f"meter {meter_id!r}: profile {profile.name} has {found} named {request.point!r}"
    if points[0].options.get("writable") is not True and not _modbus_writable(protocol, points[0]):
        return f"meter {meter_id!r}: profile {profile.name} does not mark {request.point!r} writable: true"
    return None


def _modbus_writable(protocol: str, point: ProfilePoint) -> bool:
    """A Modbus coil or holding register is writable by its table; anything else needs ``writable: true``."""
    if protocol != "modbus":
        return False
    from gxcore.protocols.modbus.profile import register_point

    try:
        return bool(register_point(point).table.writable)
    except Exception:  # noqa: BLE001 - a point the Modbus driver cannot parse is simply not writable
        return False
