"""One real exchange over localhost TCP: the session through the asyncio adapter to the simulator server."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from gxami_meterlab.iec_streams import run_session
from gxami_meterlab.simulators.iec62056_21 import Iec62056TcpServer, SimulatedIecMeter
from gxcore.errors import MeterTimeoutError
from gxcore.protocols.iec62056_21 import Iec62056Session, SessionTimings, decode_iec62056_21_readout

AT = datetime(2024, 6, 1, 8, 30, tzinfo=UTC)


async def test_mode_c_readout_over_a_tcp_bridge() -> None:
    def factory() -> SimulatedIecMeter:
        return SimulatedIecMeter(21, 3, address="12345678", manufacturer="GXs")

    bauds: list[int] = []

    async def on_baud_rate(baud: int) -> None:
        bauds.append(baud)

    async with Iec62056TcpServer(factory, port=0, clock=lambda: AT) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        try:
            session = Iec62056Session(address="12345678")
            readout = await asyncio.wait_for(run_session(session, reader, writer, on_baud_rate=on_baud_rate), 5)
        finally:
            writer.close()
            await writer.wait_closed()
        (meter,) = server.meters
    assert bauds == [300, 9600]
    assert meter.baud == 9600
    assert meter.readouts == 1
    assert readout.identification == meter.identification
    assert readout.records == decode_iec62056_21_readout(meter.readout(AT)).records
    assert readout.meter_time == AT


async def test_silent_meter_times_out_over_tcp() -> None:
    async with Iec62056TcpServer(lambda: SimulatedIecMeter(1, address="1"), port=0) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        try:
            session = Iec62056Session(address="2", timings=SessionTimings(response_timeout=0.1))
            with pytest.raises(MeterTimeoutError, match="response timeout"):
                await asyncio.wait_for(run_session(session, reader, writer), 5)
        finally:
            writer.close()
            await writer.wait_closed()
