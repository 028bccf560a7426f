"""Modbus device-profile conventions: where a point lives and how its registers read.

Point ``source`` is ``<table>:<address>``: the zero-based address as it travels in the
request PDU (not the 1-based "register number" of vendor sheets), decimal or ``0x`` hex::

    table      read function   write function           unit of address/count
    coil       01              05 (one coil)            bit
    discrete   02              -                        bit
    holding    03              16 (06 on request)       16-bit register
    input      04              -                        16-bit register

so ``input:0x0048`` is the SDM630's "import active energy", register number 30073.

Point ``options`` (register tables; coil/discrete points are always 0 or 1):

    type        int16 uint16 int32 uint32 int64 uint64 float32 float64 string
                (default uint16)
    length      registers of a ``string`` point (required for strings, 1..125)
    byte_order  big | little: order of the two bytes inside each register (default big)
    word_order  big | little: order of the registers of a multi-register value;
                big = most significant register first (default big)
    invalid     raw integer the device reports for "not available" (ABB: 0xFFFFFFFF);
                such a point, and a NaN float, yield no reading

The value handed upward is ``raw * point.scale + point.offset``. A string point yields
no numeric reading; its text is attached to the other readings of the same read as
``extra[quantity]`` (e.g. a firmware version), because a Reading's value is a number.

Profile ``parameters`` (all optional):

    unit_id                    device id (default 1; a target's ``options["unit_id"]``
                               or the URL query ``unit_id`` wins)
    max_registers_per_request  1..125 (default 125; Eastron meters accept 80)
    max_bits_per_request       1..2000 (default 2000)
    max_gap                    unrequested registers (bits) one merged request may span
                               between two points (default 0: merge only adjacent points)
    timeout                    seconds; caps the caller's per-exchange timeout
    retries                    re-sends after a timeout, each on a fresh connection (default 1)
    single_register_write      write one-register holding points with 06, not 16 (default false)

Serial line settings come from the meter URL, not the profile, because they belong to
the bus: ``serial:///dev/ttyUSB0?baud=9600&parity=E&stopbits=1&bytesize=8``;
``tcp://host:502`` speaks Modbus TCP, ``tcp://host:4001?framer=rtu`` RTU over TCP.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Literal

from gxcore.errors import ConfigurationError
from gxcore.profiles.model import DeviceProfile, OptionValue, ProfilePoint

MAX_REGISTERS = 125  # Modbus application protocol spec, function 03/04 quantity limit
MAX_BITS = 2000  # function 01/02 quantity limit
MAX_ADDRESS = 0xFFFF

Order = Literal["big", "little"]


class Table(Enum):
    """The four Modbus data tables, with their read function codes."""

    COIL = ("coil", 1)
    DISCRETE = ("discrete", 2)
    HOLDING = ("holding", 3)
    INPUT = ("input", 4)

    def __init__(self, label: str, read_function: int) -> None:
        self.label = label
        self.read_function = read_function

    @property
    def is_bits(self) -> bool:
        return self in (Table.COIL, Table.DISCRETE)

    @property
    def writable(self) -> bool:
        return self in (Table.COIL, Table.HOLDING)


class ValueType(Enum):
    """How the registers of one point encode its raw value: (name, registers, struct code)."""

    BIT = ("bit", 0, "")
    INT16 = ("int16", 1, "h")
    UINT16 = ("uint16", 1, "H")
    INT32 = ("int32", 2, "i")
    UINT32 = ("uint32", 2, "I")
    INT64 = ("int64", 4, "q")
    UINT64 = ("uint64", 4, "Q")
    FLOAT32 = ("float32", 2, "f")
    FLOAT64 = ("float64", 4, "d")
    STRING = ("string", 0, "")

    def __init__(self, label: str, registers: int, struct_code: str) -> None:
        self.label = label
        self.registers = registers
        self.struct_code = struct_code

    @property
    def is_integer(self) -> bool:
        return self.struct_code in {"h", "H", "i", "I", "q", "Q"}

    @property
    def is_float(self) -> bool:
        return self.struct_code in {"f", "d"}

    @property
    def signed(self) -> bool:
        return self.struct_code in {"h", "i", "q"}

    def integer_range(self) -> tuple[int, int]:
        """Smallest and largest raw integer of this type."""
        bits = 16 * self.registers
        if self.signed:
            return -(1 << (bits - 1)), (1 << (bits - 1)) - 1
        return 0, (1 << bits) - 1


_TABLES = {t.label: t for t in Table}
_REGISTER_TYPES = {t.label: t for t in ValueType if t is not ValueType.BIT}
_POINT_OPTIONS = frozenset({"type", "length", "byte_order", "word_order", "invalid"})


@dataclass(frozen=True, slots=True, eq=False)
class RegisterPoint:
    """A profile point resolved to its Modbus table, address, width and encoding."""

    point: ProfilePoint
    table: Table
    address: int
    value_type: ValueType
    count: int  # registers, or bits for coil/discrete
    byte_order: Order = "big"
    word_order: Order = "big"
    invalid: int | None = None

    @property
    def end(self) -> int:
        """First address after this point."""
        return self.address + self.count

    @property
    def reordered(self) -> bool:
        """True when its registers are not big/big (bytes or words to swap before decoding)."""
        return self.byte_order != "big" or self.word_order != "big"

    def describe(self) -> str:
        return f"{self.point.quantity} at {self.table.label}:{self.address:#06x}"


@dataclass(frozen=True, slots=True)
class ModbusParameters:
    """Profile-level Modbus settings with their defaults applied."""

    unit_id: int = 1
    max_registers_per_request: int = MAX_REGISTERS
    max_bits_per_request: int = MAX_BITS
    max_gap: int = 0
    timeout: float | None = None
    retries: int = 1
    single_register_write: bool = False

    def max_count(self, table: Table) -> int:
        return self.max_bits_per_request if table.is_bits else self.max_registers_per_request


def parse_source(source: str) -> tuple[Table, int]:
    """``"input:0x0048"`` -> (Table.INPUT, 72); ConfigurationError on anything else."""
    label, sep, address_text = source.partition(":")
    table = _TABLES.get(label.strip().lower())
    if not sep or table is None:
        raise ConfigurationError(
            f"Modbus source {source!r}: expected <table>:<address> with table one of {sorted(_TABLES)}"
        )
    try:
        address = int(address_text.strip(), 0)
    except ValueError:
        raise ConfigurationError(f"Modbus source {source!r}: address is not a number") from None
    if not 0 <= address <= MAX_ADDRESS:
        raise ConfigurationError(f"Modbus source {source!r}: address outside 0..0xFFFF")
    return table, address


def _order(point: ProfilePoint, key: str) -> Order:
    value = point.options.get(key, "big")
    if value == "big":
        return "big"
    if value == "little":
        return "little"
    raise ConfigurationError(f"point {point.quantity}: option {key} must be 'big' or 'little', not {value!r}")


def register_point(point: ProfilePoint) -> RegisterPoint:
    """Resolve one profile point; ConfigurationError names the point and the bad option."""
    table, address = parse_source(point.source)
    unknown = set(point.options) - _POINT_OPTIONS
    if unknown:
        raise ConfigurationError(f"point {point.quantity}: unknown Modbus option(s) {sorted(unknown)}")
    invalid = point.options.get("invalid")
    if invalid is not None and (isinstance(invalid, bool) or not isinstance(invalid, int)):
        raise ConfigurationError(f"point {point.quantity}: option invalid must be an integer")
    if table.is_bits:
        if point.options.get("type", "bit") not in {"bit", "bool"} or "length" in point.options:
            raise ConfigurationError(f"point {point.quantity}: {table.label} points are single bits")
        return RegisterPoint(point, table, address, ValueType.BIT, 1, invalid=invalid)
    type_name = point.options.get("type", "uint16")
    value_type = _REGISTER_TYPES.get(type_name) if isinstance(type_name, str) else None
    if value_type is None:
        raise ConfigurationError(f"point {point.quantity}: type {type_name!r} is not one of {sorted(_REGISTER_TYPES)}")
    if value_type is ValueType.STRING:
        length = point.options.get("length")
        if isinstance(length, bool) or not isinstance(length, int) or not 1 <= length <= MAX_REGISTERS:
            raise ConfigurationError(f"point {point.quantity}: a string needs length 1..125 (registers)")
        count = length
    else:
        if "length" in point.options:
            raise ConfigurationError(f"point {point.quantity}: length applies to strings only")
        count = value_type.registers
    if address + count - 1 > MAX_ADDRESS:
        raise ConfigurationError(f"point {point.quantity}: registers run past address 0xFFFF")
    return RegisterPoint(
        point,
        table,
        address,
        value_type,
        count,
        byte_order=_order(point, "byte_order"),
        word_order=_order(point, "word_order"),
        invalid=invalid,
    )


def _int_parameter(params: Mapping[str, OptionValue], key: str, default: int, low: int, high: int) -> int:
    value = params.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ConfigurationError(f"Modbus parameter {key} must be an integer in {low}..{high}, not {value!r}")
    return value


def parse_unit_id(value: object, where: str) -> int:
    """A device id from a profile, a target option or a URL query; 0..255."""
    try:
        unit = int(str(value), 0)
    except ValueError:
        raise ConfigurationError(f"{where}: unit_id {value!r} is not a number") from None
    if not 0 <= unit <= 255:
        raise ConfigurationError(f"{where}: unit_id {unit} outside 0..255")
    return unit


def modbus_parameters(profile: DeviceProfile) -> ModbusParameters:
    """Read and check the profile's Modbus parameters."""
    params = profile.parameters
    known = set(ModbusParameters.__dataclass_fields__)
    unknown = set(params) - known
    if unknown:
        raise ConfigurationError(f"profile {profile.name}: unknown Modbus parameter(s) {sorted(unknown)}")
    timeout = params.get("timeout")
    if timeout is not None and (
        isinstance(timeout, bool) or not isinstance(timeout, int | float) or not 0 < timeout <= 600
    ):
        raise ConfigurationError(f"profile {profile.name}: timeout must be seconds in (0, 600]")
    single = params.get("single_register_write", False)
    if not isinstance(single, bool):
        raise ConfigurationError(f"profile {profile.name}: single_register_write must be true or false")
    return ModbusParameters(
        unit_id=parse_unit_id(params.get("unit_id", 1), f"profile {profile.name}"),
        max_registers_per_request=_int_parameter(params, "max_registers_per_request", MAX_REGISTERS, 1, 125),
        max_bits_per_request=_int_parameter(params, "max_bits_per_request", MAX_BITS, 1, 2000),
        max_gap=_int_parameter(params, "max_gap", 0, 0, 2000),
        timeout=float(timeout) if timeout is not None else None,
        retries=_int_parameter(params, "retries", 1, 0, 10),
        single_register_write=single,
    )


def register_points(profile: DeviceProfile, points: list[ProfilePoint] | None = None) -> list[RegisterPoint]:
    """Resolve ``points`` (default: all of the profile) and check each fits one request."""
    parameters = modbus_parameters(profile)
    resolved = [register_point(p) for p in (profile.points if points is None else points)]
    for rp in resolved:
        if rp.count > parameters.max_count(rp.table):
            raise ConfigurationError(
                f"profile {profile.name}: {rp.describe()} spans {rp.count} registers, "
                f"more than max_registers_per_request={parameters.max_registers_per_request}"
            )
    return resolved


def validate_modbus_profile(profile: DeviceProfile) -> None:
    """Raise ConfigurationError unless every point and parameter follows these conventions."""
    if profile.protocol != "modbus":
        raise ConfigurationError(f"profile {profile.name}: protocol is {profile.protocol!r}, not 'modbus'")
    register_points(profile)
