"""The Modbus protocol driver: profile points in, canonical readings out; and point writes.

``tcp://host:port`` speaks Modbus TCP (``?framer=rtu`` for RTU-over-TCP converters),
``serial:///dev/ttyUSB0?baud=9600&parity=E&stopbits=1&bytesize=8`` speaks RTU. The
device id comes from ``target.options["unit_id"]``, else the URL query ``unit_id``,
else the profile parameter ``unit_id``, else 1. Profile conventions: gxcore.protocols.modbus.profile.

Each ``read`` opens its own connection and closes it at the end; reads that share a
medium (one serial port, one TCP gateway) are serialised inside a driver instance, as
an RS-485 bus answers one request at a time. ``execute`` takes ``write-point`` (through
:meth:`ModbusDriver.write_point`) and reads the written point back into the result.
Modbus is a request/response protocol that meters never open: ``read`` over a connection
a meter opened and ``serve`` are refused.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import datetime
from decimal import Decimal
from typing import ClassVar
from weakref import WeakKeyDictionary

from pymodbus.pdu import ModbusPDU

from gxcore.drivers.api import (
    BaseDriver,
    CommandResult,
    DriverCommand,
    MeterTarget,
    PointProblem,
    ReadRequest,
    ReadResult,
    nothing_selected,
)
from gxcore.drivers.common import utc_now
from gxcore.drivers.modbus_link import LinkSettings, ModbusClient, ModbusLink, Request, reply_values
from gxcore.errors import ConfigurationError, ProtocolError
from gxcore.media import Medium
from gxcore.profiles.model import DeviceProfile, ProfilePoint
from gxcore.protocols.modbus.codec import RawValue, encode_value, engineering_value, is_unavailable, raw_for
from gxcore.protocols.modbus.planner import ReadBlock, plan_reads, split_block
from gxcore.protocols.modbus.profile import (
    ModbusParameters,
    RegisterPoint,
    Table,
    ValueType,
    modbus_parameters,
    parse_source,
    parse_unit_id,
    register_point,
    register_points,
    validate_modbus_profile,
)
from gxcore.readings import Reading


def unit_id_for(target: MeterTarget, parameters: ModbusParameters) -> int:
    """The device id to address: target option, then URL query, then profile parameter."""
    if "unit_id" in target.options:
        return parse_unit_id(target.options["unit_id"], f"meter {target.meter_id}")
    query = target.endpoint().query
    if "unit_id" in query:
        return parse_unit_id(query["unit_id"], f"meter {target.meter_id} URL")
    return parameters.unit_id


def exchange_timeout(timeout: float, parameters: ModbusParameters) -> float:
    """The per-exchange deadline: the caller's, capped by the profile's ``timeout``."""
    if not timeout > 0:
        raise ConfigurationError(f"timeout must be positive, not {timeout}")
    return min(timeout, parameters.timeout) if parameters.timeout is not None else timeout


class ModbusDriver(BaseDriver):
    """Reads and writes Modbus meters described by device profiles (protocol ``modbus``)."""

    name: ClassVar[str] = "modbus"
    meter_options: ClassVar[frozenset[str] | None] = frozenset({"unit_id"})

    def __init__(self, *, clock: Callable[[], datetime] = utc_now) -> None:
        self._clock = clock
        # Locks belong to one event loop; keying by loop keeps a driver usable across loops.
        self._locks: WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, asyncio.Lock]] = WeakKeyDictionary()

    def validate_profile(self, profile: DeviceProfile) -> None:
        validate_modbus_profile(profile)

    def _medium_lock(self, key: str) -> asyncio.Lock:
        locks = self._locks.setdefault(asyncio.get_running_loop(), {})
        return locks.setdefault(key, asyncio.Lock())

    async def read(
        self,
        target: MeterTarget,
        profile: DeviceProfile,
        request: ReadRequest,
        *,
        timeout: float,
        medium: Medium | None = None,
    ) -> ReadResult:
        if medium is not None:
            raise ConfigurationError(
                f"meter {target.meter_id}: the modbus driver cannot read over a connection the meter opened"
            )
        validate_modbus_profile(profile)
        selected = profile.points_for(request.purposes)
        if not selected:
            return nothing_selected(profile, request)
        return await self._read_points(target, profile, selected, timeout)

    async def _read_points(
        self, target: MeterTarget, profile: DeviceProfile, selected: list[ProfilePoint], timeout: float
    ) -> ReadResult:
        parameters = modbus_parameters(profile)
        points = register_points(profile, selected)
        settings = LinkSettings.from_endpoint(target.endpoint())
        unit = unit_id_for(target, parameters)
        deadline = exchange_timeout(timeout, parameters)
        plan = plan_reads(points, parameters)
        if not plan:
            return ReadResult(readings=[])
        replies: list[tuple[datetime, list[tuple[RegisterPoint, RawValue]]]] = []
        problems: list[PointProblem] = []
        failures: list[ProtocolError] = []
        async with self._medium_lock(settings.key):
            link = ModbusLink(settings, meter_id=target.meter_id)
            try:
                for block in plan:
                    try:
                        words = await self._read_block(link, block, unit, deadline, parameters.retries)
                        replies.append((self._clock(), split_block(block, words)))
                        continue
                    except ProtocolError as exc:  # an exception reply (illegal data address, ...): the link is fine
                        if len(block.points) == 1:
                            failures.append(exc)
                            problems.append(_problem(block.points[0], exc))
                            continue
                    # One bad point in a merged block: read its points one by one, keep the good ones.
                    for rp in block.points:
                        alone = ReadBlock(rp.table, rp.address, rp.count, (rp,))
                        try:
                            words = await self._read_block(link, alone, unit, deadline, parameters.retries)
                            replies.append((self._clock(), split_block(alone, words)))
                        except ProtocolError as exc:
                            failures.append(exc)
                            problems.append(_problem(rp, exc))
            finally:
                link.close()
        readings, unavailable = _readings(replies)
        problems.extend(unavailable)
        if failures and not readings:
            raise failures[0]  # nothing read: the read fails with the first reason, as DLMS does
        return ReadResult(readings=readings, problems=problems)

    async def execute(
        self, target: MeterTarget, profile: DeviceProfile, command: DriverCommand, *, timeout: float
    ) -> CommandResult:
        """``write-point``: write ``command.value`` to ``command.point`` (quantity or source), then read it back."""
        if command.kind != "write-point":
            return await super().execute(target, profile, command, timeout=timeout)
        if not command.point:
            raise ConfigurationError(f"meter {target.meter_id}: write-point needs a point (quantity or source)")
        value = command.value
        if isinstance(value, Decimal):
            value = float(value)
        if value is None or isinstance(value, bytes):
            raise ConfigurationError(f"meter {target.meter_id}: write-point needs a number, a boolean or text")
        validate_modbus_profile(profile)
        written = _writable_point(profile, command.point)
        await self.write_point(target, profile, command.point, value, timeout=timeout)
        back = await self._read_points(target, profile, [written.point], timeout)
        return CommandResult(command, readings=back.readings, detail=f"wrote {written.describe()}")

    async def _read_block(
        self, link: ModbusLink, block: ReadBlock, unit: int, timeout: float, retries: int
    ) -> list[int]:
        reply = await link.exchange(
            block.function, block.address, _read_request(block, unit), timeout=timeout, retries=retries
        )
        return reply_values(reply, block.function, block.count, block.describe(), link.meter_id)

    async def write_point(
        self,
        target: MeterTarget,
        profile: DeviceProfile,
        quantity_or_source: str,
        value: float | bool | str,
        *,
        timeout: float,
    ) -> None:
        """Write ``value``, in the point's unit as read, to a coil or holding point (scale undone)."""
        validate_modbus_profile(profile)
        parameters = modbus_parameters(profile)
        rp = _writable_point(profile, quantity_or_source)
        words = encode_value(rp, raw_for(rp, value))
        settings = LinkSettings.from_endpoint(target.endpoint())
        unit = unit_id_for(target, parameters)
        deadline = exchange_timeout(timeout, parameters)
        if rp.table is Table.COIL:
            function = 0x05
            on = bool(words[0])

            def send(c: ModbusClient) -> Awaitable[ModbusPDU]:
                return c.write_coil(rp.address, on, device_id=unit)

        elif rp.count == 1 and parameters.single_register_write:
            function = 0x06

            def send(c: ModbusClient) -> Awaitable[ModbusPDU]:
                return c.write_register(rp.address, words[0], device_id=unit)

        else:
            function = 0x10

            def send(c: ModbusClient) -> Awaitable[ModbusPDU]:
                return c.write_registers(rp.address, words, device_id=unit)

        async with self._medium_lock(settings.key):
            link = ModbusLink(settings, meter_id=target.meter_id)
            try:
                # A write is not blindly repeated after a timeout: it may have taken effect.
                reply = await link.exchange(function, rp.address, send, timeout=deadline, retries=0)
            finally:
                link.close()
        if reply.address != rp.address:
            raise ProtocolError(
                f"write to {rp.describe()}: reply names address {reply.address:#06x}", meter_id=target.meter_id
            )


