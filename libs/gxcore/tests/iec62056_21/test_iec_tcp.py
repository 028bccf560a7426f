"""One real exchange over localhost TCP: the session through the driver loop to the simulator server."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from gxami_meterlab.simulators.iec62056_21 import Iec62056TcpServer, SimulatedIecMeter
from gxcore.drivers.iec62056_21 import run_readout
from gxcore.errors import MeterTimeoutError
from gxcore.media import Direction, open_medium
from gxcore.protocols.iec62056_21 import Iec62056Session, SessionTimings, decode_iec62056_21_readout

AT = datetime(2024, 6, 1, 8, 30, tzinfo=UTC)


async def test_mode_c_readout_over_a_tcp_bridge() -> None:
    def factory() -> SimulatedIecMeter:
        return SimulatedIecMeter(21, 3, address="12345678", manufacturer="GXs")

    sent: list[bytes] = []

    def trace(direction: Direction, data: bytes) -> None:
        if direction == "tx":
            sent.append(data)

    async with Iec62056TcpServer(factory, port=0, clock=lambda: AT) as server:
        session = Iec62056Session(address="12345678")
        async with open_medium(f"tcp://127.0.0.1:{server.port}", on_traffic=trace) as medium:
            readout = await run_readout(session, medium, timeout=5, meter_id="iec-tcp")
        (meter,) = server.meters
    assert sent == [b"/?12345678!\r\n", b"\x06050\r\n"]  # sign-on, then ACK asking for 9600 Bd (Z = 5)
    assert session.baud == 9600  # the session moved on; over TCP the bridge retunes its UART
    assert meter.baud == 9600
    assert meter.readouts == 1
    assert readout.identification == meter.identification
    assert readout.records == decode_iec62056_21_readout(meter.readout(AT)).records
    assert readout.meter_time == AT


async def test_silent_meter_times_out_over_tcp() -> None:
    async with Iec62056TcpServer(lambda: SimulatedIecMeter(1, address="1"), port=0) as server:
        session = Iec62056Session(address="2", timings=SessionTimings(response_timeout=0.1))
        async with open_medium(f"tcp://127.0.0.1:{server.port}") as medium:
            with pytest.raises(MeterTimeoutError, match="response timeout") as info:
                await run_readout(session, medium, timeout=5, meter_id="iec-silent")
    assert info.value.meter_id == "iec-silent"
