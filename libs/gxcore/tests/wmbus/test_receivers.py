"""Receiver framings: public vectors, resync after garbage, typed skips with stream offsets, and properties."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gxami_meterlab.simulators.wmbus import WMBusTelegramGenerator
from gxcore.errors import ChecksumError, ConfigurationError, FramingError
from gxcore.protocols.wmbus.frame import add_crcs, strip_crcs
from gxcore.protocols.wmbus.receivers import (
    ReceivedFrame,
    ReceiverEvent,
    ReceiverFeed,
    ReceiverFraming,
    Skipped,
    amber_rssi_dbm,
    crc16_x25,
    encode_amber,
    encode_hex_line,
    encode_im871a,
    encode_length,
    encode_lfield,
    xor_checksum,
)

AT = datetime(2024, 1, 15, 12, 0, tzinfo=UTC)
GEN = WMBusTelegramGenerator(seed=3, count=4)
TELEGRAMS = GEN.telegrams(AT)
# OMS / wmbusmeters test telegram (Kamstrup Multical 21, "2E44...", CRCs removed), as rtl-wmbus would print it.
KAMSTRUP = bytes.fromhex("2A442D2C998734761B168D2091D37CAC21E1D68CDAFFCD3DC452BD802913FF7B1706CA9E355D6C2701CC24")


def frames(events: list[ReceiverEvent]) -> list[ReceivedFrame]:
    return [e for e in events if isinstance(e, ReceivedFrame)]


def skips(events: list[ReceiverEvent]) -> list[Skipped]:
    return [e for e in events if isinstance(e, Skipped)]


def feed_all(framing: ReceiverFraming, stream: bytes, step: int = 0, **kwargs: bool) -> list[ReceiverEvent]:
    splitter = ReceiverFeed(framing, **kwargs)
    if not step:
        return splitter.feed(stream)
    return [e for i in range(0, len(stream), step) for e in splitter.feed(stream[i : i + step])]


def test_checksums_match_published_values() -> None:
    # CRC RevEng catalogue, CRC-16/IBM-SDLC: check value for "123456789".
    assert crc16_x25(b"123456789") == 0x906E
    # wmbusmeters' AMB8465 driver: CMD_SERIALNO_REQ "FF 0B 00" has checksum F4, CMD_GET_REQ "FF 0A 02 00 80" has 77.
    assert xor_checksum(bytes.fromhex("FF0B00")) == 0xF4
    assert xor_checksum(bytes.fromhex("FF0A020080")) == 0x77
    # Amber manual RSSI conversion: two's complement, halved, minus 74.
    assert amber_rssi_dbm(0x00) == -74 and amber_rssi_dbm(0xD0) == -98 and amber_rssi_dbm(0x21) == -57.5


def test_an_amber_configuration_reply_is_a_message_not_a_telegram_nor_garbage() -> None:
    # AMB8465 CMD_GET_REQ reply to "FF 0A 02 00 80" as captured in wmbusmeters' driver (checksum 0x17).
    reply = bytes.fromhex(
        "FF8A7A00780080710200000000FFFFFA00FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF003200021400FFFFFFFFFF010004000000"
        "FFFFFF01440000000000000000FFFF0B040100FFFFFFFFFF00030000FFFFFFFFFFFFFF0000FFFFFFFFFFFFFFFFFFFFFFFFFF"
        "FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF17"
    )
    events = feed_all("amber", reply + encode_amber(TELEGRAMS[0], rssi=0xD0))
    assert [type(e) for e in events] == [Skipped, ReceivedFrame]
    message = skips(events)[0]
    assert (message.kind, message.offset, message.length, message.error) == ("message", 0, len(reply), None)
    assert frames(events)[0].offset == len(reply)


def test_hex_lines_tolerate_crlf_spaces_comments_and_junk_and_report_them() -> None:
    stream = (
        b"# rtl-wmbus started\r\n"
        + TELEGRAMS[0].hex().encode()
        + b"\r\n\r\n  "
        + " ".join(f"{b:02x}" for b in TELEGRAMS[1]).encode()
        + b"  \n"
        + b"this is not hex\n"
        + b"0x"
        + TELEGRAMS[2].hex().upper().encode()
        + b"\n"
        + b"T1;1;1;2019-04-27 11:45:01.000;97;148;76348799;0x"
        + KAMSTRUP.hex().encode()
        + b"\n"
        + b"T1;0;1;2019-04-27 11:45:02.000;97;148;76348799;0x"
        + KAMSTRUP.hex().encode()
        + b"\n"
    )
    events = feed_all("hex", stream, step=5)
    assert [f.raw for f in frames(events)] == [*TELEGRAMS[:3], KAMSTRUP]
    assert frames(events)[-1].rssi_raw == 97
    assert [s.kind for s in skips(events)] == ["comment", "garbage", "checksum"]
    junk = skips(events)[1]
    assert isinstance(junk.error, FramingError) and junk.offset == stream.index(b"this is not hex")
    assert f"at byte offset {junk.offset}" in str(junk.error)
    assert isinstance(skips(events)[2].error, ChecksumError)


def test_an_overlong_hex_line_is_reported_once_and_dropped_to_its_end() -> None:
    splitter = ReceiverFeed("hex")
    events = [e for _ in range(10) for e in splitter.feed(b"ab" * 200)]
    events += splitter.feed(b"cd\n" + encode_hex_line(TELEGRAMS[0]))
    assert [s.kind for s in skips(events)] == ["overlong"]
    assert [f.raw for f in frames(events)] == [TELEGRAMS[0]]
    assert splitter.pending == 0


def test_length_framing_slides_past_sizes_no_telegram_has() -> None:
    with_crc = add_crcs(TELEGRAMS[1], "A")
    stream = b"\xee\xee\x05" + encode_length(TELEGRAMS[0]) + b"\x00\x30\x99" + encode_length(with_crc)
    assert [f.raw for f in frames(feed_all("length", stream, step=3))] == [TELEGRAMS[0], with_crc]
    events = feed_all("length", stream)  # one call: each run of garbage is one report
    assert [f.raw for f in frames(events)] == [TELEGRAMS[0], with_crc]
    assert [(s.kind, s.offset, s.length) for s in skips(events)] == [
        ("garbage", 0, 3),
        ("garbage", 3 + 2 + len(TELEGRAMS[0]), 3),
    ]


def test_lfield_framing_takes_format_a_and_b_and_resyncs_on_the_crcs() -> None:
    a, b = encode_lfield(TELEGRAMS[0], "A"), encode_lfield(TELEGRAMS[1], "B")
    damaged = bytearray(encode_lfield(TELEGRAMS[2], "A"))
    damaged[20] ^= 0x01  # a data block, after block 1 whose CRC still holds
    # A false start inside the damaged bytes may hold what follows until its L + 1 bytes are in: the feed goes on.
    events = feed_all("lfield", b"\x2e\x44\x13" + a + bytes(damaged) + b + bytes(300), step=9)
    assert [(f.raw, f.crc) for f in frames(events)] == [(a, "present"), (b, "present")]
    assert "checksum" in [s.kind for s in skips(events)]
    assert frames(events)[0].offset == 3


def test_im871a_frames_with_timestamp_rssi_and_fcs() -> None:
    frame = encode_im871a(TELEGRAMS[0], rssi=0x9C, timestamp=0x01020304)
    assert frame[:4] == bytes([0xA5, 0xE2, 0x03, len(TELEGRAMS[0]) - 1])
    (heard,) = frames(feed_all("im871a", frame))
    assert (heard.raw, heard.crc, heard.rssi_raw, heard.timestamp) == (TELEGRAMS[0], "absent", 0x9C, 0x01020304)
    plain = encode_im871a(TELEGRAMS[1], fcs=False)
    assert plain[1] == 0x02
    assert [f.raw for f in frames(feed_all("im871a", plain))] == [TELEGRAMS[1]]


def test_im871a_bad_fcs_is_a_checksum_skip_and_the_next_frame_is_found() -> None:
    bad = bytearray(encode_im871a(TELEGRAMS[0], rssi=1))
    bad[-1] ^= 0xFF
    good = encode_im871a(TELEGRAMS[1], rssi=2)
    ping_reply = bytes.fromhex("A5010200")  # device management PING_RSP, no payload
    events = feed_all("im871a", bytes(bad) + ping_reply + good, step=4)
    assert [f.raw for f in frames(events)] == [TELEGRAMS[1]]
    kinds = [s.kind for s in skips(events)]
    assert kinds[0] == "checksum" and "message" in kinds
    assert isinstance(skips(events)[0].error, ChecksumError) and skips(events)[0].offset == 0


def test_amber_data_indication_with_rssi_and_without() -> None:
    (heard,) = frames(feed_all("amber", encode_amber(TELEGRAMS[2], rssi=0xD0)))
    assert (heard.raw, heard.rssi_raw, heard.rssi_dbm) == (TELEGRAMS[2], 0xD0, -98.0)
    (bare,) = frames(feed_all("amber", encode_amber(TELEGRAMS[2]), rssi=False))
    assert (bare.raw, bare.rssi_raw) == (TELEGRAMS[2], None)
    broken = bytearray(encode_amber(TELEGRAMS[2], rssi=1))
    broken[-1] ^= 1
    skip, *rest = skips(feed_all("amber", bytes(broken)))  # then the rest of it, scanned for a start byte
    assert skip.kind == "checksum" and isinstance(skip.error, ChecksumError) and skip.offset == 0
    assert all(r.kind == "garbage" for r in rest)


def test_unknown_framing_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="framing"):
        ReceiverFeed("cul")  # type: ignore[arg-type]  # the point of the test


def _encode(framing: ReceiverFraming, telegram: bytes, index: int) -> bytes:
    if framing == "hex":
        return encode_hex_line(telegram)
    if framing == "length":
        return encode_length(telegram)
    if framing == "lfield":
        return encode_lfield(telegram, "A" if index % 2 else "B")
    if framing == "im871a":
        return encode_im871a(telegram, rssi=index)
    return encode_amber(telegram, rssi=index)


# Garbage per framing, as the module doc states what each resync tolerates: junk lines for hex, bytes that can
# never be a size for length, anything at all for the iM871A with its FCS, anything without a start byte for Amber.
GARBAGE: dict[str, st.SearchStrategy[bytes]] = {
    "hex": st.lists(st.text(alphabet="xyz#;:-_ GHIJ\t", max_size=30), max_size=3).map(
        lambda lines: "".join(f"{line}\n" for line in lines).encode()
    ),
    "length": st.binary(max_size=40).map(lambda b: bytes(max(x, 2) for x in b)),
    "lfield": st.binary(max_size=40),
    "im871a": st.binary(max_size=40),
    "amber": st.binary(max_size=40).map(lambda b: bytes(x for x in b if x != 0xFF)),
}


@settings(max_examples=120, deadline=None)
@given(
    st.sampled_from(["hex", "length", "lfield", "im871a", "amber"]),
    st.data(),
    st.lists(st.integers(0, 3), min_size=1, max_size=6),
    st.integers(1, 64),
)
def test_garbage_between_valid_frames_never_loses_a_frame(
    framing: ReceiverFraming, data: st.DataObject, order: list[int], step: int
) -> None:
    chosen = [TELEGRAMS[i] for i in order]
    stream = b""
    for n, telegram in enumerate(chosen):
        stream += data.draw(GARBAGE[framing]) + _encode(framing, telegram, n)
    stream += data.draw(GARBAGE[framing])
    stream += bytes(300) if framing == "lfield" else b""  # the feed goes on: a false start waits for its L + 1 bytes
    events = feed_all(framing, stream, step=step)
    assert [strip_crcs(f.raw, crc=f.crc) for f in frames(events)] == chosen
    for skip in skips(events):
        assert 0 <= skip.offset < len(stream) and skip.length > 0


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(["hex", "length", "lfield", "im871a", "amber"]), st.lists(st.binary(max_size=300), max_size=12))
def test_any_bytes_never_raise_and_the_buffer_stays_bounded(framing: ReceiverFraming, chunks: list[bytes]) -> None:
    splitter = ReceiverFeed(framing)
    for chunk in chunks:
        for event in splitter.feed(chunk):
            assert isinstance(event, ReceivedFrame | Skipped)
        assert splitter.pending <= 1024