def _read_request(block: ReadBlock, unit: int) -> Request:
    address, count = block.address, block.count

    def send(c: ModbusClient) -> Awaitable[ModbusPDU]:
        if block.table is Table.COIL:
            return c.read_coils(address, count=count, device_id=unit)
        if block.table is Table.DISCRETE:
            return c.read_discrete_inputs(address, count=count, device_id=unit)
        if block.table is Table.HOLDING:
            return c.read_holding_registers(address, count=count, device_id=unit)
        return c.read_input_registers(address, count=count, device_id=unit)

    return send


def _writable_point(profile: DeviceProfile, key: str) -> RegisterPoint:
    matches = [p for p in profile.points if p.quantity == key]
    if not matches and ":" in key and not key[0].isdigit():
        wanted = parse_source(key)
        matches = [p for p in profile.points if parse_source(p.source) == wanted]
    if len(matches) != 1:
        found = "no point" if not matches else f"{len(matches)} points"
        raise ConfigurationError(f"profile {profile.name}: {found} for {key!r}; name one quantity or source")
    rp = register_point(matches[0])
    if not rp.table.writable:
        raise ConfigurationError(f"{rp.describe()}: {rp.table.label} points are read-only")
    return rp


def _problem(rp: RegisterPoint, exc: ProtocolError) -> PointProblem:
    return PointProblem(rp.point.quantity, rp.point.source, exc.reason)


def _readings(
    replies: list[tuple[datetime, list[tuple[RegisterPoint, RawValue]]]],
) -> tuple[list[Reading], list[PointProblem]]:
    texts: dict[str, str] = {}
    numbers: list[tuple[datetime, RegisterPoint, int | float]] = []
    unavailable: list[PointProblem] = []
    for at, values in replies:
        for rp, raw in values:
            if isinstance(raw, str):
                texts[rp.point.quantity] = raw
            elif rp.value_type is not ValueType.STRING:
                if is_unavailable(rp, raw):
                    unavailable.append(PointProblem(rp.point.quantity, rp.point.source, "meter reports no value"))
                else:
                    numbers.append((at, rp, raw))
    readings = [
        Reading(
            quantity=rp.point.quantity,
            value=engineering_value(rp, raw),
            unit=rp.point.unit,
            ts=at,
            extra=dict(texts),
        )
        for at, rp, raw in numbers
    ]
    return readings, unavailable
