"""Decoders keep the contract: only GxError subclasses leave the push, date-time and COSEM read paths.

Random bytes rarely reach the deep decoders (an empty APDU in a well-formed frame, a date-time
whose deviation carries it past year 9999, a reply that gurux parses fine but whose values are
out of range), so these properties build the frames and values on purpose and let only the
hostile part vary.
"""

from __future__ import annotations

import asyncio
import struct
from contextlib import suppress
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gxcore.errors import GxError, ProtocolError
from gxcore.protocols.dlms import ciphering, hdlc, wrapper
from gxcore.protocols.dlms.cosem_reads import CosemReads
from gxcore.protocols.dlms.cosem_time import decode_datetime
from gxcore.protocols.dlms.parameters import CosemValue, DlmsParameters, ProfileEntries, ProfileRange
from gxcore.protocols.dlms.profile import CaptureObject, decode_rows, parse_capture_objects
from gxcore.protocols.dlms.push import DlmsPush, decode_dlms_push
from gxcore.protocols.dlms.session import DlmsClientCore
from gxcore.secrets import Secret

KEY = Secret(bytes(range(16)))
AUTH_KEY = Secret(bytes(range(16, 32)))
TITLE = b"KFM\x01\x02\x03\x04\x05"
EMPTY_WRAPPER_PUSH = bytes.fromhex("0001000100660000")
# The header date-time of the defect report: 9999-12-31 23:59:59 local, deviation +543 min.
LATE_DATETIME = bytes.fromhex("0c270f0c1f01173b3b00021ff8")


def hdlc_frame(info: bytes, *, control: int = 0x13, segmented: bool = False) -> bytes:
    """A well-formed HDLC frame (dest 0x03, source 0x21) with valid HCS/FCS around ``info``."""
    header_len = 2 + 1 + 1 + 1
    length = header_len + (2 + len(info) if info else 0) + 2
    fmt = bytes([0xA0 | (0x08 if segmented else 0) | (length >> 8) & 0x07, length & 0xFF])
    head = fmt + b"\x03\x21" + bytes([control])
    body = head + (hdlc.fcs16(head).to_bytes(2, "little") + info if info else b"")
    return b"\x7e" + body + hdlc.fcs16(body).to_bytes(2, "little") + b"\x7e"


def must_decode_or_raise(data: bytes, key: Secret | None = None, auth_key: Secret | None = None) -> None:
    with suppress(GxError):
        assert isinstance(decode_dlms_push(data, key=key, auth_key=auth_key), DlmsPush)


# -- the defects as reported ----------------------------------------------------------------


def test_a_wrapper_push_with_an_empty_apdu_is_a_protocol_error() -> None:
    with pytest.raises(ProtocolError, match="empty APDU"):
        decode_dlms_push(EMPTY_WRAPPER_PUSH)


def test_an_hdlc_push_without_an_information_field_is_a_protocol_error() -> None:
    frame = hdlc_frame(b"")
    assert hdlc.decode(frame)[1] is not None  # a valid frame, just empty
    with pytest.raises(ProtocolError, match="empty APDU"):
        decode_dlms_push(frame)
    with pytest.raises(ProtocolError, match="empty APDU"):
        decode_dlms_push(hdlc_frame(b"\xe6\xe7\x00"))  # the LLC header and nothing after it


def test_a_push_date_time_past_year_9999_is_a_protocol_error() -> None:
    apdu = b"\x0f\x00\x00\x00\x01" + LATE_DATETIME + b"\x00"
    with pytest.raises(ProtocolError, match="outside years"):
        decode_dlms_push(wrapper.encode(1, 102, apdu))
    with pytest.raises(ProtocolError, match="outside years"):
        decode_datetime(LATE_DATETIME[1:])
    # The earliest instant pulled before year 1 the same way.
    with pytest.raises(ProtocolError, match="outside years"):
        decode_datetime(bytes.fromhex("0001 01 01 ff 00 00 00 00 fd30 00".replace(" ", "")))


def test_capture_objects_out_of_their_blue_book_ranges_are_refused() -> None:
    ln = bytes([0, 0, 1, 0, 0, 255])
    for bad in ([8, ln, 2, 70_000], [8, ln, 200, 0], [-1, ln, 2, 0], [1 << 20, ln, 2, 0]):
        with pytest.raises(ProtocolError, match="out of range"):
            parse_capture_objects([bad])


def test_a_capture_period_of_centuries_is_a_protocol_error() -> None:
    columns = (CaptureObject(8, "0.0.1.0.0.255", 2), CaptureObject(3, "1.0.1.8.0.255", 2))
    first = bytes.fromhex("270f0c1f05173b0000800000")
    with pytest.raises(ProtocolError, match="capture period"):
        decode_rows([[first, 1], [None, 2]], columns, 2**32 - 1)


