"""Deterministic IEC 62056-21 meters: a sans-IO meter model and an optical-probe-over-TCP server.

The model answers a sign-on request with its identification, then (mode C) waits
for the acknowledgement/option select and sends the readout at the chosen speed;
mode B switches speed straight after the identification, mode A stays at 300 baud.
Values are pure functions of (seed, meter index, instant). Over TCP a baud-rate
change does nothing, but the exchange of messages is the real one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo

from gxami_meterlab.simulators.dsmr import DailyCurve, unit_value
from gxami_meterlab.simulators.tcp import SimulatorServer
from gxcore.protocols.iec62056_21.frames import (
    INITIAL_BAUD,
    MODE_B_BAUD,
    MODE_C_BAUD,
    Identification,
    encode_data_message,
    find_option_select,
    find_request,
)

_MAX_PENDING = 256  # bytes a meter keeps while waiting for a complete request


@dataclass(frozen=True, slots=True)
class MeterSend:
    """Bytes the meter sends."""

    data: bytes


@dataclass(frozen=True, slots=True)
class MeterBaudChange:
    """The meter now listens and talks at this speed."""

    baud: int


MeterOutput = MeterSend | MeterBaudChange


def readout_lines(seed: int, meter_index: int, instant: datetime, *, tz: tzinfo = UTC) -> list[str]:
    """The data lines a simulated meter reads out at ``instant`` (meter clock in ``tz``)."""
    load = DailyCurve.for_meter(seed, meter_index, "load", mean=0.5, base=5000.0)
    solar = DailyCurve.for_meter(seed, meter_index, "solar", mean=0.3, base=800.0)
    local = instant.astimezone(tz)
    e_in, e_out = load.energy(instant), solar.energy(instant)
    share = 0.3 + 0.2 * unit_value(seed, meter_index, "tariff")
    day_start = local.replace(hour=0, minute=0, second=0, microsecond=0)
    serial = f"{int(unit_value(seed, meter_index, 'serial') * 10**8):08d}"
    volts = [230.0 + 3.0 * unit_value(seed, meter_index, f"v{i}:{local:%Y%m%d%H%M}") for i in range(3)]
    amps = load.power(instant) * 1000 / 3 / volts[0]
    return [
        f"0.0.0({serial})",
        f"0.9.1({local:%H%M%S})",
        f"0.9.2(0{local:%y%m%d})",
        f"1.8.0({e_in:011.3f}*kWh)",
        f"1.8.1({e_in * share:011.3f}*kWh)1.8.2({e_in * (1 - share):011.3f}*kWh)",
        f"2.8.0({e_out:011.3f}*kWh)",
        f"1.6.0({load.mean + load.swing:06.3f}*kW)({day_start:%y-%m-%d %H:%M})",
        f"32.7.0({volts[0]:05.1f}*V)52.7.0({volts[1]:05.1f}*V)72.7.0({volts[2]:05.1f}*V)",
        f"31.7.0({amps:06.2f}*A)",
        "F.F(00000000)",
    ]


class SimulatedIecMeter:
    """One meter behind an optical port, as a sans-IO model: bytes and ``now`` in, outputs out."""

    def __init__(
        self,
        seed: int,
        meter_index: int = 0,
        *,
        address: str = "",
        manufacturer: str = "GXS",
        baud_char: str = "5",
        ident: str = "GXSIM-62056",
        tz: tzinfo = UTC,
    ) -> None:
        self.seed, self.meter_index, self.address, self.tz = seed, meter_index, address, tz
        self.identification = Identification(manufacturer, baud_char, ident)
        self.baud = INITIAL_BAUD
        self.readouts = 0
        self._buffer = bytearray()
        self._identified = False

    def readout(self, now: datetime) -> bytes:
        """The data message (STX ... ETX BCC) at ``now``."""
        return encode_data_message(readout_lines(self.seed, self.meter_index, now, tz=self.tz))

    def receive_data(self, data: bytes, now: datetime) -> list[MeterOutput]:
        """Bytes from the probe; returns what the meter sends back and any speed change."""
        self._buffer += data
        if len(self._buffer) > _MAX_PENDING:
            del self._buffer[: len(self._buffer) - _MAX_PENDING]  # a meter only listens for short messages
        end, address = find_request(self._buffer)
        if address is not None:
            del self._buffer[:end]
            return self._on_request(address, now)
        if self._identified:
            end, option = find_option_select(self._buffer)
            if option is not None:
                del self._buffer[:end]
                return self._on_option_select(option, now)
        return []

    def _on_request(self, address: str, now: datetime) -> list[MeterOutput]:
        self.baud = INITIAL_BAUD
        self._identified = False
        if address and address != self.address:
            return []  # addressed to another meter on the bus
        ident = self.identification
        out: list[MeterOutput] = [MeterSend(ident.encode())]
        if ident.mode == "C":
            self._identified = True
            return out
        if ident.mode == "B":
            self.baud = MODE_B_BAUD[ident.baud_char]
            out.append(MeterBaudChange(self.baud))
        self.readouts += 1
        return [*out, MeterSend(self.readout(now))]

    def _on_option_select(self, option: tuple[str, str, str], now: datetime) -> list[MeterOutput]:
        _, baud_char, mode = option
        self._identified = False
        offered = MODE_C_BAUD[self.identification.baud_char]
        if mode != "0" or baud_char not in MODE_C_BAUD or MODE_C_BAUD[baud_char] > offered:
            return []  # programming mode and unsupported speeds are not simulated: stay silent
        self.baud = MODE_C_BAUD[baud_char]
        self.readouts += 1
        return [MeterBaudChange(self.baud), MeterSend(self.readout(now))]


class Iec62056TcpServer(SimulatorServer):
    """An optical probe on a TCP port: each connection talks to a fresh meter from ``meter_factory``."""

    def __init__(
        self,
        meter_factory: Callable[[], SimulatedIecMeter],
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        clock: Callable[[], datetime] | None = None,
        idle_timeout: float = 30.0,
    ) -> None:
        super().__init__(host, port)
        self.meter_factory, self.idle_timeout = meter_factory, idle_timeout
        self._clock = clock or (lambda: datetime.now(UTC))
        self.meters: list[SimulatedIecMeter] = []

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Feed the probe's bytes to a new meter and send back what it says, until idle or hung up."""
        meter = self.meter_factory()
        self.meters.append(meter)
        while True:
            try:
                data = await asyncio.wait_for(reader.read(1024), self.idle_timeout)
            except TimeoutError:
                return
            if not data:
                return
            for output in meter.receive_data(data, self._clock()):
                if isinstance(output, MeterSend):
                    writer.write(output.data)
                    await writer.drain()
                # MeterBaudChange: nothing to do on TCP; the bridge would retune its UART
