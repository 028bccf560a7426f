"""DLMS/COSEM replies parsed per second: our sans-IO exchange against gurux-dlms called directly.

The reply frames are recorded once from gxcore's meter core (the simulator's household
model, fixed instants) answering our client core in memory. Then the same frames are
parsed two ways:

* ours: a fresh :class:`gxcore.protocols.dlms.session.Exchange` per reply (our wrapper framer, the
  unsolicited-push check, address check, gurux's ``getData`` inside ``quiet()``, block
  follow-up with ``receiverReady``, error mapping), then what the reader does with the value:
  ``apply_scaler`` for a register, ``decode_rows`` (timestamps as aware datetimes) for a
  profile buffer;
* direct: a bare ``GXDLMSClient.getData`` loop (``receiverReady`` between blocks) and
  ``updateValue`` into a GXDLMSRegister (scaler applied) / GXDLMSProfileGeneric (rows with
  GXDateTime), the least a gurux user writes.

The ratio ours/direct is the cost of our layer; the issue wants at least 0.9.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from gurux_dlms import GXByteBuffer, GXDLMSClient, GXReplyData
from gurux_dlms.enums import Authentication, Command, InterfaceType
from gurux_dlms.objects import GXDLMSProfileGeneric, GXDLMSRegister

from bench.figures import Figure, RunContext
from bench.timing import Contender, over, race
from gxami_meterlab.dlms.server import CosemMeterCore
from gxami_meterlab.simulators.dlms import CURRENT, IMPORT, LOAD_PROFILE, PROFILES, REGISTERS, VOLTAGE, _MeterValues
from gxcore.protocols.dlms.obis import apply_scaler
from gxcore.protocols.dlms.parameters import DlmsParameters
from gxcore.protocols.dlms.profile import (
    CaptureObject,
    clock_column,
    decode_rows,
    encode_range_selection,
    parse_capture_objects,
)
from gxcore.protocols.dlms.session import DlmsClientCore, Exchange

SEED = 1
MAX_PDU = 1024  # a common meter setting: a day of 15-minute rows then comes in three blocks
INSTANT = datetime(2024, 3, 14, 12, 0, tzinfo=UTC)
SCALERS = {IMPORT: 0, VOLTAGE: -1, CURRENT: -2}
REPEATS = 5
_GET = frozenset({Command.GET_RESPONSE})


@dataclass(frozen=True, slots=True)
class Recording:
    """Reply frames of a few meters: register values and one-day load-profile buffers."""

    registers: list[tuple[str, list[bytes]]]  # (OBIS, reply frames)
    profiles: list[list[bytes]]
    capture_objects: object  # attribute 3 of the profile, as gurux decoded it
    columns: tuple[CaptureObject, ...]
    core: DlmsClientCore  # an associated client core to replay through


def _run(exchange: Exchange, meter: CosemMeterCore, now: datetime, frames: list[bytes] | None = None) -> Exchange:
    while not exchange.done:
        reply = meter.receive_data(exchange.data_to_send(), now)
        if frames is not None:
            frames.append(reply)
        exchange.receive_data(reply, 0.0)
    return exchange


def record(meters: int) -> Recording:
    """Associate with ``meters`` simulated meters in memory and keep their reply frames."""
    registers: list[tuple[str, list[bytes]]] = []
    profiles: list[list[bytes]] = []
    capture: object = None
    columns: tuple[CaptureObject, ...] = ()
    core: DlmsClientCore | None = None
    for index in range(meters):
        now = INSTANT + timedelta(minutes=7 * index)
        meter = CosemMeterCore(_MeterValues(SEED, index), REGISTERS, PROFILES, max_pdu=MAX_PDU)
        core = DlmsClientCore(DlmsParameters(max_pdu=MAX_PDU))
        core.check_association(_run(core.associate(), meter, now))
        for obis in SCALERS:
            frames: list[bytes] = []
            _run(core.get(3, obis, 2), meter, now, frames)
            registers.append((obis, frames))
        capture = _run(core.get(7, LOAD_PROFILE, 3), meter, now).value()
        columns = parse_capture_objects(capture)
        selection = encode_range_selection(columns[clock_column(columns)], now - timedelta(days=1), now)
        frames = []
        _run(core.get(7, LOAD_PROFILE, 2, selection), meter, now, frames)
        profiles.append(frames)
    if core is None:
        raise ValueError("record at least one meter")
    return Recording(registers, profiles, capture, columns, core)


class OurParser:
    """The reply path of gxcore's reader, fed recorded frames."""

    def __init__(self, rec: Recording) -> None:
        self.rec = rec

    def _value(self, frames: list[bytes], what: str) -> object:
        exchange = Exchange(self.rec.core, [b"\x00"], _GET, what)
        exchange.data_to_send()
        for frame in frames:
            exchange.receive_data(frame, 0.0)
        return exchange.value()

    def register(self, item: tuple[str, list[bytes]]) -> float:
        obis, frames = item
        raw = self._value(frames, f"GET 3/{obis}/2")
        if not isinstance(raw, int | float):
            raise TypeError(f"{obis}: not a number")
        return apply_scaler(raw, SCALERS[obis])

    def profile(self, frames: list[bytes]) -> list[tuple[datetime, list[object]]]:
        return decode_rows(self._value(frames, f"GET 7/{LOAD_PROFILE}/2"), self.rec.columns, None)


