"""RSP_UD application layer (EN 13757-3): headers, fixed and variable data structures.

Variable data structure (CI 0x72 LSB first, 0x76 MSB first), 12-byte fixed header::

    ID (4, BCD) | manufacturer (2) | version | medium | access no | status | signature (2) | records

Fixed data structure (CI 0x73 LSB first, 0x77 MSB first)::

    ID (4, BCD) | access no | status | medium/unit (2) | counter 1 (4) | counter 2 (4)

The public entry point :func:`decode_mbus_telegram` takes a whole wired long frame.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from decimal import Decimal

from gxcore.errors import ProtocolError
from gxcore.protocols.mbus.frame import LongFrame, manufacturer_code, parse_frame
from gxcore.protocols.mbus.quantities import medium_text
from gxcore.protocols.mbus.records import MBusRecord, parse_records
from gxcore.protocols.mbus.values import decode_bcd, decode_int
from gxcore.readings import Reading, Unparsed

CI_VARIABLE = 0x72
CI_VARIABLE_MSB = 0x76
CI_FIXED = 0x73
CI_FIXED_MSB = 0x77
CI_APPLICATION_ERROR = 0x70
HEADER_LONG = 12

APPLICATION_ERRORS = {
    0: "unspecified error",
    1: "unimplemented CI field",
    2: "buffer too long, truncated",
    3: "too many records",
    4: "premature end of record",
    5: "more than 10 DIFEs",
    6: "more than 10 VIFEs",
    8: "application busy",
    9: "too many readouts",
}

# Units of the fixed data structure (EN 13757-3 annex, as libmbus tabulates them):
# code -> (unit, power of ten).
_FIXED_UNITS: dict[int, tuple[str, int]] = {
    0x02: ("Wh", 0), 0x03: ("Wh", 1), 0x04: ("Wh", 2), 0x05: ("Wh", 3), 0x06: ("Wh", 4),
    0x07: ("Wh", 5), 0x08: ("Wh", 6), 0x09: ("Wh", 7), 0x0A: ("Wh", 8),
    0x0B: ("J", 3), 0x0C: ("J", 4), 0x0D: ("J", 5), 0x0E: ("J", 6), 0x0F: ("J", 7),
    0x10: ("J", 8), 0x11: ("J", 9), 0x12: ("J", 10), 0x13: ("J", 11),
    0x14: ("W", 0), 0x15: ("W", 1), 0x16: ("W", 2), 0x17: ("W", 3), 0x18: ("W", 4),
    0x19: ("W", 5), 0x1A: ("W", 6), 0x1B: ("W", 7), 0x1C: ("W", 8),
    0x1D: ("J/h", 3), 0x1E: ("J/h", 4), 0x1F: ("J/h", 5), 0x20: ("J/h", 6), 0x21: ("J/h", 7),
    0x22: ("J/h", 8), 0x23: ("J/h", 9), 0x24: ("J/h", 10), 0x25: ("J/h", 11),
    0x26: ("m³", -6), 0x27: ("m³", -5), 0x28: ("m³", -4), 0x29: ("m³", -3), 0x2A: ("m³", -2),
    0x2B: ("m³", -1), 0x2C: ("m³", 0), 0x2D: ("m³", 1), 0x2E: ("m³", 2),
    0x2F: ("m³/h", -6), 0x30: ("m³/h", -5), 0x31: ("m³/h", -4), 0x32: ("m³/h", -3), 0x33: ("m³/h", -2),
    0x34: ("m³/h", -1), 0x35: ("m³/h", 0), 0x36: ("m³/h", 1), 0x37: ("m³/h", 2),
    0x38: ("°C", -3), 0x39: ("HCA", 0),
}  # fmt: skip


@dataclass(frozen=True, slots=True)
class MBusTelegram:
    """A decoded RSP_UD: meter identity and its records."""

    id: str
    manufacturer: str
    medium: str
    version: int
    access_number: int
    status: int
    records: list[MBusRecord]
    medium_code: int = 0
    signature: int = 0
    ci: int = CI_VARIABLE
    more_records_follow: bool = False
    address: int | None = None  # wired primary address of the reply
    security_mode: int = 0
    extra: dict[str, str | int] = field(default_factory=dict)
    # What a tolerant decode could not read (trailing fill, a record cut short, bytes past the frame).
    unparsed: list[Unparsed] = field(default_factory=list)

    @property
    def secondary_address(self) -> str:
        """The 16-character secondary address (ID, manufacturer, version, medium)."""
        man = _manufacturer_value_of(self.manufacturer)
        return f"{self.id}{man:04X}{self.version:02X}{self.medium_code:02X}"

    def meter_time(self) -> datetime | None:
        """The meter's clock (record mapped to 0-0:1.0.0), as naive meter-local time."""
        for record in self.records:
            if record.quantity == "0-0:1.0.0" and isinstance(record.value, datetime):
                return record.value
        return None

    def to_json_dict(self, *, full: bool = False) -> dict[str, object]:
        """The shape ``gxami decode mbus|wmbus`` prints; ``full`` (``--all-records``) adds each record's
        error and raw bytes, and the header fields a profile never needs."""
        header: dict[str, object] = {}
        if full:
            header = {
                "secondary_address": self.secondary_address,
                "signature": self.signature,
                "ci": self.ci,
                "more_records_follow": self.more_records_follow,
            }
        return {
            **header,
            "id": self.id,
            "manufacturer": self.manufacturer,
            "medium": self.medium,
            "version": self.version,
            "access_number": self.access_number,
            "status": self.status,
            "records": [record.to_json_dict(full=full) for record in self.records],
            **({"unparsed": [u.to_json_dict() for u in self.unparsed]} if self.unparsed else {}),
        }

    def to_readings(self, timestamp: datetime) -> list[Reading]:
        """Readings for records with a canonical quantity and a numeric value, stamped ``timestamp``."""
        if timestamp.tzinfo is None:
            raise ValueError("reading timestamps must be timezone-aware")
        stamp = timestamp.astimezone(UTC)
        return [
            Reading(
                record.quantity,
                record.value,
                record.unit,
                stamp,
                self.status,
                {"meter": self.id, "description": record.description},
            )
            for record in self.records
            if record.quantity is not None
            and isinstance(record.value, int | Decimal)
            and not isinstance(record.value, bool)
        ]


