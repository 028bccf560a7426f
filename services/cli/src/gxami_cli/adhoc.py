"""Ad-hoc field reads without a device profile: `gxami get dlms|modbus|mbus` and `gxami scan mbus`.

A technician at a meter wants one value now: one OBIS code, one register, one M-Bus meter's
records, or which meters answer on a bus. These commands build what a profile would say from
the command line and read through the same drivers and sessions as `gxami read`, with the same
option spellings (``-o K=V`` for protocol options, ``--password-env/--key-env/--auth-key-env``
for secrets) and the same output and error rules (JSON on stdout; one line on stderr with exit
code 2 for bad input, 1 for the meter or the link).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from gxami_cli.counters import COUNTERS_HELP, counter_store
from gxami_cli.field import (
    AUTH_KEY_ENV,
    PASSWORD_ENV,
    InputError,
    parse_pairs,
    read_secrets,
    run_guarded,
)
from gxcore.errors import MeterTimeoutError
from gxcore.readings import json_value

if TYPE_CHECKING:
    from gxcore.protocols.mbus.frame import SecondaryAddress

get_app = typer.Typer(
    help="Read one value (an OBIS code, a register, an M-Bus meter's records) without a device profile.",
    no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
)  # fmt: skip
scan_app = typer.Typer(
    help="Find the meters on a bus.", no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False
)

OPTION = typer.Option([], "--option", "-o", metavar="K=V", help="protocol option, repeatable (as for gxami read)")
KEY_ENV = typer.Option(None, "--key-env", metavar="VAR", help="variable with the block cipher key")
TIMEOUT = typer.Option(5.0, "--timeout", min=0.01, help="seconds per exchange")
# Register classes whose value has a scaler and unit (attribute 3; 4 for a demand register).
_SCALED = {3: 3, 4: 3, 5: 4}


def _bounded(work: Any, timeout: float) -> Any:
    """Run ``work`` (a coroutine) with the whole session bounded, as gxami read does."""
    import asyncio

    limit = max(30.0, 20 * timeout)

    async def run() -> Any:
        try:
            async with asyncio.timeout(limit):
                return await work
        except TimeoutError:
            raise MeterTimeoutError(f"the read did not finish within {limit:g} s") from None

    return asyncio.run(run())


@get_app.command("dlms")
def get_dlms(
    url: str = typer.Argument(..., help="tcp://host:port, udp://..., serial:///dev/ttyUSB0?baud=9600"),
    obis: str = typer.Argument(..., help="the object's logical name: 1-0:1.8.0 or 1.0.1.8.0.255"),
    class_id: int = typer.Option(3, "--class", min=1, help="COSEM class: 1 Data, 3 Register (default), 4, 5, 8 Clock"),
    attribute: int = typer.Option(2, "--attribute", min=1, help="attribute to read (2: the value)"),
    option: list[str] = OPTION,
    password_env: str | None = PASSWORD_ENV,
    key_env: str | None = KEY_ENV,
    auth_key_env: str | None = AUTH_KEY_ENV,
    timeout: float = TIMEOUT,
    counters_file: Path | None = typer.Option(None, "--counters-file", help=COUNTERS_HELP),
) -> None:
    """One attribute of one COSEM object; a register's value comes scaled, with its unit."""
    from gxcore.drivers.api import unknown_meter_options
    from gxcore.drivers.dlms.driver import DlmsDriver
    from gxcore.drivers.dlms.reader import DlmsSession
    from gxcore.protocols.dlms.association import ALIASES, association_parameters
    from gxcore.protocols.dlms.cosem_reads import cosem_value
    from gxcore.protocols.dlms.cosem_time import decode_datetime
    from gxcore.protocols.dlms.obis import dotted, reduced

    def action() -> object:
        try:
            name = dotted(obis)
        except ValueError:
            raise InputError(f"{obis!r} is not an OBIS code such as 1-0:1.8.0 or 1.0.1.8.0.255") from None
        options = parse_pairs(option, "--option")
        refusal = unknown_meter_options(DlmsDriver(), options)
        if refusal is not None:
            raise InputError(refusal)
        merged = {ALIASES.get(k, k): v for k, v in options.items()}
        secrets = read_secrets(password_env, key_env, [], auth_key_env)
        params = association_parameters(merged, secrets, owner="command line")
        counters = counter_store(counters_file) if params.security is not None else None

        async def read() -> tuple[object, int | None, str | None]:
            async with DlmsSession(url, params, timeout=timeout, counters=counters) as session:
                raw = await session.get(class_id, name, attribute)
                if attribute == 2 and class_id in _SCALED:
                    scaler, unit = await session.scaler_unit(name, class_id)
                    return raw, scaler, unit
                return raw, None, None

        raw, scaler, unit = _bounded(read(), timeout)
        out: dict[str, object] = {"obis": reduced(name), "class": class_id, "attribute": attribute}
        if scaler is not None:
            out |= {"value": json_value(cosem_value(raw, scaler, name)), "unit": unit, "scaler": scaler}
        elif class_id == 8 and attribute == 2 and isinstance(raw, bytes | bytearray):
            clock = decode_datetime(bytes(raw))
            out["value"] = clock.isoformat() if clock is not None else None
        else:
            out["value"] = _plain(raw)
        return out

    run_guarded("get dlms", action)


