"""Serving DLMS pushes: DataNotifications over a connection a meter opened to us (wrapper or HDLC).

Frames are cut from the stream as they come: wrapper (``00 01 ...``) or HDLC (``7E ...``),
told apart by each frame's first byte. A bare LLC PDU (``E6 E7 00`` + APDU) or bare APDU
(``0F``, ``DB``, ``DC``), what HAN-to-TCP bridges forward after stripping the HDLC frame,
carries no length: it is taken whole as what the receive that brought it held (such
bridges write one push per write). Each is decoded with
:func:`~gxcore.protocols.dlms.push.decode_dlms_push` and its meter looked up by identity:

* a ciphered push (general-glo/ded-ciphering) by the sender's **system title**, as 16
  lower-case hex digits; it is deciphered with the keys of the meter found: general-glo with
  ``target.secrets`` ``key``/``auth_key`` (as for reads), general-ded with ``dedicated_key``
  and ``auth_key``;
* a plain push by the name its body carries: the element the profile's ``push_identity``
  names (an OBIS code), by default the serial number 0-0:96.1.0, else the logical device name
  0-0:42.0.0, as text. Where the body names no OBIS (a HAN list of bare values) the
  connection's ``layout`` profile says which element is which.

The body is read with the meter's profile's ``push_objects`` (element ``k`` is object ``k``;
scaler and unit for bare values); the readings' time is the notification's date-time, else the
body's clock, else ``clock()`` when it was received. Readings of objects the profile names as
value points become the points' readings (unit, scale and offset as for a read); others stay
as decoded (reduced OBIS, the meter's unit).

Each push is yielded as a :class:`PushServed`: the :class:`Served` plus the identity it was
found by, the sender's system title and the push's **invocation counter** (authenticated by
the GCM tag, so a listener can refuse a replay: a counter not above the last one it saw).
Objects of the alarm registers (0-0:97.98.x) become alarm events, and event codes
(0-x:96.11.n, what an event push setup sends) meter events, not readings.

A meter whose parameters set up ciphering is served only ciphered pushes: a plain push
naming it is refused (``unprotected``), whatever it carries.

Rule for bad input: a frame that does not decode (a bad checksum inside, a wrong key, an
unknown meter, a body we cannot read) is logged as a warning naming its typed error,
reported to ``on_refused`` (a :class:`PushRefusal` with the frame, for a dead letter) and
skipped; the pushes before and after it are served. A wrapper header that does not parse
leaves the stream out of step: what was served stays served and the FramingError is raised.
Serving ends, without error, when the peer closes the connection or nothing arrives for
``idle_timeout`` seconds; a frame begun must be whole within ``frame_timeout`` (else
MeterTimeoutError: a sender trickling bytes cannot hold a connection for ever).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Final, Literal

from gxcore.drivers.api import MeterLookup, MeterTarget, ReadResult, Served
from gxcore.errors import DecryptionError, GxError, KeyMissingError, MediaError, MeterTimeoutError
from gxcore.media import Medium
from gxcore.profiles.model import DeviceProfile
from gxcore.protocols.dlms import hdlc, wrapper
from gxcore.protocols.dlms.association import meter_key
from gxcore.protocols.dlms.ciphering import GENERAL_DED_CIPHERING
from gxcore.protocols.dlms.events import EVENT_CODE, STANDARD_EVENTS, DlmsEvent, is_event_code
from gxcore.protocols.dlms.obis import dotted, reduced
from gxcore.protocols.dlms.parameters import DlmsParameters
from gxcore.protocols.dlms.push import NAMES, DlmsPush, PushColumn, decode_dlms_push, unwrap
from gxcore.readings import MeterEventRecord, Reading

if TYPE_CHECKING:
    from gxcore.drivers.dlms.driver import DlmsPoint

log = logging.getLogger(__name__)

READ_CHUNK: Final = 65536
MAX_PENDING: Final = 2 * (65535 + 8)  # more than two of the largest frames unframed: the peer is not speaking DLMS
_CIPHERED: Final = frozenset({0xDB, 0xDC})

ALARM_REGISTERS: Final = "0.0.97.98."  # alarm register 1/2, alarm filter, alarm descriptor: 0-0:97.98.x

Resolve = Callable[[MeterTarget, DeviceProfile], "tuple[DlmsParameters, list[DlmsPoint]]"]
RefusalKind = Literal["unknown-meter", "undecodable", "wrong-key", "key-missing", "unprotected"]
DEDICATED_KEY: Final = "dedicated_key"  # the secret a general-ded-ciphered push is deciphered with


@dataclass(frozen=True, slots=True)
class PushServed(Served):
    """One push served: what the meter sent, who it said it was, and the counter that protects it."""

    identity: str = ""
    system_title: str | None = None  # hex, ciphered pushes only
    invocation_counter: int | None = None  # ciphered pushes only


@dataclass(frozen=True, slots=True)
class PushRefusal:
    """A frame that was not served: why (``kind``, ``reason`` naming the typed error) and the frame itself.

    ``reason`` never holds a key or a tag; ``frame`` is the bytes as received (ciphered stays ciphered).
    """

    kind: RefusalKind
    reason: str
    identity: str | None
    frame: bytes
    where: str


RefusalHook = Callable[[PushRefusal], None]


async def serve_pushes(
    connection: Medium,
    lookup: MeterLookup,
    resolve: Resolve,
    *,
    idle_timeout: float,
    on_refused: RefusalHook | None = None,
    clock: Callable[[], datetime],
    layout: DeviceProfile | None = None,
    frame_timeout: float | None = None,
) -> AsyncIterator[PushServed]:
    """Yield what each push on ``connection`` carried, until the peer closes or goes quiet (see the module doc).

    ``clock`` gives the receive time (the readings' time when the push carries none);
    ``layout`` is the profile that says how plain pushes on this connection name their meter
    (a HAN port's list of bare values: see :func:`push_layout`); ``frame_timeout`` (default
    ``idle_timeout``) is how long a frame begun may take to become whole.
    """
    frame_s = frame_timeout if frame_timeout is not None else idle_timeout
    where = connection.describe()
    pending = bytearray()
    loop = asyncio.get_running_loop()
    frame_deadline: float | None = None  # when the partial frame in ``pending`` must be whole
    while True:
        wait = idle_timeout if frame_deadline is None else frame_deadline - loop.time()
        if wait <= 0:
            raise MeterTimeoutError(f"{where}: a frame begun {frame_s:g} s ago is still not whole")
        try:
            data = await connection.receive(READ_CHUNK, timeout=min(idle_timeout, wait))
        except MeterTimeoutError:
            if frame_deadline is not None:
                continue  # the deadline decides, above
            return
        except MediaError as exc:
            log.debug("push connection %s ended: %s", where, exc.reason)
            return
        if not pending and _bare(data):
            # No length to cut by: this receive is the push (see the module doc).
            served = _serve_one(bytes(data), lookup, resolve, where, on_refused, clock(), layout)
            if served is not None:
                yield served
            continue
        pending += data
        for frame in _frames(pending, where):
            served = _serve_one(frame, lookup, resolve, where, on_refused, clock(), layout)
            if served is not None:
                yield served
        if len(pending) > MAX_PENDING:
            raise MediaError(f"{where}: {len(pending)} bytes without a whole DLMS frame")
        # A sender trickling a frame (one byte a second) keeps the connection busy but must not
        # hold it for ever: a frame begun has ``frame_s`` to become whole.
        if not pending:
            frame_deadline = None
        elif frame_deadline is None:
            frame_deadline = loop.time() + frame_s


_BARE: Final = (b"\xe6\xe7\x00", b"\xe6\xe6\x00", b"\x0f", b"\xdb", b"\xdc")


def _bare(data: bytes) -> bool:
    """A bare LLC PDU or APDU (no HDLC flag, no wrapper version)."""
    return data.startswith(_BARE)


def _frames(pending: bytearray, where: str) -> list[bytes]:
    """Cut every whole frame off ``pending`` (wrapper or HDLC by its first byte; HDLC resyncs a byte at a time)."""
    frames: list[bytes] = []
    while pending:
        if pending[0] == hdlc.FLAG:
            try:
                consumed, frame = hdlc.decode(pending)
            except GxError as exc:
                # debug: garbage after a flag costs one of these per byte, and must not flood the log
                log.debug("push on %s: bad HDLC frame skipped (%s: %s)", where, exc.kind, exc.reason)
                del pending[:1]
                continue
            raw = frame.raw if frame is not None else None
        else:
            consumed, wframe = wrapper.decode(pending)  # a FramingError here: out of step, raised
            raw = wframe.raw if wframe is not None else None
        if not consumed:
            break
        del pending[:consumed]
        if raw is not None:
            frames.append(raw)
    return frames


def _refuse(hook: RefusalHook | None, refusal: PushRefusal) -> None:
    if hook is not None:
        try:
            hook(refusal)
        except Exception:  # a broken hook must not stop the pushes behind this one
            log.exception("push refusal hook failed on %s", refusal.where)


def push_layout(profile: DeviceProfile) -> tuple[list[PushColumn], tuple[str, ...]]:
    """The profile's push objects as columns, and the logical names whose text names the meter."""
    columns = [PushColumn(dotted(o.obis), o.scaler, o.unit) for o in profile.push_objects]
    names = (dotted(profile.push_identity),) if profile.push_identity else NAMES
    return columns, names


def _refusal_kind(exc: GxError) -> RefusalKind:
    if isinstance(exc, KeyMissingError):
        return "key-missing"
    return "wrong-key" if isinstance(exc, DecryptionError) else "undecodable"


def _serve_one(
    frame: bytes,
    lookup: MeterLookup,
    resolve: Resolve,
    where: str,
    on_refused: RefusalHook | None,
    received_at: datetime,
    layout: DeviceProfile | None,
) -> PushServed | None:
    """One push decoded and attributed, or None (logged, reported) when it cannot be."""
    identity: str | None = None
    try:
        apdu = unwrap(frame)
        identity = _identity(frame, apdu, layout)
        found = lookup(identity) if identity is not None else None
        if found is None:
            log.warning("push on %s from %s: no such meter, skipped", where, identity or "an unnamed meter")
            reason = f"no meter is registered with identity {identity}" if identity else "the push names no meter"
            _refuse(on_refused, PushRefusal("unknown-meter", reason, identity, frame, where))
            return None
        target, profile = found
        params, points = resolve(target, profile)
        security = params.security
        key = security.block_cipher_key if security is not None else None
        if security is not None and not (apdu and apdu[0] in _CIPHERED):
            # A meter set up for ciphering never pushes in clear: a plain push naming it is someone else's.
            log.warning("push on %s: plain push for ciphered meter %s refused", where, target.meter_id)
            reason = f"meter {target.meter_id} is set up for ciphering; a plain push naming it is refused"
            _refuse(on_refused, PushRefusal("unprotected", reason, identity, frame, where))
            return None
        if apdu and apdu[0] == GENERAL_DED_CIPHERING:
            # general-ded-ciphering: the meter's dedicated key (its secret store entry), never the global one
            key = meter_key(target.secrets, DEDICATED_KEY, "dedicated key", f"meter {target.meter_id}")
        columns, names = push_layout(profile)
        push = decode_dlms_push(
            frame,
            key=key,
            auth_key=security.authentication_key if security is not None else None,
            columns=columns,
            received_at=received_at,
            names=names,
        )
    except GxError as exc:
        log.warning("push on %s skipped (%s: %s)", where, exc.kind, exc.reason)
        kind = _refusal_kind(exc)
        _refuse(on_refused, PushRefusal(kind, f"{exc.kind}: {exc.reason}", identity, frame, where))
        return None
    readings, events = _split_alarms(target.meter_id, _readings(push, points), push)
    return PushServed(
        target.meter_id,
        ReadResult(readings=readings, meter_time=push.timestamp, events=events),
        identity=identity or "",
        system_title=push.system_title.hex() if push.system_title else None,
        invocation_counter=push.invocation_counter,
    )


def _split_alarms(
    meter_id: str, readings: list[Reading], push: DlmsPush
) -> tuple[list[Reading], list[MeterEventRecord]]:
    """Readings of the alarm registers become alarm events (kind ``alarm``, code = the register's bits)."""
    kept: list[Reading] = []
    events: list[MeterEventRecord] = []
    for r in readings:
        source = r.extra.get("source")
        obis = dotted(str(source)) if source is not None else ""
        code = r.value if isinstance(r.value, int) and not isinstance(r.value, bool) else None
        if obis.startswith(ALARM_REGISTERS) and code is not None:
            events.append(
                MeterEventRecord(
                    meter_id=meter_id,
                    timestamp=push.timestamp or r.ts,
                    kind="alarm",
                    source=obis,
                    code=code,
                    severity="alarm",
                )
            )
        elif obis and is_event_code(obis) and code is not None and code >= 0:
            # An event push setup sends the event code object (0-x:96.11.n): an event, not a reading.
            name = STANDARD_EVENTS.get(code) if obis == EVENT_CODE else None
            events.append(DlmsEvent(push.timestamp or r.ts, code, reduced(obis), name).record(meter_id))
        else:
            kept.append(r)
    return kept, events


def _identity(frame: bytes, apdu: bytes, layout: DeviceProfile | None) -> str | None:
    """The ciphered APDU's system title as hex, else the name the plain body carries."""
    if apdu and apdu[0] in _CIPHERED and len(apdu) > 1:
        size = apdu[1]
        title = bytes(apdu[2 : 2 + size])
        if size and len(title) == size:
            return title.hex()
    if layout is None:
        return decode_dlms_push(frame).meter_id
    columns, names = push_layout(layout)
    return decode_dlms_push(frame, columns=columns, names=names).meter_id


def _readings(push: DlmsPush, points: Sequence[DlmsPoint]) -> list[Reading]:
    by_obis: dict[str, list[DlmsPoint]] = {}
    for p in points:
        if p.profile is None:
            by_obis.setdefault(p.value.obis, []).append(p)
    out: list[Reading] = []
    for reading in push.readings:
        source = reading.extra.get("source")
        matched = by_obis.get(dotted(str(source))) if source is not None else None
        if not matched:
            out.append(reading)
            continue
        out.extend(p.reading(reading.value, reading.unit, reading.timestamp) for p in matched)
    return out