def _manufacturer_value_of(code: str) -> int:
    if len(code) == 3 and code.isalpha():
        value = 0
        for letter in code:
            value = (value << 5) | (ord(letter) - 64)
        return value
    try:
        return int(code, 16)
    except ValueError:
        return 0


def bcd_id(raw: bytes) -> str:
    """An 8-digit identification number from 4 BCD bytes (LSB first); hex digits kept as they are."""
    return raw[::-1].hex().upper()


def decode_user_data(
    ci: int, data: bytes, *, address: int | None = None, base_offset: int = 0, strict: bool = False
) -> MBusTelegram:
    """Decode the application layer of a wired RSP_UD given its CI and data bytes (see parse_records on ``strict``)."""
    if ci in (CI_VARIABLE, CI_VARIABLE_MSB):
        return _decode_variable(ci, data, address, base_offset, strict)
    if ci in (CI_FIXED, CI_FIXED_MSB):
        return _decode_fixed(ci, data, address, base_offset)
    if ci == CI_APPLICATION_ERROR:
        code = data[0] if data else 0
        reason = APPLICATION_ERRORS.get(code, f"error code {code}")
        raise ProtocolError(f"meter reported an application error: {reason}", offset=base_offset, frame=data)
    raise ProtocolError(f"unsupported CI field 0x{ci:02X} in a wired reply", offset=base_offset - 1, frame=data)


