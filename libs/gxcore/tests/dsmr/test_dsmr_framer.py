"""The P1 stream framer, the reader's resynchronisation and the decoder's error reports."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from gxami_meterlab.simulators.dsmr import VARIANTS, SimulatedP1Meter
from gxcore.errors import ChecksumError, FramingError, GxError
from gxcore.protocols.dsmr import P1Reader, crc16_arc, decode_dsmr_telegram, encode_telegram, next_telegram

AT = datetime(2024, 3, 31, 0, 45, tzinfo=UTC)

LINES = [
    "1-3:0.2.8(50)",
    "0-0:1.0.0(240101120000W)",
    "0-0:96.1.1(4B384547303034303436333935353037)",
    "1-0:1.8.1(000004.426*kWh)",
    "1-0:99.97.0(1)(0-0:96.7.19)(231231235959W)(0000000240*s)",
    "0-1:24.1.0(003)",
    "0-1:24.2.1(240101115500W)(00012.345*m3)",
]


def telegram(lines: list[str] = LINES, header: str = "XMX5TEST") -> bytes:
    return encode_telegram(header, lines)


def test_crc16_arc_check_value() -> None:
    assert crc16_arc(b"123456789") == 0xBB3D  # the catalogue check value of CRC-16/ARC


def test_framer_skips_noise_and_reports_consumed() -> None:
    raw = telegram()
    buf = b"\x00\xffnoise\r\n" + raw + b"/XMX5"
    consumed, frame = next_telegram(buf)
    assert frame is None
    assert consumed == len(b"\x00\xffnoise\r\n")
    consumed, frame = next_telegram(buf[consumed:])
    assert frame == raw.rstrip(b"\r\n")
    assert consumed == len(raw)  # the CR LF after the CRC is swallowed too


def test_framer_waits_for_crc_digits() -> None:
    raw = telegram()
    bang = raw.index(b"!")
    for cut in range(bang + 1, bang + 5):
        assert next_telegram(raw[:cut]) == (0, None)
    assert next_telegram(raw[: bang + 5])[1] == raw[: bang + 5]


def test_torn_telegram_is_dropped_and_the_next_one_kept() -> None:
    raw = telegram()
    reader = P1Reader()
    got = reader.feed(raw[: len(raw) // 2] + raw)  # a bridge connected mid-telegram, then a whole one
    assert len(got) == 1
    assert reader.rejected == 0
    assert reader.discarded_bytes == len(raw) // 2


@pytest.mark.parametrize("variant", VARIANTS)
def test_byte_by_byte_feeding_matches_one_shot(variant: str) -> None:
    stream = b"".join(SimulatedP1Meter(5, 2, variant=variant).telegram_at(AT.replace(minute=m)) for m in (0, 1, 2))
    reader = P1Reader()
    dribbled = [t for i in range(len(stream)) for t in reader.feed(stream[i : i + 1])]
    whole = P1Reader().feed(stream)
    assert len(whole) == 3
    assert [t.raw for t in dribbled] == [t.raw for t in whole]
    assert reader.buffered == 0


def test_bad_crc_is_reported_and_the_stream_goes_on() -> None:
    good = telegram()
    bad = good.replace(b"000004.426", b"000004.427")
    errors: list[GxError] = []
    reader = P1Reader(on_error=errors.append)
    got = reader.feed(bad + good)
    assert len(got) == 1
    assert reader.rejected == 1
    assert isinstance(errors[0], ChecksumError)
    assert errors[0].offset == bad.index(b"!") + 1


def test_oversized_candidate_is_dropped_and_buffer_stays_bounded() -> None:
    reader = P1Reader(max_telegram_size=512)
    reader.feed(b"/" + b"x" * 2000)
    assert reader.buffered == 0
    assert reader.feed(telegram()) != []
    for _ in range(20):
        reader.feed(b"/" + b"1" * 100)
        assert reader.buffered <= 512


def test_gateway_trailer_after_the_telegram_is_noise() -> None:
    # EasyMeter COM-1 gateways append lines after '!' (ndokter/dsmr_parser TELEGRAM_ESY5Q3DB1024_V304).
    raw = encode_telegram("ESY5Q3DB1024 V3.04", ["1-0:1.8.0*255(00052185.7825309*kWh)"], with_crc=False)
    reader = P1Reader()
    got = reader.feed(raw + b"  25803103\r\n" + b"\xff" * 33 + b"\r\n")
    assert [t.header.manufacturer for t in got] == ["ESY"]
    assert reader.rejected == 0


def test_a_cut_crc_does_not_match_and_strict_wants_four_digits() -> None:
    raw = telegram()
    bang = raw.index(b"!")
    errors: list[GxError] = []
    P1Reader(on_error=errors.append).feed(raw[: bang + 3] + b"\r\n")
    assert isinstance(errors[0], ChecksumError)  # "A6" is read as 0x00A6: not this telegram's CRC
    with pytest.raises(FramingError, match="not 4 hex digits") as info:
        decode_dsmr_telegram(raw[: bang + 3], strict=True)
    assert not isinstance(info.value, ChecksumError)


def test_a_crc_written_without_its_leading_zeros_is_accepted_when_it_matches() -> None:
    # Some meters print the CRC with %X, not %04X: "!3A7" for 0x03A7.
    value = 9  # found by search: this telegram's CRC is 0x0E04
    lines = [*LINES[:3], f"1-0:1.8.1({value:06d}.426*kWh)", f"1-0:1.8.2({value * 37:06d}.100*kWh)"]
    body = encode_telegram("XMX5TEST", lines, with_crc=False).rstrip(b"\r\n")
    crc = crc16_arc(body)
    assert crc == 0x0E04
    short = body + f"{crc:X}".encode() + b"\r\n"
    t = decode_dsmr_telegram(short)
    assert t.crc == crc and t.warnings and "hex digit" in t.warnings[0]
    assert t.find("1-0:1.8.1")[0].value == Decimal(f"{value}.426")
    with pytest.raises(FramingError, match="not 4 hex digits"):
        decode_dsmr_telegram(short, strict=True)


def test_malformed_line_names_line_number_and_offset() -> None:
    raw = telegram([*LINES[:3], "1-0:1.8.1(abc*kWh)", *LINES[4:]])
    tolerant = decode_dsmr_telegram(raw)
    (bad,) = tolerant.unparsed
    assert (bad.line, bad.offset, bad.data) == (6, raw.index(b"1-0:1.8.1(abc"), b"1-0:1.8.1(abc*kWh)")
    assert tolerant.find("1-0:1.8.1") == []
    assert tolerant.find("0-1:24.2.1")[0].value == Decimal("12.345")  # the other lines still decode
    with pytest.raises(FramingError) as info:
        decode_dsmr_telegram(raw, strict=True)
    assert "line 6" in str(info.value)  # header, blank line, three lines, then the bad one
    assert info.value.offset == raw.index(b"1-0:1.8.1(abc")
    assert "kWh" in info.value.reason or info.value.frame is not None


def test_line_without_obis_reference() -> None:
    raw = telegram([*LINES, "hello(1)"])
    with pytest.raises(FramingError, match="line 10: expected an OBIS reference"):
        decode_dsmr_telegram(raw, strict=True)
    t = decode_dsmr_telegram(raw)
    assert [(u.line, u.data) for u in t.unparsed] == [(10, b"hello(1)")]
    assert len(t.records) == len(decode_dsmr_telegram(telegram()).records)


def test_event_log_count_must_match_entries() -> None:
    raw = telegram([*LINES[:4], "1-0:99.97.0(2)(0-0:96.7.19)(231231235959W)(0000000240*s)"])
    with pytest.raises(FramingError, match="announces 2 entries"):
        decode_dsmr_telegram(raw, strict=True)
    assert "announces 2 entries" in decode_dsmr_telegram(raw).unparsed[0].reason


def test_a_history_line_with_a_time_where_the_count_belongs_is_set_aside() -> None:
    # Seen from Sagemcom/Kaifa firmware: the power-failure log starts with a time, not the count.
    odd = "1-0:99.97.0(231231235959W)(0-0:96.7.19)(231231235959W)(0000000240*s)"
    raw = telegram([*LINES[:4], odd, *LINES[5:]])
    t = decode_dsmr_telegram(raw)
    assert [u.line for u in t.unparsed] == [7] and "not a count" in t.unparsed[0].reason
    assert t.find("1-0:1.8.1")[0].value == Decimal("4.426")
    assert t.find("0-1:24.2.1")[0].value == Decimal("12.345")
    document = t.to_json_dict()
    assert document["unparsed"][0]["text"] == odd and document["unparsed"][0]["line"] == 7


def test_dsmr5_without_crc_is_rejected_when_strict_and_read_with_a_warning_otherwise() -> None:
    raw = encode_telegram("XMX5TEST", LINES, with_crc=False)
    with pytest.raises(ChecksumError, match="without a CRC"):
        decode_dsmr_telegram(raw, strict=True)
    t = decode_dsmr_telegram(raw)
    assert t.crc is None and "without a CRC" in t.warnings[0]
    assert len(t.records) == len(decode_dsmr_telegram(telegram()).records)


def test_lines_after_the_end_line_are_ignored_and_reported() -> None:
    # An older meter without a CRC, and a gateway that appends its own lines after '!'.
    raw = encode_telegram("ESY5Q3DB1024 V3.04", ["1-0:1.8.0*255(00052185.7825309*kWh)"], with_crc=False)
    raw += b"  25803103\r\nGW-STATUS OK\r\n"
    t = decode_dsmr_telegram(raw)
    (record,) = t.records
    assert (record.quantity, record.value) == ("1-0:1.8.0", Decimal("52185.7825309"))  # no "*255"
    assert t.unparsed[0].data.startswith(b"  25803103") and "after the '!'" in t.unparsed[0].reason
    with pytest.raises(FramingError, match="after the '!' line"):
        decode_dsmr_telegram(raw, strict=True)


def test_non_ascii_byte_offset() -> None:
    raw = encode_telegram("XMX5TEST", LINES, with_crc=False).replace(b"kWh", b"kW\xe9")
    with pytest.raises(FramingError, match="non-ASCII") as info:
        decode_dsmr_telegram(raw)
    assert raw[info.value.offset or 0] == 0xE9


def test_not_specified_time_is_kept_as_none() -> None:
    # Fluvius writes 632525252525 for "no time" (empty peak months, absent M-Bus captures).
    raw = telegram([*LINES[:3], "0-1:24.1.0(003)", "0-1:24.2.1(632525252525S)(00000.000)"])
    (gas,) = decode_dsmr_telegram(raw).find("0-1:24.2.1")
    assert gas.timestamp is None
    assert gas.extra["time"] == "unspecified"
    assert gas.unit is None


def test_unlisted_line_with_unit_is_a_register_without_unit_is_raw() -> None:
    raw = telegram([*LINES, "1-0:14.7.0(49.98*Hz)", "0-0:96.50.7(ab)(cd)"])
    t = decode_dsmr_telegram(raw)
    (freq,) = t.find("1-0:14.7.0")
    assert (str(freq.value), freq.unit, freq.kind) == ("49.98", "Hz", "register")
    (odd,) = t.find("0-0:96.50.7")
    assert (odd.value, odd.kind) == ("(ab)(cd)", "raw")


def test_peak_history_with_unspecified_occurrence() -> None:
    # Line as Fluvius meters send it for an empty month (yottabytesolutions/meterlogger test data).
    line = (
        "0-0:98.1.0(2)(1-0:1.6.0)(1-0:1.6.0)(230801000000S)(632525252525W)(00.000*kW)"
        "(230901000000S)(230831181500S)(01.862*kW)"
    )
    records = decode_dsmr_telegram(telegram([*LINES[:3], line])).find("0-0:98.1.0")
    assert [r.extra["occurred"] for r in records] == ["unspecified", "2023-08-31T16:15:00+00:00"]
    assert records[0].timestamp == datetime(2023, 7, 31, 22, tzinfo=UTC)