def _plain(value: object) -> object:
    """A decoded A-XDR value as JSON: numbers and text as they are, octet strings hex, structures lists."""
    if isinstance(value, bytes | bytearray):
        text = bytes(value)
        return text.decode() if text.isascii() and text.decode().isprintable() and text else text.hex()
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, bool | int | float | str) or value is None:
        return value
    return str(value)  # gurux's bit-string, enums: their text


@get_app.command("modbus")
def get_modbus(
    url: str = typer.Argument(..., help="tcp://host:port (Modbus TCP), serial:///dev/ttyUSB0?baud=9600 (RTU)"),
    register: str = typer.Option(..., "--register", help="address (0x48, 72) or table:address (input:0x48)"),
    table: str = typer.Option("holding", "--table", help="holding (default), input, coil or discrete"),
    count: int | None = typer.Option(None, "--count", min=1, max=125, help="registers to read (default: one value)"),
    value_type: str = typer.Option("uint16", "--type", help="int16, uint16 (default), int32, uint32, float32, ..."),
    word_order: str = typer.Option("big", "--word-order", help="big (high word first) or little"),
    byte_order: str = typer.Option("big", "--byte-order", help="big or little, inside each register"),
    option: list[str] = OPTION,
    timeout: float = TIMEOUT,
) -> None:
    """Registers read and decoded as --type: one value, or --count registers as consecutive values."""
    from gxcore.drivers import MeterTarget, ReadRequest, load_driver
    from gxcore.drivers.api import unknown_meter_options
    from gxcore.profiles.model import DeviceProfile, OptionValue, ProfilePoint
    from gxcore.protocols.modbus.profile import ValueType

    def action() -> object:
        where, _, address_text = register.rpartition(":")
        chosen_table = where or table
        try:
            address = int(address_text, 0)
        except ValueError:
            raise InputError(f"--register {register!r}: the address is not a number (72, 0x48)") from None
        types = {t.label: t for t in ValueType}
        if value_type not in types or types[value_type] is ValueType.BIT:
            raise InputError(f"--type {value_type!r}: use one of {', '.join(t for t in types if t != 'bit')}")
        if value_type == "string" and count is None:
            raise InputError("--type string needs --count (registers of text)")
        width = types[value_type].registers or (count or 1)
        values = 1 if value_type == "string" or count is None else max(1, count // width)
        if count is not None and value_type != "string" and count % width:
            raise InputError(f"--count {count} is not a multiple of the {width} registers of a {value_type}")
        options: dict[str, OptionValue] = {"type": value_type, "word_order": word_order, "byte_order": byte_order}
        if value_type == "string":
            options["length"] = width
        points = [
            ProfilePoint(
                quantity=f"0-0:96.{(index // 255) % 255}.{index % 255}",
                unit="",
                source=f"{chosen_table}:{address + index * width:#06x}",
                options=options,
            )
            for index in range(values)
        ]
        profile = DeviceProfile(name="command-line", protocol="modbus", points=points)
        driver = load_driver("modbus")
        meter_options = parse_pairs(option, "--option")
        refusal = unknown_meter_options(driver, meter_options)
        if refusal is not None:
            raise InputError(refusal)
        driver.validate_profile(profile)
        target = MeterTarget(url, url, meter_options)
        target.endpoint()
        result = _bounded(driver.read(target, profile, ReadRequest(), timeout=timeout), timeout)
        by_source = {p.quantity: p.source for p in points}
        return {
            "values": [
                {"register": by_source[r.quantity], "value": json_value(r.value), "type": value_type}
                for r in result.readings
            ],
        }

    run_guarded("get modbus", action)


@get_app.command("mbus")
def get_mbus(
    url: str = typer.Argument(..., help="tcp://gateway:port or serial:///dev/ttyUSB0?baud=2400"),
    address: str = typer.Option(..., "--address", help="primary address (0-250) or 16-hex-digit secondary address"),
    timeout: float = typer.Option(1.0, "--timeout", min=0.01, help="seconds per reply"),
) -> None:
    """Every record of one M-Bus meter, as `gxami decode mbus` prints them (no profile)."""
    from gxcore.drivers.mbus import read_telegrams
    from gxcore.media.endpoint import Endpoint
    from gxcore.protocols.mbus.frame import SecondaryAddress

    def action() -> object:
        endpoint = Endpoint.parse(url)
        chosen: int | SecondaryAddress
        if len(address) == 16:
            try:
                chosen = SecondaryAddress.parse(address)
            except ValueError:
                raise InputError(f"--address {address!r} is not a secondary address (16 hex digits)") from None
        else:
            try:
                chosen = int(address, 0)
            except ValueError:
                raise InputError(f"--address {address!r}: a primary address 0-250 or 16 hex digits") from None
        complete = _bounded(read_telegrams(endpoint, chosen, timeout=timeout), timeout)
        return {"telegrams": [t.to_json_dict() for t in complete.telegrams], "truncated": complete.truncated}

    run_guarded("get mbus", action)


@scan_app.command("mbus")
def scan_mbus(
    url: str = typer.Argument(..., help="tcp://gateway:port or serial:///dev/ttyUSB0?baud=2400"),
    mask: str | None = typer.Option(None, "--mask", help="search below this secondary address (F = any digit)"),
    timeout: float = typer.Option(0.5, "--timeout", min=0.01, help="seconds per reply"),
) -> None:
    """A wildcard secondary-address search of the bus: every meter that answers, with its identity."""
    from gxcore.drivers.mbus import scan_bus
    from gxcore.media.endpoint import Endpoint
    from gxcore.protocols.mbus.frame import SecondaryAddress

    def action() -> object:
        endpoint = Endpoint.parse(url)
        below = None
        if mask is not None:
            try:
                below = SecondaryAddress.parse(mask)
            except ValueError:
                raise InputError(f"--mask {mask!r} is not a secondary address (16 hex digits, F = any)") from None
        # A search selects and reads up to thousands of masks: bound it by the bus, not one exchange.
        found = _bounded(scan_bus(endpoint, timeout=timeout, mask=below), 50 * timeout)
        return {
            "meters": [_identity(a) for a in found.found],
            "unresolved": [str(m) for m in found.unresolved],
        }

    run_guarded("scan mbus", action)


def _identity(address: SecondaryAddress) -> dict[str, object]:
    from gxcore.protocols.mbus.quantities import medium_text

    return {
        "secondary_address": str(address),
        "id": address.id_digits,
        "manufacturer": address.manufacturer_code,
        "version": address.version,
        "medium": medium_text(address.medium),
    }
