"""HAN-port pushes: real frames from Norwegian Aidon, Kaifa and Kamstrup meters, recognised without a profile.

The frames are public captures, used as test data (the decoding is ours):

* Kaifa list 1 (HDLC, the ``09 0C`` date-time quirk): roarfred/AmsToMqttBridge,
  ``Samples/Kaifa/readme.md`` ("Sample for Kaifa KFM_001", 2017-09-12).
* Kamstrup list 1 (HDLC, flat OBIS/value pairs, the quirk of its early firmware):
  roarfred/AmsToMqttBridge, ``Samples/Kamstrup/readme.md`` (2017-10-20).
* Aidon list 2 (bare LLC PDU, an array of ``{OBIS, value, {scaler, unit}}``, no date-time):
  toreamun/amshan, ``tests/test_aidon.py`` (``no_list_2``); the same list with a ``09 0C``
  date-time from the meterdecode test data (``u516L2``).

Scalers and units of the bare lists are the vendors' HAN documents' (see gxcore.protocols.dlms.han).
"""

from __future__ import annotations

from contextlib import suppress
from datetime import UTC, datetime
from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from gxcore.errors import GxError
from gxcore.protocols.dlms.han import KAIFA_LISTS, recognise
from gxcore.protocols.dlms.push import DlmsPush, PushColumn, decode_dlms_push
from gxcore.readings import Reading

KAIFA_LIST_1 = bytes.fromhex("7EA027010201105A87E6E7000F40000000090C07E1090C0217122AFF80000002010600000528B80C7E")
KAMSTRUP_LIST_1 = bytes.fromhex(
    "7EA0E32B21139886E6E7000F00000000090C07E10A1405032B1EFF80000002190A0E4B616D73747275705F56303030310906"
    "0101000005FF0A103537303635363732373433383937303209060101600101FF0A1236383431313231424E3234333130313034"
    "30090601010107 00FF06000005BC0906010102 0700FF06000000000906010103 0700FF06000000000906010104 0700FF06"
    "000001CE090601011F0700FF060000023409060101330700FF06000000CA09060101470700FF06000001FF09060101200700"
    "FF1200E809060101340700FF1200E409060101480700FF1200E9A1A57E"
)
AIDON_LIST_2 = bytes.fromhex(
    "e6e7000f4000000000010c"
    "020209060101000281ff0a0b4149444f4e5f5630303031"
    "020209060000600100ff0a1037333539393932383932353837363635"
    "020209060000600107ff0a0436353235"
    "020309060100010700ff060000011802020f00161b"
    "020309060100020700ff060000000002020f00161b"
    "020309060100030700ff060000000002020f00161d"
    "020309060100040700ff060000008002020f00161d"
    "0203090601001f0700ff10000d02020fff1621"
    "020309060100470700ff10000902020fff1621"
    "020309060100200700ff1208e202020fff1623"
    "020309060100340700ff1208fd02020fff1623"
    "020309060100480700ff12090402020fff1623"
)
AIDON_STAMPED = bytes.fromhex(
    "e6e7000f40000000090c07e3020401173416ff003c00010c020209060101000281ff0a0b4149444f4e5f5630303031"
    "020209060000600100ff0a1037333539393932383932353837363635020209060000600107ff0a0436353235"
    "020309060100010700ff06000000ed02020f00161b020309060100020700ff060000000002020f00161b"
    "020309060100030700ff060000000002020f00161d020309060100040700ff060000007f02020f00161d"
    "0203090601001f0700ff10000c02020fff1621020309060100470700ff10000702020fff1621"
    "020309060100200700ff1208ef02020fff1623020309060100340700ff12091302020fff1623"
    "020309060100480700ff12092c02020fff1623"
)
RECEIVED = datetime(2026, 12, 4, 2, 0, tzinfo=UTC)


def _got(push: DlmsPush) -> dict[str, tuple[object, str]]:
    return {r.quantity: (r.value, r.unit) for r in push.readings}


def test_a_real_kaifa_list_1_decodes_as_hdlc_bare_llc_and_bare_apdu() -> None:
    llc = KAIFA_LIST_1[9:-3]  # HDLC header (7E A0 27 01 02 01 10 5A 87) and FCS + flag stripped
    assert llc[:3] == b"\xe6\xe7\x00"
    for data in (KAIFA_LIST_1, llc, llc[3:]):
        push = decode_dlms_push(data)
        # 07E1 09 0C 02 17 12 2A: 2017-09-12 23:18:42, deviation not specified (0x8000)
        assert push.timestamp == datetime(2017, 9, 12, 23, 18, 42, tzinfo=UTC)
        assert push.time_source == "notification" and push.han_list == "kaifa"
        assert push.readings == [Reading("1-0:1.7.0", 1320, "W", push.timestamp, extra={"source": "1.0.1.7.0.255"})]


def test_a_real_kamstrup_list_1_maps_its_flat_pairs_with_the_information_sheet_scalers() -> None:
    push = decode_dlms_push(KAMSTRUP_LIST_1)
    assert push.han_list == "kamstrup Kamstrup_V0001"
    assert push.meter_id == "5706567274389702"  # the GS1 number, 1-1:0.0.5
    assert push.timestamp == datetime(2017, 10, 20, 3, 43, 30, tzinfo=UTC)
    assert _got(push) == {
        "1-1:1.7.0": (1468, "W"),
        "1-1:2.7.0": (0, "W"),
        "1-1:3.7.0": (0, "var"),
        "1-1:4.7.0": (462, "var"),
        "1-1:31.7.0": (Decimal("5.64"), "A"),  # 0.01 A
        "1-1:51.7.0": (Decimal("2.02"), "A"),
        "1-1:71.7.0": (Decimal("5.11"), "A"),
        "1-1:32.7.0": (232, "V"),  # 1 V
        "1-1:52.7.0": (228, "V"),
        "1-1:72.7.0": (233, "V"),
    }


