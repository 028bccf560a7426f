"""Reading COSEM objects as readings: registers with their scaler and unit, load profiles.

:class:`CosemReads` is what :class:`~gxcore.drivers.dlms.reader.DlmsSession` does with its GET
service: scaler/unit cached per association, the value attributes of registers, extended
and demand registers, and load profiles by range or by entry, turned into
:class:`~gxcore.readings.Reading` objects. A subclass provides :meth:`CosemReads.get`.
"""

from __future__ import annotations

from datetime import datetime

from gxcore.errors import ProtocolError
from gxcore.protocols.dlms.cosem_time import decode_datetime
from gxcore.protocols.dlms.obis import apply_scaler, dotted, reduced, unit_symbol
from gxcore.protocols.dlms.parameters import (
    CLASS_DATA,
    CLASS_PROFILE_GENERIC,
    VALUE_ATTRIBUTES,
    CosemValue,
    ProfileEntries,
    ProfileRange,
    RegisterValue,
)
from gxcore.protocols.dlms.profile import (
    CaptureObject,
    clock_column,
    decode_rows,
    encode_entry_selection,
    encode_range_selection,
    needs_capture_period,
    parse_capture_objects,
)
from gxcore.readings import BitString, MeterValue, Reading

ScalerUnit = tuple[int, str]


class CosemReads:
    """Registers and load profiles over one association's GET service (see the module doc)."""

    def __init__(self) -> None:
        self._scaler_units: dict[str, ScalerUnit] = {}

    async def get(self, class_id: int, obis: str, attribute: int, selection: bytes | None = None) -> object:
        """GET one attribute's value; a refused access raises AccessDeniedError/ProtocolError."""
        raise NotImplementedError

    async def scaler_unit(self, obis: str, class_id: int = 3) -> ScalerUnit:
        """Scaler and unit symbol of a register (attribute 3; 4 for a demand register), cached
        for the session; Data has (0, "")."""
        key = dotted(obis)
        where = VALUE_ATTRIBUTES.get(class_id, (2, 3, 0, 0))[1]
        if not where:
            return 0, ""
        if key not in self._scaler_units:
            value = await self.get(class_id, key, where)
            if not (isinstance(value, list) and len(value) == 2 and all(isinstance(v, int) for v in value)):
                raise ProtocolError(f"scaler_unit of {key} is not a structure of two integers")
            scaler, unit = int(value[0]), int(value[1])
            if scaler > 127 or scaler < -128:
                raise ProtocolError(f"scaler of {key} is out of range")
            self._scaler_units[key] = (scaler, unit_symbol(unit))
        return self._scaler_units[key]

    async def read_value(self, item: CosemValue) -> tuple[MeterValue, str]:
        """A value object's value (numbers scaled exactly, see :func:`cosem_value`) and unit symbol."""
        scaler, unit = await self.scaler_unit(item.obis, item.class_id)
        raw = await self.get(item.class_id, item.obis, item.value_attribute)
        return cosem_value(raw, scaler, item.obis), unit

    async def read_register(self, item: CosemValue) -> RegisterValue:
        """Value, unit, and for extended/demand registers the status and capture time (None when unset)."""
        value, unit = await self.read_value(item)
        _value, _su, status_at, time_at = VALUE_ATTRIBUTES[item.class_id]
        status = _status(await self.get(item.class_id, item.obis, status_at)) if status_at else None
        captured = None
        if time_at:
            raw = await self.get(item.class_id, item.obis, time_at)
            if not isinstance(raw, bytes | bytearray):
                raise ProtocolError(f"capture time of {item.obis} is not an octet string")
            captured = None if _unset_time(raw) else decode_datetime(raw)
        return RegisterValue(value, unit, status, captured)

    async def read_profile(self, profile: ProfileRange) -> list[Reading]:
        """Rows of ``profile`` in its range as one reading per captured value column."""
        columns = parse_capture_objects(await self.get(CLASS_PROFILE_GENERIC, profile.obis, 3))
        selection = encode_range_selection(columns[clock_column(columns)], profile.start, profile.end)
        buffer = await self.get(CLASS_PROFILE_GENERIC, profile.obis, 2, selection)
        return await self._profile_readings(profile.obis, columns, buffer, (profile.start, profile.end))

    async def read_profile_entries(self, entries: ProfileEntries) -> list[Reading]:
        """Rows of a profile by entry index (or its ``newest`` entries) as readings."""
        columns = parse_capture_objects(await self.get(CLASS_PROFILE_GENERIC, entries.obis, 3))
        first, last = entries.first, entries.last
        if entries.newest:
            in_use = await self.get(CLASS_PROFILE_GENERIC, entries.obis, 7)
            if isinstance(in_use, bool) or not isinstance(in_use, int) or not 0 <= in_use <= 0xFFFFFFFF:
                raise ProtocolError(f"entries_in_use of {entries.obis} is not a double-long-unsigned count")
            if in_use == 0:
                return []
            first, last = max(1, in_use - entries.newest + 1), in_use
        buffer = await self.get(CLASS_PROFILE_GENERIC, entries.obis, 2, encode_entry_selection(first, last))
        if isinstance(buffer, list) and last and len(buffer) > last - first + 1:
            raise ProtocolError(f"{entries.obis}: {len(buffer)} rows for entries {first}..{last}")
        return await self._profile_readings(entries.obis, columns, buffer, None)

    async def _profile_readings(
        self,
        obis: str,
        columns: tuple[CaptureObject, ...],
        buffer: object,
        window: tuple[datetime, datetime] | None,
    ) -> list[Reading]:
        period: int | None = None
        if needs_capture_period(buffer, columns):
            raw_period = await self.get(CLASS_PROFILE_GENERIC, obis, 4)
            period = raw_period if isinstance(raw_period, int) else None
        units = {pos: await self.scaler_unit(c.obis, c.class_id) for pos, c in _value_columns(columns)}
        tag = {"profile": reduced(obis)}
        status_col = next((pos for pos, c in enumerate(columns) if c.is_status), None)
        readings: list[Reading] = []
        for at, row in decode_rows(buffer, columns, period):
            if window is not None and not window[0] <= at <= window[1]:
                continue  # a meter that answers wider than asked; the window is the contract
            status = row[status_col] if status_col is not None else None
            for pos, (scaler, unit) in units.items():
                raw = row[pos]
                if raw is None:
                    continue  # null-data: nothing was captured in this column for this row
                readings.append(
                    Reading(
                        quantity=reduced(columns[pos].obis),
                        value=cosem_value(raw, scaler, columns[pos].obis),
                        unit=unit,
                        ts=at,
                        status=status if isinstance(status, int) else None,
                        extra=dict(tag),
                    )
                )
        return readings


