"""DLMS/COSEM push: decoding DataNotification messages, plain or general-glo/ded-ciphered.

Accepted input: a wrapper frame (``00 01 ...``), one whole HDLC frame (``7E ... 7E``), a
bare LLC PDU (``E6 E7 00`` + APDU, what HAN-to-serial readers hand on), or the bare APDU.
The APDU is a data-notification, or one wrapped in general-glo-ciphering (``DB``) /
general-ded-ciphering (``DC``), which carry the sender's system title::

    0F  long-invoke-id-and-priority (4)  date-time (00 absent | 0C + 12 bytes)  notification-body (A-XDR Data)

Some Kaifa (and early Kamstrup) HAN firmware writes the date-time with its A-XDR type:
``09 0C`` + 12 bytes; that is accepted as the same date-time.

Values: the body is usually a structure; element ``k`` is push object ``columns[k]`` (the
push setup's object list, in push order). An element is a bare value, a self-describing
``{logical name, value[, {scaler, unit}]}`` (a register), or a logical name followed by its
value in the same structure (the flat OBIS/value lists of HAN ports, Kamstrup style). A
numeric element with a logical name (its own, else its column's) becomes a :class:`Reading`;
the scaler and unit are the push's own where it carries them, else the column's (by
position, else by OBIS). ``{0.0.1.0.0.255, date-time}`` is the capture time; the text of the
first of ``names`` present (serial number 0.0.96.1.0.255, then logical device name
0.0.42.0.0.255, unless the caller names others) names the meter. Everything else stays a raw
value in ``values``. The reading time is the notification's own date-time, else the body's
clock element (0-b:1.0.0), else ``received_at`` (the readings then say so: ``extra["time"]``
is ``"receive-time"``); with none, numbers stay raw.

Without ``columns`` (or when a positional HAN list's length is not the columns'), a body that
is a known HAN list (:mod:`gxcore.protocols.dlms.han`: Aidon, Kaifa, Kamstrup by their list
identifier or layout) is read with that vendor's OBIS list, scalers and units, and its meter
identifier names the meter.

A missing key is KeyMissingError, a wrong one DecryptionError; neither message holds a
key or a tag. Anything else that does not decode is a FramingError/ProtocolError.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Final

from gxcore.errors import FramingError, GxError, KeyMissingError, ProtocolError
from gxcore.protocols.dlms import axdr, ciphering, han, hdlc, wrapper
from gxcore.protocols.dlms.cosem_time import decode_datetime
from gxcore.protocols.dlms.obis import apply_scaler, dotted, obis_from_bytes, reduced, unit_symbol
from gxcore.readings import Reading
from gxcore.secrets import Secret

DATA_NOTIFICATION: Final = 0x0F
CLOCK: Final = "0.0.1.0.0.255"
NAMES: Final = ("0.0.96.1.0.255", "0.0.42.0.0.255")  # serial number first, then logical device name
_LLC: Final = (b"\xe6\xe7\x00", b"\xe6\xe6\x00")
MAX_PUSH: Final = 65_535 + 8
_POLICY_NAMES: Final = {0: "none", 0x10: "authenticated", 0x20: "encrypted", 0x30: "authenticated-encrypted"}


@dataclass(frozen=True, slots=True)
class PushColumn:
    """What element ``i`` of a push body is: an OBIS code, and the scaler/unit a register would have."""

    obis: str
    scaler: int = 0
    unit: str = ""


@dataclass(frozen=True, slots=True)
class DlmsPush:
    """One decoded DataNotification.

    ``system_title`` is the sender's (ciphered pushes); ``meter_id`` its name from the body
    (logical device name or serial number), else the system title as text or hex.
    ``values`` holds :class:`Reading` items and raw A-XDR values in body order.
    """

    system_title: bytes | None
    meter_id: str | None
    timestamp: datetime | None
    long_invoke_id: int
    security: str
    invocation_counter: int | None
    values: tuple[Reading | axdr.AxdrValue, ...]
    body: axdr.AxdrValue = field(repr=False)
    han_list: str | None = None  # "kaifa KFM_001" etc. when the body is a recognised HAN list
    time_source: str = "notification"  # "notification", "body-clock", "receive-time" or "none"

    @property
    def readings(self) -> list[Reading]:
        return [v for v in self.values if isinstance(v, Reading)]


def unwrap(data: bytes) -> bytes:
    """The APDU inside a wrapper or HDLC frame (or ``data`` itself when it is one)."""
    if len(data) > MAX_PUSH:
        raise FramingError(f"push of {len(data)} bytes exceeds {MAX_PUSH}")
    if not data:
        raise FramingError("empty push")
    if data[0] == hdlc.FLAG:
        consumed, frame = hdlc.decode(data)
        if frame is None or data[consumed:].strip(b"~"):
            raise FramingError("push is not one whole HDLC frame", frame=data)
        if frame.segmented:
            raise FramingError("segmented HDLC pushes are not supported", frame=data)
        info = frame.info
        return info[3:] if info[:3] in _LLC else info
    if data[:2] == b"\x00\x01":
        consumed, wframe = wrapper.decode(data)
        if wframe is None or consumed != len(data):
            raise FramingError("push is not one whole wrapper frame", frame=data)
        return wframe.apdu
    return data[3:] if data[:3] in _LLC else data


def decode_dlms_push(
    data: bytes,
    *,
    key: Secret | None = None,
    auth_key: Secret | None = None,
    columns: Sequence[PushColumn] | None = None,
    received_at: datetime | None = None,
    names: Sequence[str] = NAMES,
) -> DlmsPush:
    """Decode one push (see the module doc for framing, deciphering and value rules).

    ``names``: the logical names whose text names the meter, in order of preference.
    """
    try:
        return _decode(bytes(data), key, auth_key, columns, received_at, tuple(dotted(n) for n in names))
    except GxError:
        raise
    except (IndexError, KeyError, ValueError, TypeError, OverflowError, struct.error) as exc:
        # The contract is GxError only; a slip of ours on hostile bytes must not become a crash
        # of the listener or an "internal error". The type names the slip; the bytes stay out.
        raise ProtocolError(f"push could not be decoded ({type(exc).__name__})") from None


def _decode(
    data: bytes,
    key: Secret | None,
    auth_key: Secret | None,
    columns: Sequence[PushColumn] | None,
    received_at: datetime | None,
    names: Sequence[str],
) -> DlmsPush:
    apdu = unwrap(data)
    if not apdu:
        raise ProtocolError("push carries an empty APDU (no data-notification)", offset=len(data), frame=data)
    title: bytes | None = None
    security, counter = 0, None
    if apdu[0] in (ciphering.GENERAL_GLO_CIPHERING, ciphering.GENERAL_DED_CIPHERING):
        head = ciphering.parse_ciphered_apdu(apdu)
        if head.end != len(apdu):
            raise FramingError("bytes after the ciphered APDU", offset=head.end, frame=apdu)
        title, security, counter = head.system_title, head.security_control & 0x30, head.invocation_counter
        which = "dedicated" if apdu[0] == ciphering.GENERAL_DED_CIPHERING else "block cipher"
        if key is None:
            raise KeyMissingError(f"push is ciphered and no {which} key was given")
        if security & ciphering.AUTHENTICATED and auth_key is None:
            raise KeyMissingError("push is authenticated and no authentication key was given")
        apdu = ciphering.unseal(
            head.security_control,
            title or b"",
            counter,
            key.reveal(),
            auth_key.reveal() if auth_key is not None else None,
            head.payload,
        )
    if not apdu or apdu[0] != DATA_NOTIFICATION:
        raise ProtocolError(f"APDU {apdu[:1].hex() or 'empty'} is not a data-notification", frame=apdu[:16])
    if len(apdu) < 6:
        raise ProtocolError("data-notification header is cut short", frame=apdu)
    invoke = int.from_bytes(apdu[1:5], "big")
    start = 6
    size = apdu[5]
    if size == 0x09 and apdu[6:7] == b"\x0c":
        start, size = 7, 12  # the Kaifa quirk: the date-time as a typed octet-string (09 0C ...)
    if size not in (0, 12):
        raise ProtocolError(f"data-notification date-time has {size} bytes, expected 0 or 12", offset=5, frame=apdu)
    stamp = decode_datetime(apdu[start : start + 12]) if size == 12 and len(apdu) >= start + 12 else None
    if size == 12 and stamp is None:
        raise ProtocolError("data-notification date-time is cut short", offset=start, frame=apdu)
    body = axdr.decode_all(apdu[start + size :])
    listed = han.recognise(body)
    if listed is not None and (not columns or (listed.positional and _length(body) != len(columns))):
        columns = [PushColumn(o.obis, o.scaler, o.unit) for o in listed.objects]
        names = (listed.meter_id_obis, *names)
    elements = _elements(body, columns)
    meter_name, body_time = _name_and_clock(elements, names)
    # The reading time: the notification's own date-time, else the clock element of the body,
    # else when we received it (a HAN list without a clock is "now", and says so).
    at = stamp or body_time or received_at
    source = "notification" if stamp else "body-clock" if body_time else "receive-time" if at else "none"
    values = [_reading(e, at, source) or e.item for e in elements]
    meter_id = meter_name or _title_text(title)
    return DlmsPush(
        title,
        meter_id,
        stamp or body_time,
        invoke,
        _POLICY_NAMES[security],
        counter,
        tuple(values),
        body,
        han_list=f"{listed.vendor} {listed.list_id}".strip() if listed is not None else None,
        time_source=source,
    )


def _length(body: axdr.AxdrValue) -> int:
    return len(body) if isinstance(body, list) else 1


@dataclass(frozen=True, slots=True)
class _Element:
    """Element ``k`` of a push body: a bare value, ``{logical name, value[, {scaler, unit}]}``, or a
    logical name followed by its value (a flat HAN list); ``obis`` from the push, else the column."""

    item: axdr.AxdrValue
    obis: str | None
    value: axdr.AxdrValue
    scaler: int | None
    unit: str | None


def _elements(body: axdr.AxdrValue, columns: Sequence[PushColumn] | None) -> list[_Element]:
    """The body's elements in push order; element ``k`` is push object ``columns[k]``."""
    items: list[axdr.AxdrValue] = body if isinstance(body, list) else [body]
    by_obis = {dotted(c.obis): c for c in columns or ()}
    out: list[_Element] = []
    pos = 0
    while pos < len(items):
        column = columns[len(out)] if columns and len(out) < len(columns) else None
        item = items[pos]
        named = _named(item)
        pair = None if named else _pair(items, pos)
        if named is not None or pair is not None:
            obis, value = named or pair  # type: ignore[misc]  # one of the two is set
            scaler, unit = _scaler_unit(item) if named is not None else (None, None)
            if scaler is None:
                # The push gave a bare value: the profile's object (this position, else this OBIS) says.
                own = column if column is not None and dotted(column.obis) == obis else by_obis.get(obis)
                if own is not None:
                    scaler, unit = own.scaler, own.unit
            if pair is not None:
                item = [items[pos], items[pos + 1]]
                pos += 1
                # Austrian customer interfaces: logical name, value, {scaler, unit} in a row.
                triple = [*item, items[pos + 1]] if pos + 1 < len(items) else None
                if triple is not None and _scaler_unit(triple)[0] is not None:
                    scaler, unit = _scaler_unit(triple)
                    item = triple
                    pos += 1
            out.append(_Element(item, obis, value, scaler, unit))
        elif column is not None:
            out.append(_Element(item, dotted(column.obis), item, column.scaler, column.unit))
        else:
            out.append(_Element(item, None, item, None, None))
        pos += 1
    return out


