"""The one place gxcore touches pymodbus's clients: a Modbus link with bounded exchanges.

A ``ModbusLink`` is one connection to a Modbus TCP device or gateway, an RTU-over-TCP
converter or a serial RS-485 port. Each exchange is bounded by a timeout of our own
(pymodbus's is set a little longer so it never fires first) and ends in a response
PDU or a gxcore error:

- no answer in time                     -> MeterTimeoutError (the link is closed: see below)
- Modbus exception 0x0B from a gateway  -> MeterTimeoutError (the meter behind it was silent)
- Modbus exception 0x0A from a gateway  -> MediaError (no path to the meter)
- any other Modbus exception response   -> ProtocolError naming function and address
- refused, reset, closed by peer        -> MediaError
- a reply of the wrong function/size    -> ProtocolError

A reply that arrives after its timeout must never be taken for the answer to the next
request. Modbus TCP transaction ids make pymodbus drop such a reply, but RTU (serial or
over TCP) has none, so after every timeout the link is closed and a retry opens a fresh
connection; on RTU the fresh line then stays quiet for ``RTU_SETTLE`` so that a reply
still on the wire drains first. Replies are also checked for function and size. What
remains: an RTU reply later than that, to a request of the same function and size.

pymodbus >= 3.10 addresses devices with ``device_id=`` (``slave=`` is gone). Its own
auto-reconnect is off (``reconnect_delay=0``; a reconnect loop must never run behind a
one-shot read, cf. pymodbus issue #1794) and its own retries are 0: we retry, on a fresh
connection. pymodbus logs through the ``pymodbus`` logger; unless the application has
set that logger's level, it is raised to CRITICAL here, since every condition pymodbus
would log is raised to the caller as a gxcore error anyway.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Literal

from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from pymodbus.exceptions import ModbusException
from pymodbus.framer import FramerType
from pymodbus.pdu import ModbusPDU

from gxcore.errors import ConfigurationError, MediaError, MeterTimeoutError, ProtocolError
from gxcore.media.endpoint import Endpoint

_pymodbus_logger = logging.getLogger("pymodbus")
if _pymodbus_logger.level == logging.NOTSET:
    _pymodbus_logger.setLevel(logging.CRITICAL)

log = logging.getLogger(__name__)

ModbusClient = AsyncModbusTcpClient | AsyncModbusSerialClient
Request = Callable[[ModbusClient], Awaitable[ModbusPDU]]
"""One request: given the open client, start the exchange (e.g. ``read_coils``)."""

_PYMODBUS_GRACE = 1.0  # seconds pymodbus waits beyond our own timeout, so ours fires first
# After an RTU timeout the reopened line stays quiet this long before the retry, so a
# reply that was merely late drains instead of meeting the next request.
RTU_SETTLE = 0.25

EXCEPTION_NAMES = {
    0x01: "illegal function",
    0x02: "illegal data address",
    0x03: "illegal data value",
    0x04: "server device failure",
    0x05: "acknowledge",
    0x06: "server device busy",
    0x08: "memory parity error",
    0x0A: "gateway path unavailable",
    0x0B: "gateway target device failed to respond",
}
FUNCTION_NAMES = {
    0x01: "read coils",
    0x02: "read discrete inputs",
    0x03: "read holding registers",
    0x04: "read input registers",
    0x05: "write single coil",
    0x06: "write single register",
    0x0F: "write multiple coils",
    0x10: "write multiple registers",
}
_PARITIES = {"N", "E", "O"}
_SERIAL_KEYS = {"baud", "parity", "stopbits", "bytesize", "unit_id"}


@dataclass(frozen=True, slots=True)
class LinkSettings:
    """Where and how to connect, from a meter URL."""

    kind: Literal["tcp", "serial"]
    address: str  # host for TCP, device path for serial
    port: int = 502
    framer: FramerType = FramerType.SOCKET
    baudrate: int = 9600
    parity: str = "N"
    stopbits: int = 1
    bytesize: int = 8

    @property
    def key(self) -> str:
        """Identity of the shared medium: exchanges on one key must not interleave."""
        return f"{self.kind}:{self.address}:{self.port}" if self.kind == "tcp" else f"serial:{self.address}"

    @classmethod
    def from_endpoint(cls, endpoint: Endpoint) -> LinkSettings:
        query = dict(endpoint.query)
        if endpoint.scheme == "tcp":
            unknown = set(query) - {"framer", "unit_id"}
            if unknown:
                raise ConfigurationError(f"Modbus TCP URL: unknown query key(s) {sorted(unknown)}")
            framer = {"socket": FramerType.SOCKET, "tcp": FramerType.SOCKET, "rtu": FramerType.RTU}.get(
                query.get("framer", "socket").lower()
            )
            if framer is None:
                raise ConfigurationError("Modbus TCP URL: framer must be 'socket' or 'rtu'")
            return cls("tcp", endpoint.host, endpoint.port or 502, framer)
        if endpoint.scheme == "serial":
            unknown = set(query) - _SERIAL_KEYS
            if unknown:
                raise ConfigurationError(f"Modbus serial URL: unknown query key(s) {sorted(unknown)}")
            parity = query.get("parity", "N").upper()[:1]
            if parity not in _PARITIES:
                raise ConfigurationError("Modbus serial URL: parity must be N, E or O")
            try:
                baud = int(query.get("baud", "9600"))
                stopbits = int(query.get("stopbits", "1"))
                bytesize = int(query.get("bytesize", "8"))
            except ValueError:
                raise ConfigurationError("Modbus serial URL: baud, stopbits, bytesize must be numbers") from None
            if baud <= 0 or stopbits not in (1, 2) or bytesize not in (7, 8):
                raise ConfigurationError("Modbus serial URL: baud > 0, stopbits 1|2, bytesize 7|8")
            return cls("serial", endpoint.path, 0, FramerType.RTU, baud, parity, stopbits, bytesize)
        raise ConfigurationError(f"Modbus needs a tcp:// or serial:// URL, not {endpoint.scheme}://")


class ModbusLink:
    """One connection; exchanges are strictly one at a time and each has a deadline."""

    def __init__(self, settings: LinkSettings, *, meter_id: str | None = None) -> None:
        self.settings = settings
        self.meter_id = meter_id
        self._client: ModbusClient | None = None
        self._lost: asyncio.Event | None = None

    @property
    def is_open(self) -> bool:
        return self._client is not None and self._client.connected

    def _where(self) -> str:
        s = self.settings
        return f"{s.address}:{s.port}" if s.kind == "tcp" else s.address

    def _new_client(self, timeout: float) -> ModbusClient:
        lost = asyncio.Event()
        self._lost = lost

        def on_connect(connected: bool) -> None:
            if not connected:
                lost.set()

        s = self.settings
        if s.kind == "tcp":
            return AsyncModbusTcpClient(
                s.address,
                port=s.port,
                framer=s.framer,
                timeout=timeout + _PYMODBUS_GRACE,
                retries=0,
                reconnect_delay=0.0,
                trace_connect=on_connect,
            )
        return AsyncModbusSerialClient(
            s.address,
            framer=s.framer,
            baudrate=s.baudrate,
            parity=s.parity,
            stopbits=s.stopbits,
            bytesize=s.bytesize,
            timeout=timeout + _PYMODBUS_GRACE,
            retries=0,
            reconnect_delay=0.0,
            trace_connect=on_connect,
        )

    async def open(self, timeout: float) -> None:
        """Connect (or reconnect); MediaError if that fails within ``timeout``."""
        self.close()
        client = self._new_client(timeout)
        self._client = client
        try:
            connected = await asyncio.wait_for(client.connect(), timeout)
        except TimeoutError:
            connected = False
        except (OSError, ModbusException) as exc:
            self.close()
            raise MediaError(f"cannot open {self._where()}: {exc}", meter_id=self.meter_id) from None
        if not connected:
            self.close()
            raise MediaError(f"cannot connect to {self._where()} within {timeout:g} s", meter_id=self.meter_id)

    def close(self) -> None:
        """Drop the connection; safe to call at any time."""
        client, self._client = self._client, None
        if client is not None:
            client.close()

    async def exchange(
        self,
        function: int,
        address: int,
        call: Request,
        *,
        timeout: float,
        retries: int,
    ) -> ModbusPDU:
        """Send one request (``call``) and return its checked reply, retrying after timeouts."""
        for attempt in range(retries + 1):
            if not self.is_open:
                await self.open(timeout)
            try:
                return await self._exchange_once(function, address, call, timeout)
            except MeterTimeoutError:
                self.close()  # a late reply must not meet the next request on this connection
                if attempt == retries:
                    raise
                log.debug("%s: no reply to function %#04x, retrying", self.meter_id, function)
                if self.settings.framer is FramerType.RTU:
                    await self.open(timeout)
                    await asyncio.sleep(min(timeout, RTU_SETTLE))
        raise AssertionError("unreachable")  # pragma: no cover

    async def _exchange_once(
        self,
        function: int,
        address: int,
        call: Request,
        timeout: float,
    ) -> ModbusPDU:
        client, lost = self._client, self._lost
        assert client is not None  # exchange() opened the link
        assert lost is not None
        what = f"{FUNCTION_NAMES.get(function, 'function')} ({function:#04x}) at address {address:#06x}"
        try:
            request = call(client)
        except ModbusException as exc:  # pymodbus checks the connection before it sends
            self.close()
            raise MediaError(f"{what}: {exc}", meter_id=self.meter_id) from None
        reply_task = asyncio.ensure_future(request)
        lost_task = asyncio.ensure_future(lost.wait())
        try:
            done, _ = await asyncio.wait({reply_task, lost_task}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (reply_task, lost_task):
                if not task.done():
                    task.cancel()
            await asyncio.gather(reply_task, lost_task, return_exceptions=True)
        if reply_task in done and reply_task.exception() is None:
            return check_reply(reply_task.result(), function, what, self.meter_id)
        if reply_task in done:
            failure = reply_task.exception()
            assert failure is not None
            if not isinstance(failure, ModbusException | OSError):
                raise failure  # a bug, not a line fault: let it surface as it is
            self.close()
            raise MediaError(f"{what}: {failure}", meter_id=self.meter_id) from None
        if lost_task in done:
            self.close()
            raise MediaError(f"{what}: connection to {self._where()} lost", meter_id=self.meter_id)
        raise MeterTimeoutError(f"{what}: no reply within {timeout:g} s", meter_id=self.meter_id)


def check_reply(reply: ModbusPDU, function: int, what: str, meter_id: str | None) -> ModbusPDU:
    """``reply`` if it answers ``function``; else the gxcore error its exception code means."""
    if reply.isError():
        code = reply.exception_code
        reason = f"{what}: exception {code:#04x} ({EXCEPTION_NAMES.get(code, 'unknown')})"
        if code == 0x0B:
            raise MeterTimeoutError(reason, meter_id=meter_id)
        if code == 0x0A:
            raise MediaError(reason, meter_id=meter_id)
        raise ProtocolError(reason, meter_id=meter_id)
    if reply.function_code != function:
        raise ProtocolError(f"{what}: reply has function {reply.function_code:#04x}", meter_id=meter_id)
    return reply


def reply_values(reply: ModbusPDU, function: int, count: int, what: str, meter_id: str | None) -> list[int]:
    """The ``count`` registers (or bits as 0/1) of a read reply; ProtocolError if short or long."""
    if function in (0x01, 0x02):
        bits: Sequence[bool] = reply.bits
        # Bits come padded to whole bytes; anything beyond that padding is a wrong reply.
        if not count <= len(bits) < count + 8:
            raise ProtocolError(f"{what}: reply has {len(bits)} bits for {count}", meter_id=meter_id)
        return [1 if b else 0 for b in bits[:count]]
    registers: Sequence[int] = reply.registers
    if len(registers) != count:
        raise ProtocolError(f"{what}: reply has {len(registers)} registers, not {count}", meter_id=meter_id)
    return list(registers)