def _value_columns(columns: tuple[CaptureObject, ...]) -> list[tuple[int, CaptureObject]]:
    """Columns holding values: attribute 2 of a Register or Extended register, or of a Data
    object other than a status word (an event code, say)."""
    return [
        (pos, c)
        for pos, c in enumerate(columns)
        if c.attribute == 2 and (c.class_id in (3, 4) or (c.class_id == CLASS_DATA and not c.is_status))
    ]


def _status(raw: object) -> int | None:
    """A register status: an unsigned number, or a bit-string read as one."""
    if isinstance(raw, bool):
        return int(raw)
    if isinstance(raw, int):
        return raw
    text = str(raw)
    if raw is not None and text and set(text) <= {"0", "1"}:
        return int(text, 2)
    return None


def _unset_time(raw: bytes | bytearray) -> bool:
    """A capture time the meter left unset (all 0xFF or all zero: never captured)."""
    return len(raw) == 0 or all(b == 0xFF for b in raw[:8]) or not any(raw[:4])


def cosem_value(raw: object, scaler: int, obis: str) -> MeterValue:
    """A COSEM value as a reading's value: numbers scaled exactly (:func:`apply_scaler`; an enum is
    its integer code), booleans as they are, visible/UTF-8 strings and printable octet-strings
    (a logical device name, a serial number) as text, other octet-strings as bytes, bit-strings as
    :class:`~gxcore.readings.BitString`. Anything else (a structure, an array) is a ProtocolError."""
    if isinstance(raw, bool):
        return raw
    if isinstance(raw, int | float):
        return apply_scaler(raw, scaler)
    if isinstance(raw, str):
        return raw
    if isinstance(raw, bytes | bytearray):
        return printable_text(bytes(raw))
    if type(raw).__name__ == "GXBitString":  # gurux's bit-string; str() gives its bits, first bit first
        return BitString(str(raw))
    raise ProtocolError(f"value of {obis} is a {type(raw).__name__}, not a number, text or bit-string")


def printable_text(raw: bytes) -> str | bytes:
    """An octet-string as text when it is printable UTF-8 (names, serial numbers), else the bytes."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw
    return text if text.isprintable() else raw