def _name_and_clock(elements: Sequence[_Element], names: Sequence[str]) -> tuple[str | None, datetime | None]:
    """The meter's name (the first of ``names`` the body carries as text) and the body's clock element."""
    found: dict[str, str] = {}
    clock: datetime | None = None
    for e in elements:
        if han.is_clock(e.obis) and isinstance(e.value, bytes) and len(e.value) == 12:
            clock = clock or decode_datetime(e.value)
        elif e.obis is not None and e.obis in names and isinstance(e.value, bytes | str) and e.value:
            text = e.value if isinstance(e.value, str) else e.value.decode("ascii", "replace")
            found.setdefault(e.obis, text)
    return next((found[n] for n in names if n in found), None), clock


def _named(item: axdr.AxdrValue) -> tuple[str, axdr.AxdrValue] | None:
    """``{logical name, value, ...}`` -> (dotted OBIS, value)."""
    if isinstance(item, list) and len(item) in (2, 3) and isinstance(item[0], bytes) and len(item[0]) == 6:
        return obis_from_bytes(item[0]), item[1]
    return None


def _pair(items: list[axdr.AxdrValue], pos: int) -> tuple[str, axdr.AxdrValue] | None:
    """A logical name followed, in the same structure, by its value."""
    head = items[pos]
    if isinstance(head, bytes) and len(head) == 6 and pos + 1 < len(items) and head[5] == 0xFF:
        return obis_from_bytes(head), items[pos + 1]
    return None


