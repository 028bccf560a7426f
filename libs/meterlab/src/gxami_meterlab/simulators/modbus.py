"""A deterministic Modbus meter simulator: N meters of one device profile, over TCP or RTU.

The register map is built from a device profile, so any Modbus profile can be simulated
(the SDM630's float32 input registers, the B23's uint64 holding registers, ...). Every
value is a pure function of (seed, meter index, instant), published as
``expected_value``: energies grow along a daily load curve, power follows the same
curve, voltages and frequency wobble around 230 V and 50 Hz. Tests inject a clock and
compare a driver's readings with ``expected_value`` exactly.

Meters are addressed like an RS-485 bus behind a TCP gateway: meter ``i`` (1..N) answers
device id ``i`` on one port; with ``port_per_meter`` each meter has its own port and
answers any device id; ``rtu_over_tcp`` behaves like a transparent serial converter:
RTU frames over TCP, one bus (one request at a time) and every reply sent to the newest
connection, late replies included. ``start_rtu()`` serves the same bus as Modbus RTU on a
pseudo-terminal. Like a device, the simulator answers reads outside the profile's
register span with exception 02, counts above the profile's
``max_registers_per_request`` with 03, and unknown functions with 01; registers inside
the span that no point covers read 0. Faults for tests: ``silence`` (no answer, or
gateway exception 0x0B) and ``delay_replies`` (answer late). Writes to coil and holding
points are kept and read back.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import math
import os
import struct
import tty
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from types import TracebackType

from pymodbus.framer import FramerRTU, FramerSocket
from pymodbus.pdu import DecodePDU

from gxcore.drivers import MeterTarget
from gxcore.errors import ConfigurationError, GxError
from gxcore.profiles.model import DeviceProfile, ProfilePoint
from gxcore.protocols.modbus.codec import RawValue, encode_value, engineering_value
from gxcore.protocols.modbus.profile import (
    RegisterPoint,
    Table,
    ValueType,
    modbus_parameters,
    register_point,
    register_points,
)
from gxcore.readings import Number

_EPOCH = datetime(2020, 1, 1, tzinfo=UTC)
_DAY = 86400.0
_OMEGA = 2 * math.pi / _DAY
_PHASE = -math.pi / 2 - _OMEGA * 4 * 3600  # the daily load curve is lowest at 04:00 UTC
_SWING = 0.6  # load swings +-60 % around its mean over the day
_ENERGY_KWH = {"Wh": 1e-3, "kWh": 1.0, "MWh": 1e3, "varh": 1e-3, "kvarh": 1.0, "kVArh": 1.0, "kVAh": 1.0}
_POWER_KW = {"W": 1e-3, "kW": 1.0, "MW": 1e3, "var": 1e-3, "kvar": 1.0, "kVAr": 1.0, "VA": 1e-3, "kVA": 1.0}
_LINE_BAUD = 9600  # serial side of the simulated converter: 11 bit times per byte
_MAX_FRAME = 300  # bytes; a Modbus ADU is at most 260, more without a frame is garbage


def _fraction(seed: int, index: int, key: str) -> float:
    digest = hashlib.blake2b(f"{seed}/{index}/{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0**64


def _load_shape(t: float) -> float:
    return 1.0 + _SWING * math.sin(_OMEGA * t + _PHASE)


def _load_integral(t: float) -> float:
    """Seconds-weighted integral of the load shape from the epoch to ``t``."""
    return t + (_SWING / _OMEGA) * (math.cos(_PHASE) - math.cos(_OMEGA * t + _PHASE))


def ideal_value(seed: int, index: int, point: ProfilePoint, at: datetime) -> float:
    """The simulated physical value of ``point`` at ``at``, before register quantisation."""
    t = (at - _EPOCH).total_seconds()
    h = _fraction(seed, index, f"{point.quantity}@{point.source}")
    wobble = math.sin(2 * math.pi * (t / 3600.0 + h))
    if point.unit in _ENERGY_KWH:
        kwh = 1000.0 + 9000.0 * h + (0.5 + 4.5 * h) * _load_integral(t) / 3600.0
        return kwh / _ENERGY_KWH[point.unit]
    if point.unit in _POWER_KW:
        return (0.5 + 4.5 * h) * _load_shape(t) / _POWER_KW[point.unit]
    if point.unit == "V":
        return 230.0 + 4.0 * wobble
    if point.unit == "A":
        return 2.0 + 8.0 * h * _load_shape(t)
    if point.unit == "Hz":
        return 50.0 + 0.05 * math.sin(2 * math.pi * (t / 600.0 + h))
    return 0.9 + 0.09 * wobble  # dimensionless: power-factor-like


def _wrap(raw: int, value_type: ValueType) -> int:
    low, high = value_type.integer_range()
    return (raw - low) % (high - low + 1) + low  # a register rolls over like a meter's


def raw_value(seed: int, index: int, rp: RegisterPoint, at: datetime) -> RawValue:
    """What the simulated meter keeps in the registers of ``rp`` at ``at``."""
    if rp.value_type is ValueType.BIT:
        return 1 if _fraction(seed, index, f"bit@{rp.point.source}") < 0.5 else 0
    if rp.value_type is ValueType.STRING:
        return f"SIM{seed}-{index}"[: 2 * rp.count]
    scaled = (ideal_value(seed, index, rp.point, at) - rp.point.offset) / (rp.point.scale or 1.0)
    if rp.value_type.is_integer:
        return _wrap(round(scaled), rp.value_type)
    if rp.value_type is ValueType.FLOAT32:
        return float(struct.unpack(">f", struct.pack(">f", scaled))[0])
    return scaled


def expected_value(seed: int, index: int, point: ProfilePoint, at: datetime) -> Number | str:
    """The value a correct driver reports for ``point`` of meter ``index`` read at ``at``."""
    rp = register_point(point)
    raw = raw_value(seed, index, rp, at)
    return raw if isinstance(raw, str) else engineering_value(rp, raw)


@dataclass(frozen=True, slots=True)
class ServedRequest:
    """One request the simulator received (answered or not)."""

    connection: int
    device_id: int
    function: int
    address: int
    count: int


class _RefusedRequestError(Exception):
    """A request the simulated device answers with a Modbus exception."""

    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


class ModbusMeterSimulator:
    """N simulated meters of one profile; ``await start()`` then read ``url()``/``target()``."""

    def __init__(
        self,
        profile: DeviceProfile,
        *,
        meters: int = 1,
        seed: int = 0,
        host: str = "127.0.0.1",
        port: int = 0,
        port_per_meter: bool = False,
        rtu_over_tcp: bool = False,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        if meters < 1 or meters > 247:
            raise ConfigurationError("a simulated bus holds 1..247 meters")
        self.profile = profile
        self.meters = meters
        self.seed = seed
        self.host = host
        self._port = port
        self.port_per_meter = port_per_meter
        self.rtu_over_tcp = rtu_over_tcp
        self._clock = clock or (lambda: datetime.now(UTC))
        self._points = register_points(profile)
        self._max_registers = modbus_parameters(profile).max_registers_per_request
        self._spans = self._table_spans()
        self._written: dict[tuple[int, Table, int], int] = {}
        self._silent: dict[int, bool] = {}
        self._delays: dict[int, list[float]] = {}
        self._servers: list[asyncio.Server] = []
        self._bus = asyncio.Lock()  # a converter's serial side: one exchange at a time
        self._newest: asyncio.StreamWriter | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._pty: tuple[int, int] | None = None
        self.serial_path: str | None = None
        self.requests: list[ServedRequest] = []
        self.connections = 0

    def _table_spans(self) -> dict[Table, tuple[int, int]]:
        spans: dict[Table, tuple[int, int]] = {}
        seen: dict[tuple[Table, int], str] = {}
        for rp in self._points:
            for a in range(rp.address, rp.end):
                if (rp.table, a) in seen:
                    raise ConfigurationError(f"simulator: {rp.describe()} overlaps {seen[(rp.table, a)]}")
                seen[(rp.table, a)] = rp.point.quantity
            low, high = spans.get(rp.table, (rp.address, rp.end))
            spans[rp.table] = (min(low, rp.address), max(high, rp.end))
        return spans

    # -- faults -----------------------------------------------------------------------

    def silence(self, index: int, *, gateway_exception: bool = False) -> None:
        """Meter ``index`` stops answering (or its gateway answers exception 0x0B)."""
        self._silent[index] = gateway_exception

    def wake(self, index: int) -> None:
        self._silent.pop(index, None)

    def delay_replies(self, index: int, seconds: float, count: int = 1) -> None:
        """The next ``count`` replies of meter ``index`` leave ``seconds`` late."""
        self._delays.setdefault(index, []).extend([seconds] * count)

    # -- addressing -------------------------------------------------------------------

    @property
    def ports(self) -> list[int]:
        return [int(s.sockets[0].getsockname()[1]) for s in self._servers]

    def url(self, index: int = 1) -> str:
        port = self.ports[index - 1] if self.port_per_meter else self.ports[0]
        return f"tcp://{self.host}:{port}" + ("?framer=rtu" if self.rtu_over_tcp else "")

    def target(self, index: int = 1, *, serial: bool = False) -> MeterTarget:
        """A MeterTarget for meter ``index`` over TCP, or over the RTU pty when ``serial``."""
        if serial:
            if self.serial_path is None:
                raise ConfigurationError("simulator: start_rtu() first")
            url = f"serial://{self.serial_path}?baud=19200&parity=N"
        else:
            url = self.url(index)
        return MeterTarget(meter_id=f"sim-{self.seed}-{index}", url=url, options={"unit_id": str(index)})

    def expected(self, index: int, point: ProfilePoint, at: datetime) -> Number | str:
        return expected_value(self.seed, index, point, at)

    # -- lifecycle --------------------------------------------------------------------

    async def start(self) -> None:
        """Listen on TCP (port 0 picks a free one; see ``ports``)."""
        if self.port_per_meter:
            for index in range(1, self.meters + 1):
                port = self._port + index - 1 if self._port else 0
                self._servers.append(await self._listen(port, index))
        else:
            self._servers.append(await self._listen(self._port, None))

    async def _listen(self, port: int, index: int | None) -> asyncio.Server:
        async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await self._serve_tcp(reader, writer, index)

        return await asyncio.start_server(on_connect, self.host, port)

    async def start_rtu(self) -> str:
        """Serve the bus as Modbus RTU on a pseudo-terminal; returns the device path to open."""
        master, slave = os.openpty()
        tty.setraw(slave)
        os.set_blocking(master, False)
        self._pty = (master, slave)
        self.serial_path = os.ttyname(slave)
        self._track(asyncio.get_running_loop().create_task(self._serve_rtu(master)))
        return self.serial_path

    async def stop(self) -> None:
        for server in self._servers:
            server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for server in self._servers:
            await server.wait_closed()
        self._servers.clear()
        if self._pty is not None:
            for fd in self._pty:
                os.close(fd)
            self._pty = None

    async def __aenter__(self) -> ModbusMeterSimulator:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    def _track(self, task: asyncio.Task[None]) -> None:
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- transports -------------------------------------------------------------------

    async def _serve_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, index: int | None) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._track(task)
        self.connections += 1
        connection = self.connections
        framer = FramerRTU(DecodePDU(True)) if self.rtu_over_tcp else FramerSocket(DecodePDU(True))
        self._newest = writer
        buffer = b""
        try:
            while chunk := await reader.read(512):
                buffer += chunk
                while buffer:
                    used, device_id, tid, pdu = framer.decode(buffer)
                    if not used:
                        break
                    buffer = buffer[used:]
                    if not pdu:
                        continue  # a frame with a bad CRC (RTU): the device stays silent
                    if self.rtu_over_tcp:
                        async with self._bus:
                            reply = await self._answer(connection, index, device_id, pdu)
                            if reply is not None:
                                frame = framer.encode(reply, device_id, tid)
                                await asyncio.sleep(len(frame) * 11 / _LINE_BAUD)  # time on the wire
                                out = self._newest  # the converter knows no connections, only "the" client
                                if out is not None and not out.is_closing():
                                    out.write(frame)
                        continue
                    reply = await self._answer(connection, index, device_id, pdu)
                    if reply is not None and not writer.is_closing():
                        writer.write(framer.encode(reply, device_id, tid))
                if len(buffer) > _MAX_FRAME:
                    break  # garbage that never forms a frame: drop the connection, as gateways do
        except (ConnectionError, asyncio.CancelledError):
            # Ending quietly on stop(): a cancelled stream handler makes asyncio 3.11 log an
            # error from its own done-callback.
            pass
        finally:
            writer.close()

    async def _serve_rtu(self, master: int) -> None:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[bytes] = asyncio.Queue()

        def readable() -> None:
            with contextlib.suppress(BlockingIOError, OSError):
                queue.put_nowait(os.read(master, 512))

        loop.add_reader(master, readable)
        framer = FramerRTU(DecodePDU(True))
        buffer = b""
        try:
            while True:
                buffer = (buffer + await queue.get())[-_MAX_FRAME:]
                used, device_id, _, pdu = framer.decode(buffer)
                if not used:
                    continue
                buffer = buffer[used:]
                if not pdu:
                    continue
                reply = await self._answer(0, None, device_id, pdu)
                if reply is not None:
                    os.write(master, framer.encode(reply, device_id, 0))
        finally:
            loop.remove_reader(master)

    # -- the device -------------------------------------------------------------------

    async def _answer(self, connection: int, fixed: int | None, device_id: int, pdu: bytes) -> bytes | None:
        index = fixed if fixed is not None else device_id
        if not 1 <= index <= self.meters or not pdu:
            return None  # no such device on the bus: nobody answers
        function = pdu[0]
        address, count = struct.unpack(">HH", pdu[1:5]) if len(pdu) >= 5 else (0, 0)
        self.requests.append(ServedRequest(connection, device_id, function, address, count))
        if index in self._silent:
            return bytes([function | 0x80, 0x0B]) if self._silent[index] else None
        try:
            reply = self._respond(index, pdu, self._clock())
        except _RefusedRequestError as refusal:
            reply = bytes([function | 0x80, refusal.code])
        delays = self._delays.get(index)
        if delays:
            await asyncio.sleep(delays.pop(0))
        return reply

    def _respond(self, index: int, pdu: bytes, at: datetime) -> bytes:
        function = pdu[0]
        tables = {1: Table.COIL, 2: Table.DISCRETE, 3: Table.HOLDING, 4: Table.INPUT}
        if function in tables:
            address, count = _fields(pdu, ">HH")
            table = tables[function]
            limit = 2000 if table.is_bits else self._max_registers
            if not 1 <= count <= limit:
                raise _RefusedRequestError(0x03)
            values = self._values(index, table, address, count, at)
            if table.is_bits:
                packed = bytes(sum(bit << n for n, bit in enumerate(values[i : i + 8])) for i in range(0, count, 8))
                return bytes([function, len(packed)]) + packed
            return bytes([function, 2 * count]) + b"".join(w.to_bytes(2, "big") for w in values)
        if function == 0x05:
            address, value = _fields(pdu, ">HH")
            if value not in (0x0000, 0xFF00):
                raise _RefusedRequestError(0x03)
            self._store(index, Table.COIL, address, [1 if value else 0])
            return pdu[:5]
        if function == 0x06:
            address, value = _fields(pdu, ">HH")
            self._store(index, Table.HOLDING, address, [value])
            return pdu[:5]
        if function == 0x10:
            address, count, size = _fields(pdu, ">HHB")
            if not 1 <= count <= 123 or size != 2 * count or len(pdu) < 6 + size:
                raise _RefusedRequestError(0x03)
            words = list(struct.unpack(f">{count}H", pdu[6 : 6 + size]))
            self._store(index, Table.HOLDING, address, words)
            return pdu[:5]
        raise _RefusedRequestError(0x01)

    def _check_span(self, table: Table, address: int, count: int) -> None:
        span = self._spans.get(table)
        if span is None or address < span[0] or address + count > span[1]:
            raise _RefusedRequestError(0x02)

    def _store(self, index: int, table: Table, address: int, values: list[int]) -> None:
        self._check_span(table, address, len(values))
        for offset, value in enumerate(values):
            self._written[(index, table, address + offset)] = value

    def _values(self, index: int, table: Table, address: int, count: int, at: datetime) -> list[int]:
        self._check_span(table, address, count)
        values = [0] * count
        for rp in self._points:
            if rp.table is not table or rp.end <= address or rp.address >= address + count:
                continue
            try:
                words = encode_value(rp, raw_value(self.seed, index, rp, at))
            except GxError:
                raise _RefusedRequestError(0x04) from None  # the simulated value does not fit: a device failure
            for offset, word in enumerate(words):
                if address <= rp.address + offset < address + count:
                    values[rp.address + offset - address] = word
        for offset in range(count):
            values[offset] = self._written.get((index, table, address + offset), values[offset])
        return values


def _fields(pdu: bytes, layout: str) -> tuple[int, ...]:
    size = struct.calcsize(layout)
    if len(pdu) < 1 + size:
        raise _RefusedRequestError(0x03)
    return struct.unpack(layout, pdu[1 : 1 + size])