def _decode_variable(ci: int, data: bytes, address: int | None, base_offset: int, strict: bool) -> MBusTelegram:
    if len(data) < HEADER_LONG:
        raise ProtocolError(
            f"variable data header is 12 bytes, got {len(data)}", offset=base_offset + len(data), frame=data
        )
    msb = ci == CI_VARIABLE_MSB
    header = data[:HEADER_LONG]

    def field(raw: bytes) -> bytes:
        return raw[::-1] if msb else raw

    man = decode_int(field(header[4:6]), signed=False)
    medium = header[7]
    records, more, unparsed = parse_records(
        data[HEADER_LONG:], medium=medium, msb_first=msb, base_offset=base_offset + HEADER_LONG, strict=strict
    )
    return MBusTelegram(
        id=bcd_id(field(header[0:4])),
        manufacturer=manufacturer_code(man),
        medium=medium_text(medium),
        version=header[6],
        access_number=header[8],
        status=header[9],
        records=records,
        medium_code=medium,
        signature=decode_int(field(header[10:12]), signed=False),
        ci=ci,
        more_records_follow=more,
        address=address,
        unparsed=unparsed,
    )


def _decode_fixed(ci: int, data: bytes, address: int | None, base_offset: int) -> MBusTelegram:
    if len(data) != 16:
        raise ProtocolError(f"fixed data structure is 16 bytes, got {len(data)}", offset=base_offset, frame=data)
    msb = ci == CI_FIXED_MSB

    def field(raw: bytes) -> bytes:
        return raw[::-1] if msb else raw

    status = data[5]
    unit1, unit2 = data[6], data[7]
    # The medium is split over the two top bits of each medium/unit byte (unit 2 byte high).
    medium = ((unit2 >> 6) << 2) | (unit1 >> 6)
    records: list[MBusRecord] = []
    unit_code = unit1 & 0x3F
    for index, (raw, own_code) in enumerate(((data[8:12], unit1 & 0x3F), (data[12:16], unit2 & 0x3F))):
        historic = index == 1 and (own_code == 0x3E or bool(status & 0x40))
        code = unit_code if own_code == 0x3E else own_code
        unit, exponent = _FIXED_UNITS.get(code, ("", 0))
        wire = field(raw)
        number = decode_int(wire, signed=False) if status & 0x80 else decode_bcd(wire)
        error = None if number is not None else "invalid BCD digits"
        value: int | Decimal | None = None
        if number is not None:
            value = number * 10**exponent if exponent >= 0 else Decimal(number).scaleb(exponent)
        description = f"Counter {index + 1}" + (" (historic)" if historic else "")
        records.append(MBusRecord(None, value, unit, 1 if historic else 0, 0, 0, "instantaneous", description, error))
    return MBusTelegram(
        id=bcd_id(field(data[0:4])),
        manufacturer="",
        medium=medium_text(_FIXED_MEDIA.get(medium, 0x0F)),
        version=0,
        access_number=data[4],
        status=status,
        records=records,
        medium_code=_FIXED_MEDIA.get(medium, 0x0F),
        ci=ci,
        address=address,
    )


# Four-bit medium of the fixed structure -> variable-structure medium byte.
_FIXED_MEDIA = {0x0: 0x00, 0x1: 0x01, 0x2: 0x02, 0x3: 0x03, 0x4: 0x04, 0x5: 0x05, 0x6: 0x06, 0x7: 0x07, 0x8: 0x08}


def decode_mbus_telegram(data: bytes, *, strict: bool = False) -> MBusTelegram:
    """Decode a whole wired RSP_UD long frame (68 L L 68 ... 16); raises only gxcore errors.

    Tolerant by default: bytes after the frame's stop byte (one byte more than the L field says,
    a gateway's padding) and records that cannot be read come back in ``unparsed``; the checksum
    is always checked. ``strict=True`` refuses both.
    """
    data = bytes(data)
    trailing = b""
    if not strict and len(data) > 4 and data[0] == 0x68 and data[1] == data[2] and data[3] == 0x68:
        total = data[1] + 6
        if len(data) > total:
            data, trailing = data[:total], data[total:]
    frame = parse_frame(data)
    if not isinstance(frame, LongFrame):
        raise ProtocolError(f"expected a long frame with user data, got {type(frame).__name__}", frame=data)
    telegram = decode_user_data(frame.ci, frame.data, address=frame.address, base_offset=7, strict=strict)
    if trailing:
        extra = Unparsed(len(data), trailing, f"{len(trailing)} byte(s) after the frame's stop byte")
        telegram = replace(telegram, unparsed=[*telegram.unparsed, extra])
    return telegram