# -- the push path, framed and ciphered -------------------------------------------------------

# Date-times biased to the edges: the ends of the calendar, unspecified fields, wildcards.
YEARS = st.one_of(st.sampled_from([0, 1, 2, 1970, 2024, 9998, 9999, 0xFFFE, 0xFFFF]), st.integers(0, 0xFFFF))
BYTE_EDGES = st.one_of(
    st.sampled_from([0, 1, 12, 13, 23, 24, 28, 29, 30, 31, 59, 60, 99, 0xFD, 0xFE, 0xFF]), st.integers(0, 255)
)
DEVIATIONS = st.one_of(st.sampled_from([-0x8000, -721, -720, -1, 0, 1, 720, 721, 0x7FFF]), st.integers(-0x8000, 0x7FFF))


@st.composite
def cosem_datetimes(draw: st.DrawFn) -> bytes:
    if draw(st.integers(0, 3)) == 0:
        # The first or last day of the calendar, a deviation of either sign: UTC may fall off it.
        year, month, day, hour = draw(st.sampled_from([(9999, 12, 31, 23), (1, 1, 1, 0)]))
        fields = [year, month, day, 0xFF, hour, draw(st.integers(0, 59)), 0, 0, draw(DEVIATIONS), 0]
    else:
        fields = [draw(YEARS)] + [draw(BYTE_EDGES) for _ in range(7)] + [draw(DEVIATIONS), draw(BYTE_EDGES)]
    return struct.pack(">HBBBBBBBhB", *fields)


def _length(n: int) -> bytes:
    return ciphering.encode_length(n)


# A-XDR values as bytes: every type the notification decoder and gurux know, nested a little.
SCALAR_BYTES = st.one_of(
    st.just(b"\x00"),
    st.integers(0, 255).map(lambda v: b"\x03" + bytes([v])),
    st.integers(-(2**31), 2**31 - 1).map(lambda v: b"\x05" + struct.pack(">i", v)),
    st.integers(0, 2**32 - 1).map(lambda v: b"\x06" + struct.pack(">I", v)),
    st.integers(-128, 127).map(lambda v: b"\x0f" + struct.pack(">b", v)),
    st.integers(0, 65535).map(lambda v: b"\x12" + struct.pack(">H", v)),
    st.integers(0, 2**64 - 1).map(lambda v: b"\x15" + struct.pack(">Q", v)),
    st.integers(0, 255).map(lambda v: b"\x16" + bytes([v])),
    st.floats(width=64).map(lambda v: b"\x18" + struct.pack(">d", v)),
    st.binary(max_size=16).map(lambda v: b"\x09" + _length(len(v)) + v),
    cosem_datetimes().map(lambda v: b"\x09\x0c" + v),
    st.sampled_from([bytes([0, 0, 1, 0, 0, 255]), bytes([1, 0, 1, 8, 0, 255]), bytes([0, 0, 96, 1, 0, 255])]).map(
        lambda v: b"\x09\x06" + v
    ),
    st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=8).map(
        lambda v: b"\x0a" + _length(len(v)) + v.encode()
    ),
)
AXDR_BYTES = st.recursive(
    SCALAR_BYTES,
    lambda inner: st.lists(inner, max_size=4).map(lambda items: b"\x02" + _length(len(items)) + b"".join(items)),
    max_leaves=10,
)


@st.composite
def notifications(draw: st.DrawFn) -> bytes:
    """A data-notification APDU: the header right, the date-time and the body hostile, or cut anywhere."""
    stamp = draw(st.one_of(st.just(b"\x00"), cosem_datetimes().map(lambda v: b"\x0c" + v)))
    apdu = b"\x0f" + struct.pack(">I", draw(st.integers(0, 2**32 - 1))) + stamp + draw(AXDR_BYTES)
    cut = draw(st.one_of(st.none(), st.integers(0, len(apdu))))
    return apdu if cut is None else apdu[:cut]


APDUS = st.one_of(notifications(), st.binary(max_size=40))


@given(APDUS)
def test_any_apdu_in_a_wrapper_frame_decodes_or_raises_a_gxcore_error(apdu: bytes) -> None:
    must_decode_or_raise(wrapper.encode(1, 102, apdu))