def _scaler_unit(item: axdr.AxdrValue) -> tuple[int | None, str | None]:
    """The ``{scaler, unit}`` of a ``{logical name, value, {scaler, unit}}`` element; (None, None) if absent or odd."""
    if not (isinstance(item, list) and len(item) == 3):
        return None, None
    su = item[2]
    if not (isinstance(su, list) and len(su) == 2):
        return None, None
    raw_scaler, code = su
    if not isinstance(raw_scaler, int) or not isinstance(code, int) or isinstance(raw_scaler, bool):
        return None, None
    if not -128 <= raw_scaler <= 127:
        return None, None
    return raw_scaler, unit_symbol(code)


def _reading(e: _Element, at: datetime | None, time_source: str) -> Reading | None:
    """A numeric element with a logical name, at ``at``; None for names, the clock, text, or no time."""
    if at is None or e.obis is None or han.is_clock(e.obis) or e.obis in NAMES:
        return None
    if isinstance(e.value, bool) or not isinstance(e.value, int | float):
        return None
    extra: dict[str, str | int] = {"source": e.obis}
    if time_source == "receive-time":
        extra["time"] = "receive-time"  # the meter gave no time: this is when we received it
    return Reading(reduced(e.obis), apply_scaler(e.value, e.scaler or 0), e.unit or "", at, extra=extra)


def _title_text(title: bytes | None) -> str | None:
    """A system title as its manufacturer letters and the rest in hex (``KFM-1010000023``), or hex."""
    if title is None:
        return None
    if len(title) == 8 and title[:3].isalpha() and title[:3].isascii():
        return f"{title[:3].decode()}-{title[3:].hex()}"
    return title.hex()