def test_a_real_aidon_list_2_is_self_describing_and_dated_by_its_receiver() -> None:
    push = decode_dlms_push(AIDON_LIST_2, received_at=RECEIVED)
    assert push.han_list == "aidon AIDON_V0001" and push.meter_id == "7359992892587665"
    assert push.timestamp is None and push.time_source == "receive-time"
    assert all(r.ts == RECEIVED and r.extra["time"] == "receive-time" for r in push.readings)
    assert _got(push) == {
        "1-0:1.7.0": (280, "W"),
        "1-0:2.7.0": (0, "W"),
        "1-0:3.7.0": (0, "var"),
        "1-0:4.7.0": (128, "var"),
        "1-0:31.7.0": (Decimal("1.3"), "A"),
        "1-0:71.7.0": (Decimal("0.9"), "A"),
        "1-0:32.7.0": (Decimal("227.4"), "V"),
        "1-0:52.7.0": (Decimal("230.1"), "V"),
        "1-0:72.7.0": (Decimal("230.8"), "V"),
    }
    # Without a receive time there is no time at all: numbers stay raw, nothing is invented.
    assert decode_dlms_push(AIDON_LIST_2).readings == []
    stamped = decode_dlms_push(AIDON_STAMPED)
    # 2019-02-04 23:52:22, deviation +60 (DLMS: UTC = local + deviation)
    assert stamped.timestamp == datetime(2019, 2, 5, 0, 52, 22, tzinfo=UTC)
    assert _got(stamped)["1-0:1.7.0"] == (237, "W")


def _kaifa_list_2(meter: bytes) -> bytes:
    """A Kaifa three-phase list 2 written from the KFM_001 document (13 bare values, strings as octet strings)."""
    body = bytes([0x02, 13, 0x09, 7]) + b"KFM_001" + bytes([0x09, len(meter)]) + meter + b"\x09\x08MA304H3E"
    for value in (1850, 0, 0, 290, 7810, 1200, 950, 2301, 2288, 2310):
        body += b"\x06" + value.to_bytes(4, "big")
    return b"\xe6\xe7\x00\x0f\x40\x00\x00\x00\x00" + body


def test_a_kaifa_list_2_is_mapped_by_its_length_and_the_document_scalers() -> None:
    push = decode_dlms_push(_kaifa_list_2(b"6970631401234567"), received_at=RECEIVED)
    assert push.han_list == "kaifa KFM_001" and push.meter_id == "6970631401234567"
    assert _got(push) == {
        "1-0:1.7.0": (1850, "W"),
        "1-0:2.7.0": (0, "W"),
        "1-0:3.7.0": (0, "var"),
        "1-0:4.7.0": (290, "var"),
        "1-0:31.7.0": (Decimal("7.810"), "A"),  # mA
        "1-0:51.7.0": (Decimal("1.200"), "A"),
        "1-0:71.7.0": (Decimal("0.950"), "A"),
        "1-0:32.7.0": (Decimal("230.1"), "V"),  # 0.1 V
        "1-0:52.7.0": (Decimal("228.8"), "V"),
        "1-0:72.7.0": (Decimal("231.0"), "V"),
    }
    # A profile's columns of the right length win; of another length (a list 3 profile on a
    # list 2 push) the vendor's list for this length is used.
    own = [PushColumn("1.1.0.2.129.255"), PushColumn("0.0.96.1.0.255"), PushColumn("0.0.96.1.7.255")]
    own += [PushColumn(f"1.0.{c}.7.0.255", 0, "kW") for c in range(1, 11)]
    assert _got(decode_dlms_push(_kaifa_list_2(b"X"), columns=own, received_at=RECEIVED))["1-0:1.7.0"] == (1850, "kW")
    longer = [PushColumn(o.obis, o.scaler, o.unit) for o in KAIFA_LISTS[18]]
    got = _got(decode_dlms_push(_kaifa_list_2(b"X"), columns=longer, received_at=RECEIVED))
    assert got["1-0:31.7.0"] == (Decimal("7.810"), "A")


def test_what_is_not_a_han_list_is_not_taken_for_one() -> None:
    assert recognise([b"KFM_001", 1, 2]) is None  # a Kaifa id with a length no list has
    assert recognise(["HELLO", 5]) is None
    assert recognise([-5]) is None  # Kaifa list 1 is one unsigned number
    assert recognise(7) is None


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_any_bytes_after_an_llc_header_or_a_han_list_id_decode_or_raise_a_gxcore_error(data: bytes) -> None:
    heads = (
        b"\xe6\xe7\x00" + data,
        b"\xe6\xe7\x00\x0f\x40\x00\x00\x00\x09\x0c" + data,
        b"\x0f\x40\x00\x00\x00\x00\x02\x0d\x09\x07KFM_001" + data,
        b"\x0f\x00\x00\x00\x00\x00\x02\x19\x0a\x0eKamstrup_V0001" + data,
        b"\x0f\x40\x00\x00\x00\x00\x01\x02\x02\x02\x09\x06\x01\x01\x00\x02\x81\xff\x0a\x0bAIDON_V0001" + data,
    )
    for attempt in heads:
        with suppress(GxError):
            push = decode_dlms_push(attempt, received_at=RECEIVED)
            assert isinstance(push, DlmsPush)
            assert all(r.ts in (RECEIVED, push.timestamp) for r in push.readings)