@given(APDUS, st.booleans(), st.booleans())
def test_any_apdu_in_an_hdlc_frame_decodes_or_raises_a_gxcore_error(apdu: bytes, llc: bool, segmented: bool) -> None:
    info = (b"\xe6\xe7\x00" if llc else b"") + apdu
    must_decode_or_raise(hdlc_frame(info, segmented=segmented))


POLICIES = st.sampled_from(
    [ciphering.ENCRYPTED, ciphering.AUTHENTICATED, ciphering.AUTHENTICATED | ciphering.ENCRYPTED]
)


@given(
    APDUS,
    POLICIES,
    st.integers(0, 2**32 - 1),
    st.sampled_from([ciphering.GENERAL_GLO_CIPHERING, ciphering.GENERAL_DED_CIPHERING]),
)
def test_any_ciphered_apdu_with_the_right_key_decodes_or_raises_a_gxcore_error(
    plain: bytes, policy: int, counter: int, tag: int
) -> None:
    """Past the tag check: the plaintext is hostile, the ciphering is right, so the deep decoder runs."""
    apdu = ciphering.protect_apdu(tag, policy, TITLE, counter, KEY.reveal(), AUTH_KEY.reveal(), plain)
    for frame in (apdu, wrapper.encode(1, 102, apdu), hdlc_frame(b"\xe6\xe7\x00" + apdu)):
        must_decode_or_raise(frame, key=KEY, auth_key=AUTH_KEY)


# -- the date-time path ----------------------------------------------------------------------


@given(cosem_datetimes(), st.booleans())
def test_any_cosem_date_time_decodes_to_aware_utc_or_raises_a_protocol_error(raw: bytes, utc: bool) -> None:
    try:
        at = decode_datetime(raw, unspecified_deviation_is_utc=utc)
    except ProtocolError:
        return
    assert at.tzinfo is UTC


# -- register and profile reads through the client core --------------------------------------


def get_reply(axdr: bytes) -> object:
    """The value the client core makes of a GET-response-normal carrying ``axdr`` (gurux parses it)."""
    core = DlmsClientCore(DlmsParameters())
    core.associated = True
    exchange = core.get(3, "1.0.1.8.0.255", 2)
    exchange.data_to_send()
    exchange.receive_data(wrapper.encode(1, 16, b"\xc4\x01\xc1\x00" + axdr), 0.0)
    return exchange.value()


class RepliesFromBytes(CosemReads):
    """A meter whose every attribute answers with A-XDR bytes drawn by Hypothesis, parsed by the real core."""

    def __init__(self, answers: dict[int, bytes], fallback: bytes) -> None:
        super().__init__()
        self.answers = answers
        self.fallback = fallback

    async def get(self, class_id: int, obis: str, attribute: int, selection: bytes | None = None) -> object:
        return get_reply(self.answers.get(attribute, self.fallback))


def _structure(*items: bytes) -> bytes:
    return b"\x02" + _length(len(items)) + b"".join(items)


U16 = st.one_of(st.sampled_from([0, 1, 2, 8, 65535]), st.integers(0, 65535))


@st.composite
def capture_objects(draw: st.DrawFn) -> bytes:
    """A capture-objects array: a clock column (mostly) and register columns, their numbers hostile."""
    columns = [
        _structure(
            b"\x12\x00\x08",
            b"\x09\x06" + bytes([0, 0, 1, 0, 0, 255]),
            b"\x0f\x02",
            b"\x12" + struct.pack(">H", draw(U16)),
        )
    ]
    for _ in range(draw(st.integers(0, 3))):
        columns.append(
            _structure(
                b"\x12" + struct.pack(">H", draw(st.sampled_from([1, 3, 4, 8]))),
                b"\x09\x06" + bytes([1, 0, draw(st.sampled_from([1, 2, 96])), 8, 0, 255]),
                b"\x0f" + struct.pack(">b", draw(st.integers(-128, 127))),
                b"\x12" + struct.pack(">H", draw(U16)),
            )
        )
    if draw(st.booleans()):
        columns.append(draw(AXDR_BYTES))
    return b"\x01" + _length(len(columns)) + b"".join(columns)


@st.composite
def profile_buffers(draw: st.DrawFn) -> bytes:
    """Rows of a clock and a few values; times hostile date-times, null-data or empty."""
    times = st.one_of(cosem_datetimes().map(lambda v: b"\x09\x0c" + v), st.just(b"\x00"), st.just(b"\x09\x00"))
    rows = [_structure(draw(times), *draw(st.lists(SCALAR_BYTES, max_size=3))) for _ in range(draw(st.integers(0, 4)))]
    return b"\x01" + _length(len(rows)) + b"".join(rows)