class DirectParser:
    """gurux-dlms used bare: getData until the reply is whole, then updateValue."""

    def __init__(self, rec: Recording) -> None:
        client = GXDLMSClient(True, 16, 1, Authentication.NONE, None, InterfaceType.WRAPPER)
        client.maxReceivePDUSize = MAX_PDU
        self.client = client
        self.registers: dict[str, GXDLMSRegister] = {}
        for obis, scaler in SCALERS.items():
            reg = GXDLMSRegister(obis)
            client.updateValue(reg, 3, [scaler, 27])
            self.registers[obis] = reg
        self.profile_generic = GXDLMSProfileGeneric(LOAD_PROFILE)
        client.updateValue(self.profile_generic, 3, rec.capture_objects)

    def _value(self, frames: list[bytes]) -> object:
        reply = GXReplyData()
        for frame in frames:
            self.client.getData(GXByteBuffer(frame), reply, GXReplyData())
            if reply.isMoreData():
                self.client.receiverReady(reply)
        return reply.value

    def register(self, item: tuple[str, list[bytes]]) -> float:
        obis, frames = item
        reg = self.registers[obis]
        self.client.updateValue(reg, 2, self._value(frames))
        return float(reg.value)

    def profile(self, frames: list[bytes]) -> list[list[object]]:
        pg = self.profile_generic
        pg.buffer.clear()  # updateValue appends rows to what the object holds
        self.client.updateValue(pg, 2, self._value(frames))
        rows: list[list[object]] = pg.buffer
        return rows


def _check_same(ours: list[object], direct: list[object]) -> None:
    """Both parsers must give the same values, or the race compares different work."""
    for pos, (a, b) in enumerate(zip(ours, direct, strict=True)):
        # Ours applies the scaler exactly (a Decimal: 232.6); gurux multiplies floats (232.60000000000002).
        close = isinstance(a, float | Decimal) and isinstance(b, float) and abs(float(a) - b) <= 1e-9 * max(1.0, abs(b))
        if a != b and not close:
            raise RuntimeError(f"value {pos}: ours gives {a!r}, gurux directly {b!r}")


def run_register(ctx: RunContext) -> Iterator[Figure]:
    rec = record(ctx.size.pick(2, 10, 20))
    ours, direct = OurParser(rec), DirectParser(rec)
    _check_same([ours.register(r) for r in rec.registers], [direct.register(r) for r in rec.registers])
    passes = ctx.size.pick(1, 150, 500)
    rates = race(
        [
            Contender("ours", over(rec.registers, passes, ours.register)),
            Contender("direct", over(rec.registers, passes, direct.register)),
        ],
        repeats=REPEATS if passes > 1 else 1,
    )
    yield Figure(
        "decode_dlms_register",
        rates["ours"],
        "replies/s",
        rates["direct"],
        "higher",
        {
            "peer": "gurux-dlms direct: GXDLMSClient.getData + updateValue(GXDLMSRegister, 2)",
            "replies": len(rec.registers),
            "mean_frame_bytes": _mean(len(f[0]) for _, f in rec.registers),
            "wanted_ratio": 0.9,
        },
    )


def run_profile(ctx: RunContext) -> Iterator[Figure]:
    rec = record(ctx.size.pick(1, 4, 10))
    ours, direct = OurParser(rec), DirectParser(rec)
    for frames in rec.profiles:  # the register columns of every row (times differ in type, not in value)
        _check_same(
            [v for _, row in ours.profile(frames) for v in row[1:]],
            [v for row in direct.profile(frames) for v in row[1:]],
        )
    passes = ctx.size.pick(1, 8, 30)
    rates = race(
        [
            Contender("ours", over(rec.profiles, passes, ours.profile)),
            Contender("direct", over(rec.profiles, passes, direct.profile)),
        ],
        repeats=REPEATS if passes > 1 else 1,
    )
    rows = len(ours.profile(rec.profiles[0]))
    yield Figure(
        "decode_dlms_profile",
        rates["ours"],
        "replies/s",
        rates["direct"],
        "higher",
        {
            "peer": "gurux-dlms direct: getData/receiverReady over the blocks + updateValue(GXDLMSProfileGeneric, 2)",
            "replies": len(rec.profiles),
            "frames_per_reply": len(rec.profiles[0]),
            "rows_per_reply": rows,
            "max_pdu": MAX_PDU,
            "wanted_ratio": 0.9,
        },
    )


def _mean(sizes: Iterator[int]) -> int:
    values = list(sizes)
    return round(sum(values) / len(values))
