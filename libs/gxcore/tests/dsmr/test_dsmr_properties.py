"""Hypothesis: hostile bytes never escape as anything but gxcore errors; CRC round trips."""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime, timedelta

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gxami_meterlab.simulators.dsmr import VARIANTS, SimulatedP1Meter
from gxcore.errors import GxError
from gxcore.protocols.dsmr import P1Reader, crc16_arc, decode_dsmr_telegram, encode_telegram, next_telegram

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

CORPUS = [
    SimulatedP1Meter(seed, seed % 3, variant=v).telegram_at(
        datetime(2024, 1, 1, tzinfo=UTC) + timedelta(hours=7 * seed)
    )
    for seed, v in enumerate(VARIANTS * 2)
]
P1_ALPHABET = b"/!()*.:-0123456789ABCDEFSWkWhm3\r\n\\ "


def decode_or_gx_error(data: bytes) -> None:
    with contextlib.suppress(GxError):
        decode_dsmr_telegram(data)


@given(st.binary(max_size=600))
@SETTINGS
def test_any_bytes_decode_or_raise_gx_error(data: bytes) -> None:
    decode_or_gx_error(data)


@given(st.lists(st.sampled_from(list(P1_ALPHABET)), max_size=400).map(bytes))
@SETTINGS
def test_p1_like_text_decodes_or_raises_gx_error(data: bytes) -> None:
    decode_or_gx_error(b"/XMX5X\r\n\r\n" + data)


@st.composite
def mutated(draw: st.DrawFn) -> tuple[bytes, bool]:
    """A corpus telegram with bytes replaced, inserted or deleted; optionally with the CRC fixed up."""
    raw = bytearray(draw(st.sampled_from(CORPUS)))
    for _ in range(draw(st.integers(1, 4))):
        pos = draw(st.integers(0, len(raw) - 1))
        op = draw(st.sampled_from(["replace", "insert", "delete"]))
        byte = draw(st.sampled_from([*list(P1_ALPHABET), 0, 127, 255]))
        if op == "replace":
            raw[pos] = byte
        elif op == "insert":
            raw.insert(pos, byte)
        else:
            del raw[pos]
    fix_crc = draw(st.booleans())
    bang = raw.rfind(b"!")
    if fix_crc and bang > 0 and raw.startswith(b"/"):
        # Recompute the CRC so the mutation reaches the line parser instead of stopping at the CRC.
        raw = raw[: bang + 1] + f"{crc16_arc(raw[: bang + 1]):04X}\r\n".encode()
    return bytes(raw), fix_crc


@given(mutated())
@SETTINGS
def test_mutated_telegrams_decode_or_raise_gx_error(case: tuple[bytes, bool]) -> None:
    data, _ = case
    try:
        telegram = decode_dsmr_telegram(data)
    except GxError:
        return
    # A telegram that decodes is whole: every record has a quantity and a kind.
    assert all(r.quantity and r.kind for r in telegram.records)


@given(st.lists(st.binary(max_size=300), max_size=12), st.sampled_from(CORPUS))
@SETTINGS
def test_reader_survives_any_chunks_and_stays_bounded(chunks: list[bytes], good: bytes) -> None:
    reader = P1Reader(max_telegram_size=2048)
    for chunk in chunks:
        reader.feed(chunk)
        assert reader.buffered <= 2048 + len(chunk)
    # After whatever came before, a clean telegram behind a CR LF still comes through.
    got = reader.feed(b"\r\n" + good)
    assert got
    assert got[-1].raw == good.rstrip(b"\r\n")


@given(st.binary(max_size=400))
@SETTINGS
def test_framer_consumes_progress(buf: bytes) -> None:
    consumed, frame = next_telegram(buf)
    assert 0 <= consumed <= len(buf)
    if frame is not None:
        assert consumed > 0
        assert frame.startswith(b"/")


@given(st.binary(min_size=0, max_size=200))
@SETTINGS
def test_crc_residue_is_zero(data: bytes) -> None:
    crc = crc16_arc(data)
    assert crc16_arc(data + crc.to_bytes(2, "little")) == 0


line = st.builds(
    lambda b, c, d, e, value, unit: f"1-{b}:{c}.{d}.{e}({value}*{unit})",
    st.integers(0, 9),
    st.integers(1, 99),
    st.sampled_from([7, 8]),
    st.integers(0, 9),
    st.decimals(min_value=0, max_value=10**6, places=3, allow_nan=False, allow_infinity=False),
    st.sampled_from(["kWh", "kW", "V", "A", "kvarh"]),
)


@given(st.lists(line, min_size=1, max_size=20))
@SETTINGS
def test_encode_decode_round_trip(lines: list[str]) -> None:
    raw = encode_telegram("GXS5\\2ROUND", ["1-3:0.2.8(50)", *lines])
    telegram = decode_dsmr_telegram(raw)
    assert telegram.crc == int(raw.rstrip()[-4:], 16)
    registers = [r for r in telegram.records if r.kind == "register"]
    assert [f"{r.quantity}({r.value}*{r.unit})" for r in registers] == lines


@given(st.sampled_from(CORPUS), st.data())
@SETTINGS
def test_an_odd_line_costs_only_itself(good: bytes, data: st.DataObject) -> None:
    # Tolerant decoding: one line replaced by anything printable keeps every other line's records,
    # and the odd line is either decoded or reported in ``unparsed`` with its line number.
    whole = decode_dsmr_telegram(good, strict=True)
    body = good.rstrip(b"\r\n")
    lines = body[: body.index(b"!")].split(b"\r\n")
    data_lines = [i for i, line in enumerate(lines) if line and i > 0 and not line.startswith(b"(")]
    index = data.draw(st.sampled_from(data_lines))
    junk = data.draw(st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=40))
    if junk.startswith("(") or "!" in junk or "/" in junk:
        return
    lines[index] = junk.encode()
    changed = b"\r\n".join(lines) + b"!"
    try:
        telegram = decode_dsmr_telegram(changed + f"{crc16_arc(changed):04X}".encode())
    except GxError:
        return  # e.g. the junk is an M-Bus device-type line that changes another line's medium
    kept = telegram.records  # the junk line may decode to records of its own: a superset is fine
    original_line = good.split(b"\r\n")[index]
    before = [r for r in whole.records if not original_line.startswith(r.quantity.encode())]
    assert {(r.quantity, r.value) for r in before} <= {(r.quantity, r.value) for r in kept}
    assert all(u.line == index + 1 for u in telegram.unparsed)
