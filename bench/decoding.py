"""Frames decoded per second per protocol on one core, against a bare walker of the same frames.

Frames come from gxcore's own deterministic simulators (fixed seeds and instants), so
every run decodes the same bytes. Before timing, each frame goes once through the
decoder and once through its walker and both must agree on how many values it holds:
the peer walks exactly what the decoder decodes. DLMS is measured in bench.dlms_frames
against gurux-dlms itself.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from bench.figures import Figure, RunContext
from bench.timing import Contender, over, race
from bench.walkers import RegisterBlockWalker, walk_dsmr, walk_iec62056_21, walk_mbus, walk_wmbus
from gxami_meterlab.simulators.dsmr import SimulatedP1Meter
from gxami_meterlab.simulators.iec62056_21 import SimulatedIecMeter
from gxami_meterlab.simulators.mbus import MBusBus
from gxami_meterlab.simulators.modbus import raw_value
from gxami_meterlab.simulators.wmbus import WMBusTelegramGenerator
from gxcore.profiles.model import ProfileCatalog
from gxcore.protocols.dsmr import decode_dsmr_telegram
from gxcore.protocols.iec62056_21 import decode_iec62056_21_readout
from gxcore.protocols.mbus import LongFrame, decode_mbus_telegram, encode_frame
from gxcore.protocols.modbus import ReadBlock, engineering_value, plan_reads, register_points
from gxcore.protocols.modbus.codec import encode_value
from gxcore.protocols.modbus.planner import split_block
from gxcore.protocols.modbus.profile import modbus_parameters
from gxcore.protocols.wmbus import decode_wmbus_telegram

SEED = 1
INSTANT = datetime(2024, 3, 14, 9, 26, 53, tzinfo=UTC)
REPEATS = 5


@dataclass(frozen=True, slots=True)
class DecodeCase:
    """One protocol: its frames, our decoder, the walker, and how to count values in a decoded frame."""

    bench: str
    frames: Sequence[Any]
    decode: Callable[[Any], Any]
    walk: Callable[[Any], int]
    values_in: Callable[[Any], int]
    peer: str
    passes: tuple[int, int, int]  # quick, default, full: how many times one timed pass goes over the frames
    frame_bytes: Callable[[Any], int] = len


def _instants(count: int) -> list[datetime]:
    return [INSTANT + timedelta(minutes=15 * i) for i in range(count)]


def mbus_case() -> DecodeCase:
    bus = MBusBus(SEED, 40)  # heat, water, electricity, heat with 3-telegram history, 10 of each
    frames = [
        encode_frame(LongFrame(0x08, m.primary_address, 0x72, bus.user_data(m, part, at, access=part + 1)))
        for at in _instants(2)
        for m in bus.meters
        for part in range(bus.telegram_count(m))
    ]
    return DecodeCase(
        "decode_mbus",
        frames,
        decode_mbus_telegram,
        walk_mbus,
        lambda t: len(t.records),
        "bare walker: checksum (sum) + DIF/VIF record walk",
        (1, 60, 200),
    )


def _wmbus_case(encrypted: bool) -> DecodeCase:
    gen = WMBusTelegramGenerator(SEED, 100)  # even indexes encrypt with mode 5, odd ones send in the clear
    frames = [
        (gen.telegram(m.index, at, with_crc=True), m.key)
        for at in _instants(2)
        for m in gen.meters
        if (m.key is not None) == encrypted
    ]
    name = "decode_wmbus_mode5" if encrypted else "decode_wmbus"
    peer = "bare walker: format A block CRCs + header" + (" + AES-128-CBC (cryptography)" if encrypted else "")
    return DecodeCase(
        name,
        frames,
        lambda f: decode_wmbus_telegram(f[0], f[1], crc="present"),
        lambda f: walk_wmbus(f[0], f[1]),
        lambda t: len(t.records),
        peer + " + record walk",
        (1, 40, 150),
        lambda f: len(f[0]),
    )


def dsmr_case() -> DecodeCase:
    frames = [SimulatedP1Meter(SEED, i, variant="5.0").telegram_at(at) for i in range(10) for at in _instants(4)]
    return DecodeCase(
        # One record per data line, except the power-failure log, one line that holds several.
        "decode_dsmr",
        frames,
        decode_dsmr_telegram,
        walk_dsmr,
        lambda t: len({r.quantity for r in t.records}),
        "bare walker: CRC16/ARC table loop + split of each data line",
        (1, 25, 100),
    )


def iec_case() -> DecodeCase:
    frames = [SimulatedIecMeter(SEED, i).readout(at) for i in range(10) for at in _instants(4)]
    return DecodeCase(
        "decode_iec62056_21",
        frames,
        decode_iec62056_21_readout,
        walk_iec62056_21,
        lambda r: len(r.records),
        "bare walker: BCC (XOR folded as one integer) + data sets per line",
        (1, 40, 150),
    )


def _block_layout(block: ReadBlock) -> list[tuple[int, str, float, float]]:
    layout = []
    for rp in block.points:
        if rp.byte_order != "big" or rp.word_order != "big" or not rp.value_type.struct_code:
            raise ValueError(f"{rp.describe()}: the walker only knows big/big numeric points")
        layout.append((rp.address - block.address, rp.value_type.struct_code, rp.point.scale, rp.point.offset))
    return layout


def modbus_case() -> DecodeCase:
    profile = ProfileCatalog().get("eastron-sdm630")
    points = register_points(profile)
    plan = plan_reads(points, modbus_parameters(profile))
    frames: list[tuple[ReadBlock, list[int], RegisterBlockWalker]] = []
    for index in range(1, 11):
        for at in _instants(2):
            for block in plan:
                words = [0] * block.count
                for rp in block.points:
                    start = rp.address - block.address
                    words[start : start + rp.count] = encode_value(rp, raw_value(SEED, index, rp, at))
                frames.append((block, words, RegisterBlockWalker(_block_layout(block), block.count)))

    def decode(frame: tuple[ReadBlock, list[int], RegisterBlockWalker]) -> list[float]:
        block, words, _ = frame
        # What the driver does with a reply: the block's raw values, then scale and offset.
        return [engineering_value(rp, raw) for rp, raw in split_block(block, words) if not isinstance(raw, str)]

    return DecodeCase(
        "decode_modbus",
        frames,
        decode,
        lambda f: f[2].walk(f[1]),
        len,
        "bare walker: struct.pack of the block + one precompiled struct.unpack_from per point, x scale + offset",
        (1, 80, 300),
        lambda f: 2 * len(f[1]),
    )


CASES: dict[str, Callable[[], DecodeCase]] = {
    "decode_mbus": mbus_case,
    "decode_wmbus": lambda: _wmbus_case(encrypted=False),
    "decode_wmbus_mode5": lambda: _wmbus_case(encrypted=True),
    "decode_dsmr": dsmr_case,
    "decode_iec62056_21": iec_case,
    "decode_modbus": modbus_case,
}


def measure(case: DecodeCase, ctx: RunContext) -> Figure:
    """Check decoder and walker agree on every frame, then race them."""
    for pos, frame in enumerate(case.frames):
        ours, walked = case.values_in(case.decode(frame)), case.walk(frame)
        if ours != walked:
            raise RuntimeError(f"{case.bench}: frame {pos} decodes to {ours} values, the walker finds {walked}")
    passes = ctx.size.pick(*case.passes)
    decoder = Contender("ours", over(case.frames, passes, case.decode))
    walker = Contender("peer", over(case.frames, passes, case.walk))
    rates = race([decoder, walker], repeats=REPEATS if passes > 1 else 1)
    return Figure(
        case.bench,
        rates["ours"],
        "frames/s",
        rates["peer"],
        "higher",
        {
            "peer": case.peer,
            "frames": len(case.frames),
            "mean_frame_bytes": round(sum(map(case.frame_bytes, case.frames)) / len(case.frames)),
        },
    )


def run_case(name: str) -> Callable[[RunContext], Iterator[Figure]]:
    """The benchmark function of one case."""

    def run(ctx: RunContext) -> Iterator[Figure]:
        yield measure(CASES[name](), ctx)

    return run
