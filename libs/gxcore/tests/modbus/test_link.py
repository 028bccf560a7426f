"""The pymodbus wrapper: URLs, device ids, error mapping, connection faults, no background tasks."""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from typing import Any

import pytest
from pymodbus.framer import FramerType
from pymodbus.pdu import ExceptionResponse
from pymodbus.pdu.register_message import ReadInputRegistersResponse

from gxcore.drivers import MeterTarget, ReadRequest
from gxcore.drivers.modbus import ModbusDriver, exchange_timeout, unit_id_for
from gxcore.drivers.modbus_link import LinkSettings, ModbusLink, check_reply, reply_values
from gxcore.errors import ConfigurationError, MediaError, MeterTimeoutError, ProtocolError
from gxcore.media.endpoint import Endpoint
from gxcore.profiles import DeviceProfile
from gxcore.protocols.modbus.profile import ModbusParameters


def settings(url: str) -> LinkSettings:
    return LinkSettings.from_endpoint(Endpoint.parse(url))


def test_tcp_and_serial_urls() -> None:
    assert settings("tcp://10.0.0.5:502") == LinkSettings("tcp", "10.0.0.5", 502, FramerType.SOCKET)
    assert settings("tcp://gw:4001?framer=rtu").framer is FramerType.RTU
    serial = settings("serial:///dev/ttyUSB0?baud=19200&parity=E&stopbits=2&bytesize=8")
    assert (serial.kind, serial.address, serial.framer) == ("serial", "/dev/ttyUSB0", FramerType.RTU)
    assert (serial.baudrate, serial.parity, serial.stopbits, serial.bytesize) == (19200, "E", 2, 8)
    defaults = settings("serial:///dev/ttyS1")
    assert (defaults.baudrate, defaults.parity, defaults.stopbits) == (9600, "N", 1)
    assert settings("tcp://gw:502").key != settings("tcp://gw:503").key
    assert settings("serial:///dev/ttyS1?baud=9600").key == settings("serial:///dev/ttyS1?baud=19200").key


@pytest.mark.parametrize(
    "url",
    [
        "tcp://gw:502?framer=ascii",
        "tcp://gw:502?baud=9600",
        "serial:///dev/ttyS0?parity=X",
        "serial:///dev/ttyS0?baud=fast",
        "serial:///dev/ttyS0?stopbits=3",
        "serial:///dev/ttyS0?speed=9600",
        "udp://gw:502",
    ],
)
def test_bad_urls(url: str) -> None:
    with pytest.raises(ConfigurationError):
        settings(url)


def test_unit_id_comes_from_target_then_url_then_profile() -> None:
    params = ModbusParameters(unit_id=7)
    assert unit_id_for(MeterTarget("m", "tcp://gw:502"), params) == 7
    assert unit_id_for(MeterTarget("m", "tcp://gw:502?unit_id=9"), params) == 9
    assert unit_id_for(MeterTarget("m", "tcp://gw:502?unit_id=9", options={"unit_id": "0x0B"}), params) == 11
    with pytest.raises(ConfigurationError):
        unit_id_for(MeterTarget("m", "tcp://gw:502", options={"unit_id": "300"}), params)


def test_exchange_timeout_is_capped_by_the_profile() -> None:
    assert exchange_timeout(5.0, ModbusParameters(timeout=1.0)) == 1.0
    assert exchange_timeout(0.5, ModbusParameters(timeout=1.0)) == 0.5
    assert exchange_timeout(2.0, ModbusParameters()) == 2.0
    with pytest.raises(ConfigurationError):
        exchange_timeout(0.0, ModbusParameters())


@pytest.mark.parametrize(
    ("code", "error", "text"),
    [
        (0x01, ProtocolError, "illegal function"),
        (0x02, ProtocolError, "illegal data address"),
        (0x06, ProtocolError, "server device busy"),
        (0x0A, MediaError, "gateway path unavailable"),
        (0x0B, MeterTimeoutError, "failed to respond"),
    ],
)
def test_exception_codes_map_to_gxcore_errors(code: int, error: type[Exception], text: str) -> None:
    with pytest.raises(error, match=text):
        check_reply(ExceptionResponse(0x04, code), 0x04, "read input registers (0x04) at 0x0010", "m1")


def test_replies_of_the_wrong_function_or_size_are_protocol_errors() -> None:
    reply = ReadInputRegistersResponse(registers=[1, 2])
    with pytest.raises(ProtocolError, match="function 0x04"):
        check_reply(reply, 0x03, "read", None)
    assert reply_values(reply, 0x04, 2, "read", None) == [1, 2]
    with pytest.raises(ProtocolError, match="2 registers, not 3"):
        reply_values(reply, 0x04, 3, "read", None)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_connection_refused_is_a_media_error(sdm630: DeviceProfile) -> None:
    target = MeterTarget("m1", f"tcp://127.0.0.1:{_free_port()}")
    began = time.monotonic()
    with pytest.raises(MediaError, match="cannot connect"):
        await ModbusDriver().read(target, sdm630, ReadRequest(), timeout=1.0)
    assert time.monotonic() - began < 0.9


async def test_connection_closed_by_the_peer_is_a_media_error(sdm630: DeviceProfile) -> None:
    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1)  # wait for the request, then drop the line without answering
        writer.close()

    server = await asyncio.start_server(hang_up, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        began = time.monotonic()
        with pytest.raises(MediaError, match="lost"):
            await ModbusDriver().read(MeterTarget("m1", f"tcp://127.0.0.1:{port}"), sdm630, ReadRequest(), timeout=2.0)
        assert time.monotonic() - began < 1.0  # noticed at once, not at the deadline
    finally:
        server.close()
        await server.wait_closed()


async def test_no_reconnect_loop_after_a_dropped_connection() -> None:
    # pymodbus reconnects on its own unless reconnect_delay is 0 (issue #1794 made a zero
    # delay busy-loop in older releases); a one-shot link must leave nothing running.
    connected = asyncio.Event()

    async def accept_and_drop(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connected.set()
        writer.close()

    server = await asyncio.start_server(accept_and_drop, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    link = ModbusLink(settings(f"tcp://127.0.0.1:{port}"))
    try:
        await link.open(1.0)
        await connected.wait()
        await asyncio.sleep(0.2)  # the peer's close arrives; pymodbus sees the loss
        assert not link.is_open
        assert [t for t in asyncio.all_tasks() if t is not asyncio.current_task()] == []
    finally:
        link.close()
        server.close()
        await server.wait_closed()


def test_pymodbus_is_quiet_unless_configured() -> None:
    assert logging.getLogger("pymodbus").getEffectiveLevel() >= logging.CRITICAL


async def test_nothing_selected_means_no_traffic(sdm630: DeviceProfile) -> None:
    result = await ModbusDriver().read(
        MeterTarget("m1", "tcp://127.0.0.1:1"), sdm630, ReadRequest(purposes=frozenset({"events"})), timeout=0.1
    )
    assert result.readings == []  # nothing selected: no connection attempted at all


def test_read_rejects_foreign_profiles(sdm630: DeviceProfile) -> None:
    foreign: Any = sdm630.model_copy(update={"protocol": "dlms"})
    with pytest.raises(ConfigurationError):
        asyncio.run(ModbusDriver().read(MeterTarget("m", "tcp://127.0.0.1:1"), foreign, ReadRequest(), timeout=0.1))
