"""Deterministic DSMR P1 meters: telegrams for every version/variant, and a P1-to-TCP bridge server.

Every value is a pure function of (seed, meter index, instant): the same arguments
give the same telegram bytes on any machine. Energy registers are integrals of a
daily load curve ``a + b*sin(...)`` with ``a > b``, so they never run backwards.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from gxami_meterlab.simulators.tcp import SimulatorServer
from gxcore.protocols.dsmr.framer import encode_telegram
from gxcore.protocols.dsmr.smarty import encrypt_smarty_frame
from gxcore.protocols.dsmr.timestamps import CEST, CET, format_dsmr_timestamp, is_eu_summer_time, local_to_utc
from gxcore.secrets import Secret

VARIANTS = ("2.2", "3", "4.2", "5.0", "e-mucs", "smarty")

_EPOCH = datetime(2020, 1, 1, tzinfo=UTC)
_DAY = 86400.0
_OMEGA = 2 * math.pi / _DAY


def unit_value(seed: int, meter_index: int, label: str) -> float:
    """A number in [0, 1) fixed by (seed, meter index, label)."""
    digest = hashlib.blake2b(f"{seed}:{meter_index}:{label}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


@dataclass(frozen=True, slots=True)
class DailyCurve:
    """Power ``mean + swing*sin(wt + phase)`` (kW) and its integral (kWh) from 2020-01-01 plus ``base``."""

    mean: float
    swing: float
    phase: float
    base: float

    @classmethod
    def for_meter(cls, seed: int, meter_index: int, label: str, *, mean: float, base: float) -> DailyCurve:
        u = [unit_value(seed, meter_index, f"{label}/{i}") for i in range(4)]
        m = mean * (0.5 + u[0])
        return cls(m, m * (0.2 + 0.6 * u[1]), 2 * math.pi * u[2], base * (0.5 + u[3]))

    def power(self, instant: datetime) -> float:
        t = (instant - _EPOCH).total_seconds()
        return self.mean + self.swing * math.sin(_OMEGA * t + self.phase)

    def energy(self, instant: datetime) -> float:
        t = (instant - _EPOCH).total_seconds()
        drift = self.swing / _OMEGA * (math.cos(self.phase) - math.cos(_OMEGA * t + self.phase))
        return self.base + (self.mean * t + drift) / 3600.0


def _floor(instant: datetime, seconds: int) -> datetime:
    t = (instant - _EPOCH).total_seconds()
    return _EPOCH + timedelta(seconds=math.floor(t / seconds) * seconds)


def _month_start(instant: datetime, months_back: int = 0) -> datetime:
    """Start (local midnight, as UTC) of the month ``months_back`` before the one holding ``instant``."""
    local = instant.astimezone(CEST if is_eu_summer_time(instant) else CET)
    index = local.year * 12 + local.month - 1 - months_back
    return local_to_utc(datetime(index // 12, index % 12 + 1, 1))  # noqa: DTZ001 - local wall clock, zoned right here


class SimulatedP1Meter:
    """A smart meter's P1 port: ``telegram_at(instant)`` gives the telegram it would send then."""

    def __init__(self, seed: int, meter_index: int = 0, *, variant: str = "5.0") -> None:
        if variant not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS}")
        self.seed, self.meter_index, self.variant = seed, meter_index, variant
        self.load = DailyCurve.for_meter(seed, meter_index, "load", mean=0.5, base=5000.0)
        self.solar = DailyCurve.for_meter(seed, meter_index, "solar", mean=0.3, base=800.0)
        self.gas = DailyCurve.for_meter(seed, meter_index, "gas", mean=0.05, base=3000.0)
        self.water = DailyCurve.for_meter(seed, meter_index, "water", mean=0.02, base=500.0)
        self.heat = DailyCurve.for_meter(seed, meter_index, "heat", mean=0.001, base=40.0)
        self.serial = f"{int(unit_value(seed, meter_index, 'serial') * 10**8):08d}"
        self.tariff_share = 0.3 + 0.2 * unit_value(seed, meter_index, "tariff")

    def _u(self, label: str) -> float:
        return unit_value(self.seed, self.meter_index, label)

    def _hex_id(self, prefix: str) -> str:
        return f"{prefix}{self.serial}{self.meter_index % 100:02d}".encode().hex().upper()

    def telegram_at(self, instant: datetime) -> bytes:
        """The telegram at ``instant`` (aware), with a correct CRC for DSMR 4+ variants."""
        if instant.tzinfo is None:
            raise ValueError("instant must be timezone-aware")
        instant = instant.astimezone(UTC).replace(microsecond=0)
        builders = {
            "2.2": self._v2,
            "3": self._v2,
            "4.2": self._v4,
            "5.0": self._v4,
            "e-mucs": self._emucs,
            "smarty": self._smarty,
        }
        header, lines = builders[self.variant](instant)
        return encode_telegram(header, lines, with_crc=self.variant not in ("2.2", "3"))

    def smarty_frame_at(self, instant: datetime, key: Secret) -> bytes:
        """The telegram at ``instant`` encrypted as a Luxembourg Smarty meter sends it."""
        counter = int((instant - _EPOCH).total_seconds() // 10) & 0xFFFFFFFF
        title = b"SAG" + int(self.serial).to_bytes(5, "big")
        return encrypt_smarty_frame(self.telegram_at(instant), key, system_title=title, frame_counter=counter)

    def _energy_lines(self, instant: datetime, width: int = 6) -> list[str]:
        e_in, e_out = self.load.energy(instant), self.solar.energy(instant)
        w = self.tariff_share
        return [
            f"1-0:1.8.1({w * e_in:0{width + 4}.3f}*kWh)",
            f"1-0:1.8.2({(1 - w) * e_in:0{width + 4}.3f}*kWh)",
            f"1-0:2.8.1({w * e_out:0{width + 4}.3f}*kWh)",
            f"1-0:2.8.2({(1 - w) * e_out:0{width + 4}.3f}*kWh)",
        ]

    def _tariff(self, instant: datetime) -> str:
        local = instant.astimezone(CEST if is_eu_summer_time(instant) else CET)
        low = local.weekday() >= 5 or local.hour < 7 or local.hour >= 23
        return "0001" if low else "0002"

    def _phase_lines(self, instant: datetime) -> list[str]:
        lines = []
        t = (instant - _EPOCH).total_seconds()
        for i, (v, p) in enumerate(((32, 21), (52, 41), (72, 61))):
            volts = 230.0 + 4.0 * math.sin(_OMEGA * 24 * t + i + self._u("volts"))
            kw = self.load.power(instant) * (0.2, 0.3, 0.5)[i]
            lines += [f"1-0:{v}.7.0({volts:05.1f}*V)", f"1-0:{v - 1}.7.0({kw * 1000 / volts:03.0f}*A)"]
            lines += [f"1-0:{p}.7.0({kw:06.3f}*kW)", f"1-0:{p + 1}.7.0({0:06.3f}*kW)"]
        return lines

    def _v2(self, instant: datetime) -> tuple[str, list[str]]:
        hour = _floor(instant, 3600)
        lines = [f"0-0:96.1.1({self._hex_id('G')})", *self._energy_lines(instant, width=5)]
        lines += [
            f"0-0:96.14.0({self._tariff(instant)})",
            f"1-0:1.7.0({self.load.power(instant):07.2f}*kW)",
            f"1-0:2.7.0({self.solar.power(instant):07.2f}*kW)",
            "0-0:17.0.0(999*A)" if self.variant == "3" else "0-0:17.0.0(0999.00*kW)",
            "0-0:96.3.10(1)",
            "0-0:96.13.1()",
            "0-0:96.13.0()",
            "0-1:24.1.0(3)",
            f"0-1:96.1.0({self._hex_id('W')})",
            f"0-1:24.3.0({format_dsmr_timestamp(hour, with_flag=False)})(00)(60)(1)(0-1:24.2.1)(m3)",
            f"({self.gas.energy(hour):09.3f})",
            "0-1:24.4.0(1)",
        ]
        return f"GXS5\\2SIM-{self.variant.replace('.', '')}", lines

    def _failure_log(self, instant: datetime) -> str:
        ends = [instant - timedelta(days=3 + 40 * i + 30 * self._u(f"fail{i}")) for i in range(2)]
        entries = "".join(
            f"({format_dsmr_timestamp(end)})({int(60 + 3000 * self._u(f'dur{i}')):010d}*s)"
            for i, end in enumerate(ends)
        )
        return f"1-0:99.97.0({len(ends)})(0-0:96.7.19){entries}"

    def _v4(self, instant: datetime) -> tuple[str, list[str]]:
        five = self.variant == "5.0"
        capture = _floor(instant, 300 if five else 3600)
        message = "47584D53472053494D" if self._u("msg") < 0.5 else ""
        lines = [
            f"1-3:0.2.8({'50' if five else '42'})",
            f"0-0:1.0.0({format_dsmr_timestamp(instant)})",
            f"0-0:96.1.1({self._hex_id('E')})",
            *self._energy_lines(instant),
            f"0-0:96.14.0({self._tariff(instant)})",
            f"1-0:1.7.0({self.load.power(instant):06.3f}*kW)",
            f"1-0:2.7.0({self.solar.power(instant):06.3f}*kW)",
            f"0-0:96.7.21({int(20 * self._u('short')):05d})",
            "0-0:96.7.9(00002)",
            self._failure_log(instant),
            *(f"1-0:{c}.{d}.0({int(5 * self._u(f'sag{c}{d}')):05d})" for d in (32, 36) for c in (32, 52, 72)),
            f"0-0:96.13.0({message})",
            *self._phase_lines(instant),
            "0-1:24.1.0(003)",
            f"0-1:96.1.0({self._hex_id('G')})",
            f"0-1:24.2.1({format_dsmr_timestamp(capture)})({self.gas.energy(capture):09.3f}*m3)",
            "0-2:24.1.0(004)",  # heat (thermal) meter on channel 2
            f"0-2:96.1.0({self._hex_id('H')})",
            f"0-2:24.2.1({format_dsmr_timestamp(capture)})({self.heat.energy(capture):08.3f}*GJ)",
        ]
        return f"GXS5\\2SIM-{'50' if five else '42'}", lines

    def _quarter_average(self, end: datetime) -> float:
        return (self.load.energy(end) - self.load.energy(end - timedelta(minutes=15))) * 4

    def _month_peak(self, start: datetime, until: datetime) -> tuple[datetime, float]:
        """Highest completed quarter-hour average in [start, until): the daily curve peaks daily."""
        t0 = (start - _EPOCH).total_seconds()
        to_crest = ((math.pi / 2 - self.load.phase - _OMEGA * t0) % (2 * math.pi)) / _OMEGA
        end = _floor(start + timedelta(seconds=to_crest), 900) + timedelta(minutes=15)
        if end > until:
            end = _floor(until, 900)
        if end <= start:
            return start, 0.0
        return end, self._quarter_average(end)

    def _emucs(self, instant: datetime) -> tuple[str, list[str]]:
        capture = _floor(instant, 300)
        quarter = _floor(instant, 900)
        elapsed = (instant - quarter).total_seconds()
        demand = (self.load.energy(instant) - self.load.energy(quarter)) * 3600 / elapsed if elapsed else 0.0
        this_month = _month_start(instant)
        peak_at, peak = self._month_peak(this_month, instant)
        history = []
        for back in range(1, 4):
            start, end = _month_start(instant, back), _month_start(instant, back - 1)
            at, value = self._month_peak(start, end)
            history.append(f"({format_dsmr_timestamp(end)})({format_dsmr_timestamp(at)})({value:06.3f}*kW)")
        lines = [
            "0-0:96.1.4(50217)",
            f"0-0:96.1.1({self._hex_id('1SAG')})",
            f"0-0:1.0.0({format_dsmr_timestamp(instant)})",
            *self._energy_lines(instant),
            f"1-0:1.4.0({demand:06.3f}*kW)",
            f"1-0:1.6.0({format_dsmr_timestamp(peak_at)})({peak:06.3f}*kW)",
            f"0-0:98.1.0({len(history)})(1-0:1.6.0)(1-0:1.6.0){''.join(history)}",
            f"0-0:96.14.0({self._tariff(instant)})",
            f"1-0:1.7.0({self.load.power(instant):06.3f}*kW)",
            f"1-0:2.7.0({self.solar.power(instant):06.3f}*kW)",
            *self._phase_lines(instant),
            "0-0:96.3.10(1)",
            "0-0:17.0.0(999.9*kW)",
            "1-0:31.4.0(999*A)",
            "0-0:96.13.0()",
            "0-1:24.1.0(003)",
            f"0-1:96.1.1({self._hex_id('7FLO')})",
            "0-1:24.4.0(1)",
            f"0-1:24.2.3({format_dsmr_timestamp(capture)})({self.gas.energy(capture):09.3f}*m3)",
            "0-2:24.1.0(007)",
            f"0-2:96.1.1({self._hex_id('8SAG')})",
            f"0-2:24.2.1({format_dsmr_timestamp(capture)})({self.water.energy(capture):09.3f}*m3)",
        ]
        return "FLU5\\253769484_A", lines

    def _smarty(self, instant: datetime) -> tuple[str, list[str]]:
        capture = _floor(instant, 300)
        e_in, e_out = self.load.energy(instant), self.solar.energy(instant)
        lines = [
            "1-3:0.2.8(42)",
            f"0-0:1.0.0({format_dsmr_timestamp(instant)})",
            f"0-0:42.0.0({self._hex_id('SAG1')})",
            f"1-0:1.8.0({e_in:010.3f}*kWh)",
            f"1-0:2.8.0({e_out:010.3f}*kWh)",
            f"1-0:3.8.0({e_in * 0.1:010.3f}*kvarh)",
            f"1-0:4.8.0({e_in * 0.05:010.3f}*kvarh)",
            f"1-0:1.7.0({self.load.power(instant):06.3f}*kW)",
            f"1-0:2.7.0({self.solar.power(instant):06.3f}*kW)",
            "1-0:3.7.0(00.000*kvar)",
            "1-0:4.7.0(00.000*kvar)",
            "0-0:17.0.0(27.600*kVA)",
            "0-0:96.3.10(1)",
            *(f"0-0:96.13.{i}()" for i in (0, 2, 3, 4, 5)),
            "0-1:24.1.0(003)",
            f"0-1:96.1.0({self._hex_id('FLO1')})",
            f"0-1:24.2.1({format_dsmr_timestamp(capture)})({self.gas.energy(capture):09.3f}*m3)",
        ]
        return "Lux5\\253663629_D", lines


class DsmrTcpServer(SimulatorServer):
    """A P1-to-TCP bridge (ser2net style): every client gets a telegram now and then every ``interval`` s."""

    def __init__(
        self,
        meter: SimulatedP1Meter,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        interval: float = 10.0,
        clock: Callable[[], datetime] | None = None,
        smarty_key: Secret | None = None,
    ) -> None:
        """``smarty_key``: send Smarty-encrypted frames, as Luxembourg meters do."""
        super().__init__(host, port)
        self.meter, self.interval, self.smarty_key = meter, interval, smarty_key
        self._clock = clock or (lambda: datetime.now(UTC))

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Push the telegram of the moment every ``interval`` s until the client hangs up."""
        while True:
            now = self._clock()
            key = self.smarty_key
            writer.write(self.meter.telegram_at(now) if key is None else self.meter.smarty_frame_at(now, key))
            await writer.drain()
            if not await self.pause(reader, self.interval):
                return
