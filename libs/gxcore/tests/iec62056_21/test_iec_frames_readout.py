"""Known-answer tests for IEC 62056-21 messages, BCC and readouts from published examples."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import pytest

from gxcore.errors import ChecksumError, ConfigurationError, FramingError
from gxcore.protocols.iec62056_21 import (
    bcc,
    decode_iec62056_21_readout,
    encode_data_message,
    encode_option_select,
    encode_request,
    next_data_message,
    next_line,
    parse_data_lines,
    parse_identification,
)
from gxcore.protocols.iec62056_21.frames import find_option_select, find_request


@pytest.mark.parametrize(
    "frame",
    [
        # pwitab/iec62056-21, tests/test_bcc.py: a W2 write command and a P0 password message.
        bytes.fromhex("01573202433030332839313033323430393232333929031b"),
        b"\x01P0\x02(1234567)\x03P",
        # pwitab/iec62056-21, tests/test_data.py: readout and R1 answer messages.
        b'\x023:14(314*kWh)4:15(415*kWh)\r\n!\r\n\x03"',
        b"\x023:171.0(0)\x03\x12",
    ],
)
def test_published_bcc(frame: bytes) -> None:
    assert bcc(frame[1:-1]) == frame[-1]


def test_request_and_option_select_encodings() -> None:
    # pwitab/iec62056-21 tests/test_data.py: "/?45678903!\r\n", "/?!\r\n" and ACK "\x06051\r\n".
    assert encode_request("45678903") == b"/?45678903!\r\n"
    assert encode_request() == b"/?!\r\n"
    assert encode_option_select("5", mode="1") == b"\x06051\r\n"
    assert encode_option_select("6") == b"\x06060\r\n"
    assert find_request(b"\x00\x00/?45678903!\r\n") == (len(b"\x00\x00/?45678903!\r\n"), "45678903")
    assert find_option_select(b"junk\x06051\r\n") == (len(b"junk\x06051\r\n"), ("0", "5", "1"))
    with pytest.raises(ConfigurationError):
        encode_request("no/slashes!")
    with pytest.raises(ConfigurationError):
        encode_option_select("9")


def test_identification_with_enhanced_id() -> None:
    # pwitab/iec62056-21 tests/test_data.py: Elster EK280 "/Els6\\2EK280".
    ident = parse_identification(b"/Els6\\2EK280\r\n")
    assert (ident.manufacturer, ident.baud_char, ident.enhanced, ident.ident) == ("Els", "6", "2", "EK280")
    assert (ident.mode, ident.baud, ident.fast_reaction) == ("C", 19200, True)
    assert ident.encode() == b"/Els6\\2EK280\r\n"


@pytest.mark.parametrize(
    ("line", "mode", "baud"),
    [
        (b"/ISK5ME162-0033", "C", 9600),
        (b"/LGZ4ZMD3104100.B32", "C", 4800),
        (b"/ABCCmodeB", "B", 2400),
        (b"/KAM MC", "A", 300),  # jonkerj/go-iec62056 pkg/samples/kamstrup_mc66.go: a mode A meter
    ],
)
def test_identification_modes(line: bytes, mode: str, baud: int) -> None:
    ident = parse_identification(line)
    assert (ident.mode, ident.baud) == (mode, baud)


@pytest.mark.parametrize("line", [b"", b"/", b"/AB", b"ISK5ME162", b"/IS\x005X", b"/ISK5\xffME"])
def test_bad_identification(line: bytes) -> None:
    with pytest.raises(FramingError):
        parse_identification(line)


def test_pwitab_readout_two_data_sets_on_one_line() -> None:
    readout = decode_iec62056_21_readout(b'\x023:14(314*kWh)4:15(415*kWh)\r\n!\r\n\x03"')
    assert readout.bcc == ord('"')
    assert [(r.quantity, r.value, r.unit) for r in readout.records] == [
        ("3:14", Decimal(314), "kWh"),
        ("4:15", Decimal(415), "kWh"),
    ]


def test_kamstrup_mc66_end_mark_on_the_last_data_line() -> None:
    # jonkerj/go-iec62056 pkg/samples/kamstrup_mc66.go: '!' closes the last line; the published
    # BCC does not match the (anonymised) values, so the lines are checked without their block.
    body = b"0.0(00005077354)\r\n6.8(00433.65*GJ)\r\n6.26(03052.95*m3)\r\n6.31(0109868*h)!\r\n"
    records, meter_time = parse_data_lines(body)
    assert meter_time is None
    assert [(r.quantity, r.value, r.unit) for r in records] == [
        ("0.0", "00005077354", None),  # identifier: text, leading zeros kept
        ("6.8", Decimal("433.65"), "GJ"),
        ("6.26", Decimal("3052.95"), "m3"),
        ("6.31", Decimal(109868), "h"),
    ]


def test_hager_mode_d_lines_without_block() -> None:
    # jonkerj/go-iec62056 pkg/samples/hager_ehz161wa.go (mode D push: no STX, no BCC).
    data = (
        b"/HAG5eHZ010C_EHZ1vA02\r\n"
        b"1-0:0.0.0*255(1095100000067865)\r\n"
        b"1-0:1.8.0*255(000001.2963)\r\n"
        b"1-0:52.7.0*255(228.38*V)\r\n"
        b"1-0:41.7.0*255(+00026*W)\r\n"
        b"1-0:96.50.0*1(07D0)\r\n"
        b"!\r\n"
    )
    readout = decode_iec62056_21_readout(data)
    assert readout.bcc is None
    assert readout.identification is not None
    assert readout.identification.manufacturer == "HAG"
    values = {r.quantity: (r.value, r.unit) for r in readout.records}
    assert values["1-0:0.0.0*255"] == ("1095100000067865", None)
    assert values["1-0:1.8.0*255"] == (Decimal("1.2963"), None)
    assert values["1-0:41.7.0*255"] == (Decimal(26), "W")
    assert values["1-0:96.50.0*1"] == ("07D0", None)


def test_full_mode_c_readout_with_dates_times_and_max_demand() -> None:
    block = encode_data_message(
        [
            "0.0.0(00123456)",
            "0.9.1(013005)",
            "0.9.2(0240115)",
            "1.8.0(0012345.678*kWh)1.8.1(0001.000*kWh)",
            "1.6.0(01.234*kW)(24-01-14 18:45)",
            "F.F(00000000)",
        ]
    )
    cet = timezone(timedelta(hours=1))
    readout = decode_iec62056_21_readout(b"/ISK5ME162-0033\r\n" + block, tz=cet)
    assert readout.meter_time == datetime(2024, 1, 15, 0, 30, 5, tzinfo=UTC)
    (demand,) = readout.find("1.6.0")
    assert (demand.value, demand.unit, demand.timestamp) == (
        Decimal("1.234"),
        "kW",
        datetime(2024, 1, 14, 17, 45, tzinfo=UTC),
    )
    doc = readout.to_json_dict()
    assert (doc["id"], doc["manufacturer"]) == ("00123456", "ISK")
    readings = readout.to_readings(received_at=datetime(2024, 2, 1, tzinfo=UTC))
    assert {r.quantity for r in readings} == {"1.8.0", "1.8.1", "1.6.0"}  # ids, clock, F.F are text
    assert next(r for r in readings if r.quantity == "1.8.0").timestamp == readout.meter_time


def test_further_values_without_address_get_an_index() -> None:
    records, _ = parse_data_lines(b"P.01(1)(2.5*kW)(3)\r\n!\r\n")
    assert [(r.value, r.unit, r.index) for r in records] == [
        (Decimal(1), None, 0),
        (Decimal("2.5"), "kW", 1),
        (Decimal(3), None, 2),
    ]


def test_bcc_mismatch_is_a_checksum_error_at_the_bcc() -> None:
    block = bytearray(encode_data_message(["1.8.0(0012345.678*kWh)"]))
    block[-1] ^= 0x01
    with pytest.raises(ChecksumError) as info:
        decode_iec62056_21_readout(bytes(block))
    assert info.value.offset == len(block) - 1


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"1.8.0(1*kWh)\r\n", "no '!' end line"),
        (b"1.8.0(1*kWh\r\n!\r\n", "line 1: expected"),
        (b"1.8.0(1)\r\n2.8.0(2)(\r\n!\r\n", "line 2: expected"),
        (b"1.8.0(1)\r\n!\r\n1.8.1(2)\r\n", "line 3: data after"),
        (b"1.8.0(\x01)\r\n!\r\n", "line 1: control"),
    ],
)
def test_malformed_readouts(body: bytes, message: str) -> None:
    with pytest.raises(FramingError, match=message):
        parse_data_lines(body)


def test_framers() -> None:
    assert next_line(b"\x00\x00/ISK5ME162\r\nrest") == (len(b"\x00\x00/ISK5ME162\r\n"), b"/ISK5ME162")
    assert next_line(b"junk") == (4, None)
    assert next_line(b"xx/ISK5") == (2, None)
    with pytest.raises(FramingError):
        next_line(b"/" + b"A" * 200)
    block = encode_data_message(["1.8.0(1*kWh)"])
    assert next_data_message(b"\x06050\r\n" + block + b"tail") == (len(b"\x06050\r\n") + len(block), block)
    assert next_data_message(block[:-1]) == (0, None)  # ETX seen, BCC not yet
    with pytest.raises(FramingError):
        next_data_message(b"\x02" + b"1" * 100, max_size=50)
