"""A deterministic wired M-Bus: N simulated slaves behind one bus, and a TCP gateway for it.

:class:`MBusBus` is sans-IO: :meth:`MBusBus.respond` takes one request frame and
returns what the master would read back (or None for silence). When several slaves
answer at once their bytes are ANDed, as on the real bus where any slave pulling a
bit to "space" wins; identical E5 acknowledgements therefore merge into one E5 while
differing long frames turn into garbage, which is how a master sees a collision.

Meters are derived from ``seed`` alone; their values are pure functions of
``(seed, index, instant)`` where ``instant`` comes from the ``clock`` callable.
Profiles cycle by index: heat, water, electricity, and a heat meter with monthly
history that answers in three telegrams (DIF 0x1F "more records follow").

:class:`MBusTcpGateway` serves the bus as an M-Bus TCP gateway: raw M-Bus frames over
a TCP stream, each complete request frame answered with the bus's reply bytes.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

from gxami_meterlab.simulators.tcp import SimulatorServer
from gxcore.errors import FramingError
from gxcore.protocols.mbus.frame import (
    ADDRESS_BROADCAST,
    ADDRESS_BROADCAST_REPLY,
    ADDRESS_NETWORK,
    CI_SELECT_SECONDARY,
    FCB,
    FCV,
    MAX_FRAME,
    Ack,
    ControlFrame,
    LongFrame,
    SecondaryAddress,
    ShortFrame,
    decode_frame,
    encode_frame,
    manufacturer_value,
)
from gxcore.protocols.mbus.values import encode_bcd, encode_date_g, encode_datetime_f

PROFILES = ("heat", "water", "electricity", "heat-history")
_MEDIUM = {"heat": 0x04, "water": 0x07, "electricity": 0x02, "heat-history": 0x04}
MANUFACTURER = "GXS"
EPOCH = datetime(2020, 1, 1, tzinfo=UTC)
ACK_BYTE = encode_frame(Ack())


def _fixed_clock() -> datetime:
    return datetime(2024, 1, 15, 12, 0, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class SimulatedMeter:
    """Identity of one simulated slave."""

    index: int
    primary_address: int
    secondary: SecondaryAddress
    profile: str


def meter_rates(seed: int, index: int) -> tuple[float, float]:
    """(base, hourly rate) of meter ``index``: fixed by the seed."""
    rng = random.Random(f"gxami-mbus:{seed}:{index}")  # noqa: S311 - simulation, not security
    return rng.uniform(1_000, 50_000), rng.uniform(0.2, 3.0)


def register_value(seed: int, index: int, instant: datetime) -> float:
    """The main register (kWh, m³ x 1000 or kWh) of a meter at ``instant``: a pure function."""
    base, rate = meter_rates(seed, index)
    hours = (instant - EPOCH).total_seconds() / 3600
    return base + rate * max(hours, 0.0)


def _month_ends(instant: datetime, count: int) -> list[datetime]:
    first = instant.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    ends = []
    for _ in range(count):
        ends.append(first)
        first = (first - timedelta(days=1)).replace(day=1)
    return ends


def _dif(length_code: int, storage: int = 0, tariff: int = 0, function: int = 0) -> bytes:
    dif = length_code | (function << 4) | ((storage & 1) << 6)
    rest, tariff_bits = storage >> 1, tariff
    difes = []
    while rest or tariff_bits:
        difes.append((rest & 0x0F) | ((tariff_bits & 0x03) << 4))
        rest, tariff_bits = rest >> 4, tariff_bits >> 2
    out = bytearray([dif | (0x80 if difes else 0)])
    for position, dife in enumerate(difes):
        out.append(dife | (0x80 if position < len(difes) - 1 else 0))
    return bytes(out)


def _int(value: float, size: int) -> bytes:
    return round(value).to_bytes(size, "little", signed=True)


@dataclass(slots=True)
class _LinkState:
    last_fcb: bool = False
    index: int = -1  # telegram last sent; -1 = none since reset
    selected: bool = False
    access: int = 0


@dataclass(slots=True)
class MBusBus:
    """``count`` simulated slaves on one bus; answers request frames as the bus would."""

    seed: int
    count: int
    clock: Callable[[], datetime] = _fixed_clock
    meters: tuple[SimulatedMeter, ...] = field(init=False)
    _state: list[_LinkState] = field(init=False)

    def __post_init__(self) -> None:
        if not 0 < self.count <= 250:
            raise ValueError("a bus holds 1..250 simulated meters")
        rng = random.Random(f"gxami-mbus-ids:{self.seed}")  # noqa: S311 - simulation, not security
        ids: list[str] = []
        for index in range(self.count):
            while True:
                if index % 3 == 1:  # same batch as the previous meter: only the last digit differs
                    candidate = ids[-1][:7] + str(rng.randrange(10))
                elif index % 3 == 2:  # same first four digits as the previous meter
                    candidate = ids[-1][:4] + f"{rng.randrange(10_000):04d}"
                else:
                    candidate = f"{rng.randrange(100_000_000):08d}"
                if candidate not in ids:
                    break
            ids.append(candidate)
        man = manufacturer_value(MANUFACTURER)
        self.meters = tuple(
            SimulatedMeter(
                index,
                index + 1,
                SecondaryAddress(ids[index], man, 1, _MEDIUM[PROFILES[index % 4]]),
                PROFILES[index % 4],
            )
            for index in range(self.count)
        )
        self._state = [_LinkState() for _ in range(self.count)]

    # -- what the meters say --------------------------------------------------------

    def telegram_count(self, meter: SimulatedMeter) -> int:
        return 3 if meter.profile == "heat-history" else 1

    def user_data(self, meter: SimulatedMeter, part: int, instant: datetime, access: int = 0) -> bytes:
        """CI 0x72 user data of telegram ``part`` of ``meter`` at ``instant``."""
        sec = meter.secondary
        header = (
            bytes.fromhex(sec.id_digits)[::-1]
            + sec.manufacturer.to_bytes(2, "little")
            + bytes([sec.version, sec.medium, access & 0xFF, 0x00, 0x00, 0x00])
        )
        return header + self._records(meter, part, instant)

    def _records(self, meter: SimulatedMeter, part: int, instant: datetime) -> bytes:
        value = register_value(self.seed, meter.index, instant)
        local = instant.replace(tzinfo=None)
        clock = _dif(0x4) + b"\x6d" + encode_datetime_f(local)
        if meter.profile == "water":
            month = _month_ends(instant, 1)[0]
            return (
                _dif(0x4) + b"\x13" + _int(value * 10, 4)  # litres
                + clock
                + _dif(0x4, storage=1) + b"\x13" + _int(register_value(self.seed, meter.index, month) * 10, 4)
                + _dif(0x2, storage=1) + b"\x6c" + encode_date_g(date(month.year, month.month, month.day))
            )  # fmt: skip
        if meter.profile == "electricity":
            out = _dif(0x4) + b"\x03" + _int(value * 1000, 4)  # Wh import
            out += _dif(0x4, tariff=1) + b"\x03" + _int(value * 600, 4)
            out += _dif(0x4, tariff=2) + b"\x03" + _int(value * 400, 4)
            out += _dif(0x4) + b"\x83\x3c" + _int(value * 50, 4)  # Wh export
            out += _dif(0x4) + b"\x2b" + _int(1000 + (value * 37) % 2000, 4)  # W
            for phase in (1, 2, 3):  # 0.1 V at phase L1..L3
                out += _dif(0x2) + bytes([0xFD, 0xC8, 0xFC, phase]) + _int(2300 + phase, 2)
            return out + clock
        current = (
            _dif(0xC) + b"\x78" + encode_bcd(int(meter.secondary.id_digits), 4)
            + _dif(0x4) + b"\x06" + _int(value, 4)  # kWh
            + _dif(0x4) + b"\x13" + _int(value * 20, 4)  # litres of heating water
            + _dif(0x2) + b"\x59" + _int(6500 + (value * 13) % 1000, 2)  # 0.01 °C
            + _dif(0x2) + b"\x5d" + _int(4000 + (value * 7) % 1000, 2)
            + clock
        )  # fmt: skip
        if meter.profile == "heat":
            return current
        if part == 0:
            return current + b"\x1f"
        months = _month_ends(instant, 12)[6 * (part - 1) : 6 * part]
        history = b"".join(
            _dif(0x4, storage=6 * (part - 1) + n + 1) + b"\x06" + _int(register_value(self.seed, meter.index, end), 4)
            for n, end in enumerate(months)
        )
        return history + (b"\x1f" if part < 2 else b"")

    # -- the bus --------------------------------------------------------------------

    def respond(self, request_frame: bytes) -> bytes | None:
        """Reply bytes the master would read after sending ``request_frame`` (None: silence)."""
        consumed, frame = decode_frame(request_frame)
        if frame is None or consumed != len(request_frame):
            return None
        replies: list[bytes] = []
        if isinstance(frame, ShortFrame) and frame.control == 0x40:
            for _meter, state in self._addressed(frame.address):
                state.last_fcb, state.index = False, -1
                state.selected = False if frame.address == ADDRESS_NETWORK else state.selected
                replies.append(ACK_BYTE)
        elif isinstance(frame, ShortFrame) and frame.control & 0xCF == 0x4B:
            fcv, fcb = bool(frame.control & FCV), bool(frame.control & FCB)
            replies.extend(self._rsp_ud(meter, state, fcv, fcb) for meter, state in self._addressed(frame.address))
        elif isinstance(frame, LongFrame) and frame.control & 0xCF == 0x43:
            if frame.address == ADDRESS_NETWORK and frame.ci == CI_SELECT_SECONDARY and len(frame.data) == 8:
                try:
                    mask = SecondaryAddress.from_bytes(frame.data)
                except (ValueError, FramingError):
                    return None  # a selection no slave can parse: silence
                for meter, state in zip(self.meters, self._state, strict=True):
                    state.selected = mask.matches(meter.secondary)
                    if state.selected:
                        state.last_fcb, state.index = False, -1
                        replies.append(ACK_BYTE)
            else:
                replies.extend(ACK_BYTE for _ in self._addressed(frame.address))
        elif isinstance(frame, ControlFrame):
            replies.extend(ACK_BYTE for _ in self._addressed(frame.address))
        if frame is not None and getattr(frame, "address", None) == ADDRESS_BROADCAST:
            return None
        return _collide(replies)

    def _addressed(self, address: int) -> list[tuple[SimulatedMeter, _LinkState]]:
        pairs = zip(self.meters, self._state, strict=True)
        if address in (ADDRESS_BROADCAST, ADDRESS_BROADCAST_REPLY):
            return list(pairs)
        if address == ADDRESS_NETWORK:
            return [(meter, state) for meter, state in pairs if state.selected]
        return [(meter, state) for meter, state in pairs if meter.primary_address == address]

    def _rsp_ud(self, meter: SimulatedMeter, state: _LinkState, fcv: bool, fcb: bool) -> bytes:
        total = self.telegram_count(meter)
        if not fcv or state.index < 0:
            state.index = 0
        elif fcb != state.last_fcb:  # a new request: the next telegram (or the first again)
            state.index = (state.index + 1) % total
        # else: FCB not toggled, the master lost our reply: repeat the same telegram
        if fcv:
            state.last_fcb = fcb
        state.access = (state.access + 1) & 0xFF
        data = self.user_data(meter, state.index, self.clock(), state.access)
        return encode_frame(LongFrame(0x08, meter.primary_address, 0x72, data))


def _collide(replies: list[bytes]) -> bytes | None:
    """What the master reads when all ``replies`` are sent at once: their bitwise AND."""
    if not replies:
        return None
    merged = bytearray(max(len(reply) for reply in replies))
    merged[:] = b"\xff" * len(merged)
    for reply in replies:
        for position, byte in enumerate(reply):
            merged[position] &= byte
    return bytes(merged)


class MBusTcpGateway(SimulatorServer):
    """An asyncio TCP server in front of an :class:`MBusBus`: raw M-Bus frames both ways."""

    def __init__(self, bus: MBusBus, host: str = "127.0.0.1", port: int = 0) -> None:
        super().__init__(host, port)
        self.bus = bus
        self.requests = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Answer every complete request frame with the bus's reply bytes; skip bytes that frame nothing."""
        buffer = bytearray()
        while chunk := await reader.read(512):
            buffer += chunk
            while buffer:
                consumed, frame = decode_frame(buffer)
                if consumed == 0:
                    break
                request = bytes(buffer[:consumed])
                del buffer[:consumed]
                if frame is None:
                    continue
                self.requests += 1
                reply = self.bus.respond(request)
                if reply:
                    writer.write(reply)
                    await writer.drain()
            del buffer[: max(0, len(buffer) - MAX_FRAME)]  # a half frame never grows past one frame