U32_OR_WIDER = st.one_of(
    st.integers(0, 2**32 - 1).map(lambda v: b"\x06" + struct.pack(">I", v)),
    st.integers(0, 2**64 - 1).map(lambda v: b"\x15" + struct.pack(">Q", v)),
    st.integers(-(2**63), 2**63 - 1).map(lambda v: b"\x14" + struct.pack(">q", v)),
)
SCALER_UNITS = st.one_of(
    st.tuples(st.integers(-128, 127), st.integers(0, 255)).map(
        lambda su: _structure(b"\x0f" + struct.pack(">b", su[0]), b"\x16" + bytes([su[1]]))
    ),
    st.integers(-(2**63), 2**63 - 1).map(lambda v: _structure(b"\x14" + struct.pack(">q", v), b"\x16\x1e")),
    AXDR_BYTES,
)
WINDOW = (datetime(1, 1, 1, tzinfo=UTC), datetime(9999, 12, 31, tzinfo=UTC))


@given(SCALAR_BYTES, SCALER_UNITS, st.one_of(SCALAR_BYTES, cosem_datetimes().map(lambda v: b"\x09\x0c" + v)))
def test_any_register_reply_gives_a_value_or_a_gxcore_error(value: bytes, scaler_unit: bytes, extra: bytes) -> None:
    for class_id in (1, 3, 4, 5):
        meter = RepliesFromBytes({2: value, 3: scaler_unit}, extra)
        with suppress(GxError):
            asyncio.run(meter.read_register(CosemValue("1.0.1.8.0.255", class_id)))


@given(capture_objects(), profile_buffers(), U32_OR_WIDER, SCALER_UNITS, st.integers(1, 5))
def test_any_profile_reply_gives_readings_or_a_gxcore_error(
    columns: bytes, buffer: bytes, number: bytes, scaler_unit: bytes, newest: int
) -> None:
    meter = RepliesFromBytes({3: columns, 2: buffer, 4: number, 7: number}, scaler_unit)
    with suppress(GxError):
        asyncio.run(meter.read_profile(ProfileRange("1.0.99.1.0.255", *WINDOW)))
    with suppress(GxError):
        asyncio.run(meter.read_profile_entries(ProfileEntries("1.0.99.1.0.255", newest=newest)))


def test_the_read_paths_reject_what_used_to_escape() -> None:
    """The cases the properties found, pinned: each raised a non-gxcore exception before."""
    clock = _structure(b"\x12\x00\x08", b"\x09\x06" + bytes([0, 0, 1, 0, 0, 255]), b"\x0f\x02", b"\x12\x00\x00")
    value = _structure(b"\x12\x00\x03", b"\x09\x06" + bytes([1, 0, 1, 8, 0, 255]), b"\x0f\x02", b"\x12\x00\x00")
    columns = b"\x01\x02" + clock + value
    # entries_in_use beyond double-long-unsigned: the entry selection could not be encoded.
    meter = RepliesFromBytes({3: columns, 7: b"\x15" + struct.pack(">Q", 2**40)}, b"\x00")
    with pytest.raises(ProtocolError, match="entries_in_use"):
        asyncio.run(meter.read_profile_entries(ProfileEntries("1.0.99.1.0.255", newest=2)))
    # A clock column whose data index is not a long-unsigned: the range selection could not be encoded.
    wide = _structure(b"\x12\x00\x08", b"\x09\x06" + bytes([0, 0, 1, 0, 0, 255]), b"\x0f\x02", b"\x06\x00\x01\x00\x00")
    meter = RepliesFromBytes({3: b"\x01\x01" + wide}, b"\x00")
    with pytest.raises(ProtocolError, match="out of range"):
        asyncio.run(meter.read_profile(ProfileRange("1.0.99.1.0.255", *WINDOW)))
    # A clock read whose deviation carries it past 9999.
    scaler_unit = _structure(b"\x0f\x00", b"\x16\x1e")
    meter = RepliesFromBytes({2: b"\x06\x00\x00\x00\x01", 3: scaler_unit, 4: b"\x11\x00"}, b"\x09" + LATE_DATETIME)
    with pytest.raises(ProtocolError, match="outside years"):
        asyncio.run(meter.read_register(CosemValue("1.0.1.6.0.255", 4)))


def test_a_null_data_buffer_is_no_rows_and_anything_else_not_an_array_is_refused() -> None:
    # Meters (and gurux's server) answer null-data for a selection with no entry, e.g. a range
    # shorter than one capture period: no rows, not a failed profile read.
    assert decode_rows(None, (), 900) == []
    with pytest.raises(ProtocolError, match="not an array: int 7"):
        decode_rows(7, (), 900)
