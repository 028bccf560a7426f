"""EN 13757-3 application layer: published telegrams decoded to their published values."""

from __future__ import annotations

import contextlib
import json
from datetime import UTC, date, datetime
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gxcore.errors import ChecksumError, GxError, ProtocolError
from gxcore.protocols.mbus import decode_mbus_telegram
from gxcore.protocols.mbus.frame import LongFrame, encode_frame
from gxcore.protocols.mbus.records import MBusRecord, parse_records
from gxcore.protocols.mbus.telegram import MBusTelegram, decode_user_data


def h(text: str) -> bytes:
    return bytes.fromhex(text.replace(" ", ""))


def frame(ci: int, data: bytes, address: int = 1) -> bytes:
    return encode_frame(LongFrame(0x08, address, ci, data))


# rscada/libmbus test/test-frames/kamstrup_multical_601.hex (expected: .norm.xml beside it)
KAMSTRUP_601 = h(
    "68 F7 F7 68 08 11 72 17 58 85 06 2D 2C 08 04 04 00 00 00 0C 78 17 58 85 06 04 06 E7 91 00 00 04 14 2C DB"
    "00 00 04 22 D9 03 00 00 04 59 B9 27 00 00 04 5D 08 12 00 00 04 61 B1 15 00 00 04 2D 5B 01 00 00 14 2D C0"
    "01 00 00 04 3B 1F 02 00 00 14 3B 74 02 00 00 84 10 06 00 00 00 00 84 20 06 00 00 00 00 84 40 14 00 00 00"
    "00 84 80 40 14 00 00 00 00 84 C0 40 06 00 00 00 00 04 6D 1A 2F 65 11 44 06 51 82 00 00 44 14 B2 C3 00 00"
    "54 2D 26 02 00 00 54 3B 03 04 00 00 C4 10 06 00 00 00 00 C4 20 06 00 00 00 00 C4 40 14 00 00 00 00 C4 80"
    "40 14 00 00 00 00 C4 C0 40 06 00 00 00 00 42 6C 5F 1C 0F 00 00 00 00 E7 E4 00 00 63 66 00 00 00 00 00 00"
    "00 00 00 00 00 00 00 00 5B C9 A5 02 34 53 00 00 E0 B2 03 00 89 9C 68 00 00 00 00 00 01 00 01 07 07 09 01"
    "03 00 00 00 00 00 98 16"
)
# rscada/libmbus test/test-frames/example_data_01.hex (Aquametro AMTRON, real32 temperatures)
AMTRON = h(
    "68 31 31 68 08 01 72 45 58 57 03 B4 05 34 04 9E 00 27 B6 03 06 F9 34 15 03 15 C6 00 4D 05 2E 00 00 00"
    "00 05 3D 00 00 00 00 05 5B 22 F3 26 42 05 5F C7 DA 0D 42 FA 16"
)
# rscada/libmbus test/test-frames/oms_frame1.hex (the OMS gas meter example, wired form)
OMS_GAS = h(
    "68 20 20 68 08 FD 72 78 56 34 12 93 15 33 03 2A 00 00 00 0C 14 27 04 85 02 04 6D 32 37 1F 15 02 FD 17 00 00 89 16"
)
# rscada/libmbus test/test-frames/abb_delta.hex (DIFE tariff/subunit chains, 0xFF VIF, DIF 0x1F)
ABB_DELTA = h(
    "68 98 98 68 08 01 72 12 34 56 78 42 04 02 02 45 00 00 00 0E 84 00 00 00 00 00 00 00 8E 10 84 00 00 00"
    "00 00 00 00 8E 20 84 00 00 00 00 00 00 00 8E B0 00 84 00 00 00 00 00 00 00 8E 80 10 84 00 00 00 00 00"
    "00 00 8E 80 40 84 00 00 00 00 00 00 00 8E 90 40 84 00 00 00 00 00 00 00 8E A0 40 84 00 00 00 00 00 00"
    "00 8E B0 40 84 00 00 00 00 00 00 00 8E 80 50 84 00 00 00 00 00 00 00 01 FF 93 00 00 0C FF 92 00 00 00"
    "00 01 07 FD 97 00 00 00 00 00 00 00 00 00 01 FF 98 00 00 1F 75 16"
)
# rscada/libmbus test/test-frames/example_plain_text_placement.hex (plain-text VIF after its VIFEs)
PLAIN_TEXT = h("68 19 19 68 08 02 72 78 56 34 12 24 40 01 07 55 00 00 00 03 FC 20 03 43 42 41 15 31 00 7F 16")
# m-bus.com documentation-wired/06-application-layer: variable data example
MBUS_COM = h(
    "68 1F 1F 68 08 02 72 78 56 34 12 24 40 01 07 55 00 00 00 03 13 15 31 00 DA 02 3B 13 01 8B 60 04 37 18 02 18 16"
)
# m-bus.com documentation-wired/06-application-layer: fixed data structure example (CI 0x73)
MBUS_COM_FIXED = h("68 13 13 68 08 05 73 78 56 34 12 0A 00 E9 7E 01 00 00 00 35 01 00 00 3C 16")
# wmbusmeters simulations/simulation_mbus.txt: Landis+Gyr Ultraheat over wired M-Bus, energy in GJ
ULTRAHEAT = h(
    "68F8F86808007200464470A7320404270000000974040970040C0E082303000C14079519000B2D0500000B3B0808000A5B52000A5F"
    "51000A6206004C14061818004C0E490603000C7800464470891071609B102D020100DB102D0201009B103B6009009A105B78009A10"
    "5F74000C22726701003C22000000007C2200000000426C01018C2006000000008C3006000000008C80100600000000CC2006000000"
    "00CC300600000000CC801006000000009A115B64009A115F63009B113B5208009B112D020100BC0122000000008C010E4906030"
    "08C2106000000008C3106000000008C811006000000008C011406181800046D310ACA210F21040010A0C116"
)
VECTORS = [KAMSTRUP_601, AMTRON, OMS_GAS, ABB_DELTA, PLAIN_TEXT, MBUS_COM, MBUS_COM_FIXED, ULTRAHEAT]


def find(telegram: MBusTelegram, description: str, storage: int = 0, **fields: object) -> MBusRecord:
    for record in telegram.records:
        same = record.description == description and record.storage == storage
        if same and all(getattr(record, key) == value for key, value in fields.items()):
            return record
    raise AssertionError(f"no record {description!r} storage {storage} {fields}")


def test_kamstrup_multical_601_matches_libmbus() -> None:
    t = decode_mbus_telegram(KAMSTRUP_601)
    assert (t.id, t.manufacturer, t.version, t.access_number, t.status) == ("06855817", "KAM", 8, 4, 0)
    assert t.medium == "heat (outlet)"
    assert find(t, "Fabrication No").value == 6855817
    energy = find(t, "Energy")
    assert (energy.value, energy.unit, energy.quantity) == (37351000, "Wh", "6-0:1.0.0")
    assert float(find(t, "Volume").value) == pytest.approx(561.08)
    assert find(t, "On time").value == 985
    assert find(t, "On time").unit == "h"
    assert float(find(t, "Flow temperature").value) == pytest.approx(101.69)
    assert float(find(t, "Return temperature").value) == pytest.approx(46.16)
    assert float(find(t, "Temperature difference").value) == pytest.approx(55.53)
    assert find(t, "Power", function="instantaneous").value == 34700
    peak = find(t, "Power", function="maximum")
    assert (peak.value, peak.quantity) == (44800, None)
    assert float(find(t, "Volume flow", function="maximum").value) == pytest.approx(0.628)
    assert find(t, "Energy", tariff=2).quantity == "6-0:1.0.2"
    assert find(t, "Volume", subunit=2).quantity == "6-2:2.0.0"
    assert find(t, "Time point (date & time)").value == datetime(2011, 1, 5, 15, 26)
    assert t.meter_time() == datetime(2011, 1, 5, 15, 26)
    historic = find(t, "Energy", storage=1, tariff=0, subunit=0)
    assert (historic.value, historic.quantity) == (33361000, "6-0:1.0.0*1")
    assert find(t, "Time point (date)", storage=1).value == date(2010, 12, 31)
    manufacturer = t.records[-1]
    assert manufacturer.description == "Manufacturer specific data"
    assert isinstance(manufacturer.value, bytes)
    assert manufacturer.value == h(  # libmbus norm.xml, record 27
        "00 00 00 00 E7 E4 00 00 63 66 00 00 00 00 00 00 00 00 00 00 00 00 00 00 5B C9 A5 02 34 53 00 00 E0 B2"
        "03 00 89 9C 68 00 00 00 00 00 01 00 01 07 07 09 01 03 00 00 00 00 00"
    )


def test_amtron_real32_and_int24_match_libmbus() -> None:
    t = decode_mbus_telegram(AMTRON)
    assert (t.id, t.manufacturer, t.version, t.access_number, t.signature) == ("03575845", "AMT", 0x34, 158, 0xB627)
    assert find(t, "Energy").value == 1389817000
    assert float(find(t, "Volume").value) == pytest.approx(504647)
    assert float(find(t, "Flow temperature").value) == pytest.approx(41.737434, abs=1e-6)
    assert float(find(t, "Return temperature").value) == pytest.approx(35.463650, abs=1e-6)


def test_oms_gas_example() -> None:
    t = decode_mbus_telegram(OMS_GAS)
    assert (t.id, t.manufacturer, t.medium, t.version, t.access_number) == ("12345678", "ELS", "gas", 0x33, 42)
    volume = find(t, "Volume")
    assert (float(volume.value), volume.unit, volume.quantity) == (pytest.approx(28504.27), "m³", "7-0:3.0.0")
    assert find(t, "Time point (date & time)").value == datetime(2008, 5, 31, 23, 50)
    assert find(t, "Error flags").value == 0


def test_abb_delta_dife_chains_and_more_records_follow() -> None:
    t = decode_mbus_telegram(ABB_DELTA)
    assert t.medium == "electricity"
    assert t.more_records_follow
    energies = [(r.tariff, r.subunit, r.quantity) for r in t.records if r.description == "Energy"]
    # libmbus: tariffs 0-4 on device 0, then 0-4 on device 2
    assert energies == [(n, 0, f"1-0:1.8.{n}") for n in range(5)] + [(n, 2, f"1-2:1.8.{n}") for n in range(5)]
    makers = [r.value for r in t.records if r.description == "Manufacturer specific"]
    assert makers == [0, 1000000, 0]
    assert t.records[-1].description == "More records follow"


def test_plain_text_vif_follows_its_vifes() -> None:
    t = decode_mbus_telegram(PLAIN_TEXT)
    record = t.records[0]
    assert (record.value, record.unit, record.quantity) == (12565, "ABC", None)
    assert record.description == "ABC, per second"


def test_mbus_com_example_storage_tariff_subunit() -> None:
    t = decode_mbus_telegram(MBUS_COM)
    assert (t.id, t.manufacturer, t.medium, t.access_number) == ("12345678", "PAD", "water", 0x55)
    volume, flow, energy = t.records
    assert (float(volume.value), volume.quantity) == (pytest.approx(12.565), "8-0:1.0.0")
    assert (float(flow.value), flow.unit, flow.function, flow.storage) == (pytest.approx(0.113), "m³/h", "maximum", 5)
    assert (energy.value, energy.unit, energy.tariff, energy.subunit) == (218370, "Wh", 2, 1)


def test_mbus_com_fixed_structure() -> None:
    t = decode_mbus_telegram(MBUS_COM_FIXED)
    assert (t.id, t.access_number, t.status, t.medium) == ("12345678", 0x0A, 0, "water")
    first, second = t.records
    assert (float(first.value), first.unit) == (pytest.approx(0.001), "m³")  # 1 l, actual
    assert (float(second.value), second.storage) == (pytest.approx(0.135), 1)  # 135 l, historic


def test_ultraheat_energy_in_joule() -> None:
    t = decode_mbus_telegram(ULTRAHEAT)
    energy = find(t, "Energy")
    # wmbusmeters: heat_kwh 8974.444444
    assert energy.unit == "J"
    assert float(energy.value) / 3.6e6 == pytest.approx(8974.444444)
    assert float(find(t, "Volume").value) == pytest.approx(1995.07)
    assert t.meter_time() == datetime(2022, 1, 10, 10, 49)


def test_json_shape_and_readings() -> None:
    t = decode_mbus_telegram(OMS_GAS)
    body = t.to_json_dict()
    assert {"id", "manufacturer", "medium", "records"} <= body.keys()
    first = body["records"][0]
    assert first == {
        "quantity": "7-0:3.0.0",
        "value": pytest.approx(28504.27),
        "unit": "m³",
        "storage": 0,
        "tariff": 0,
        "subunit": 0,
        "function": "instantaneous",
        "description": "Volume",
    }
    assert body["records"][1]["value"] == "2008-05-31T23:50:00"
    readings = t.to_readings(datetime(2024, 1, 1, tzinfo=UTC))
    assert [(r.quantity, r.unit) for r in readings] == [("7-0:3.0.0", "m³")]
    with pytest.raises(ValueError, match="aware"):
        t.to_readings(datetime(2024, 1, 1))


@pytest.mark.parametrize("vector", VECTORS)
def test_every_published_vector_serialises_to_json(vector: bytes) -> None:
    body = decode_mbus_telegram(vector).to_json_dict()
    assert json.loads(json.dumps(body)) == body


# -- codings built by hand ------------------------------------------------------------

HEADER = h("78563412 2C2D 01 07 10 00 0000")  # ID, KAM, version 1, water, access 16


def records(payload: bytes, medium: int = 0x07) -> list[MBusRecord]:
    return parse_records(payload, medium=medium, strict=True)[0]


@pytest.mark.parametrize(
    ("payload", "value"),
    [
        ("0113 85", -123 / 1000),  # int8, signed
        ("0213 FFFF", -0.001),
        ("0313 010000", 0.001),
        ("0613 010000000000", 0.001),
        ("0713 0000000000000080", -(2**63) / 1000),
        ("0913 42", 0.042),  # BCD2
        ("0A13 3412", 1.234),
        ("0B13 563412", 123.456),
        ("0E13 129078563412", 123456789.012),
        ("0C13 785634F1", -1345678 / 1000),  # negative BCD: F in the top digit
        ("0513 0000803F", 0.001),  # real32 1.0
    ],
)
def test_data_field_codings(payload: str, value: float) -> None:
    (record,) = records(h(payload))
    assert float(record.value) == pytest.approx(value)
    assert record.unit == "m³"


def test_non_finite_real_is_flagged() -> None:
    (record,) = records(h("0513 0000C07F"))  # a quiet NaN
    assert record.value is None
    assert record.error == "real value is not finite"


def test_bcd_with_hex_digits_is_flagged_not_guessed() -> None:
    (record,) = records(h("0C13 FFFFFFFF"))
    assert record.value is None
    assert record.error is not None
    assert "BCD" in record.error
    assert record.quantity is None


def test_lvar_text_bcd_and_binary() -> None:
    # wmbusmeters simulation_t1 (Hydrus): customer "A20B410178" as LVAR text, sent reversed
    text, bcd, negative, binary = records(h("0DFD110A38373130313442303241 0D13C2 3412 0D13D1 05 0D13E2 FFFF"))
    assert text.value == "A20B410178"
    assert text.description == "Customer"
    assert float(bcd.value) == pytest.approx(1.234)
    assert float(negative.value) == pytest.approx(-0.005)
    assert binary.value == b"\xff\xff"


def test_dates_g_f_i_and_invalid_dates() -> None:
    date_g, date_f, date_i, invalid = records(h("026C 5F1C  046D 1A2F6511  066D 0510 0F 65 11 00  046D FFFFFFFF"))
    assert date_g.value == date(2010, 12, 31)
    assert date_f.value == datetime(2011, 1, 5, 15, 26)
    assert date_i.value == datetime(2011, 1, 5, 15, 16, 5)
    assert invalid.value is None
    assert invalid.error is not None


def test_fd_fb_tables_and_value_corrections() -> None:
    volts, amps, humidity, corrected, offset, battery = records(
        h("02FD48 FC08  02FD59 E803  02FB1A AE01  0293 77 0A00  0293 7A 0A00  02FD74 DA10"), medium=0x02
    )
    assert (float(volts.value), volts.unit, volts.quantity) == (pytest.approx(230.0), "V", "1-0:12.7.0")
    assert (float(amps.value), amps.unit, amps.quantity) == (pytest.approx(1.0), "A", "1-0:11.7.0")
    assert (float(humidity.value), humidity.unit) == (pytest.approx(43.0), "%")  # wmbusmeters lansenth: 43 %
    assert float(corrected.value) == pytest.approx(0.1)  # 10 l, VIFE 77 multiplies by 10^(7-6)
    assert float(offset.value) == pytest.approx(10 * 1e-3 + 0.1)  # additive 10^(2-3) m³
    assert (battery.value, battery.unit) == (4314, "d")  # wmbusmeters hydrus: 11.81 years


def test_phase_vife_maps_voltage_per_phase() -> None:
    l1, l3 = records(h("02FDC8FC01 FC08  02FDC8FC03 FC08"), medium=0x02)
    assert (l1.quantity, l3.quantity) == ("1-0:32.7.0", "1-0:72.7.0")


def test_export_energy_and_modifiers() -> None:
    export, per_hour, record_error = records(h("0483 3C 10000000  0483 22 10000000  0483 15 10000000"), medium=0x02)
    assert export.quantity == "1-0:2.8.0"
    assert per_hour.quantity is None
    assert "per hour" in per_hour.description
    assert record_error.error == "no data available"
    assert record_error.quantity is None


def test_msb_first_variable_structure() -> None:
    header = h("12345678 2C2D 01 07 10 00 0000")
    t = decode_user_data(0x76, header + h("0413 00000102"))
    assert t.id == "12345678"
    assert t.manufacturer == "KAM"
    assert float(t.records[0].value) == pytest.approx(0.258)


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ("04", "VIF missing"),
        ("0413 0102", "premature end of data"),
        ("84" + "80" * 11 + "13", "more than 10 DIFEs"),
        ("04" + "93" + "80" * 10 + "00 00000000", "more than 10 VIFEs"),
        ("3F", "reserved special DIF"),
        ("0D13 F7", "reserved LVAR"),
        ("04FC 09 41", "plain-text VIF runs past"),
    ],
)
def test_truncated_and_reserved_records_raise(payload: str, message: str) -> None:
    with pytest.raises(ProtocolError, match=message):
        records(h(payload))


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ("04", "VIF missing"),
        ("0413 0102", "premature end of data"),
        ("84" + "80" * 11 + "13", "more than 10 DIFEs"),
        ("3F", "reserved special DIF"),
        ("0D13 F7", "reserved LVAR"),
    ],
)
def test_tolerant_records_keep_what_came_before_and_report_the_rest(payload: str, message: str) -> None:
    good = h("0413 39300000")  # 12.345 m³
    got, more, unparsed = parse_records(good + h(payload), medium=0x07, base_offset=19)
    assert [(r.quantity, r.value) for r in got] == [("8-0:1.0.0", Decimal("12.345"))]
    assert not more
    assert len(unparsed) == 1
    assert unparsed[0].offset == 19 + len(good)
    assert unparsed[0].data == h(payload)
    assert message in unparsed[0].reason


# rscada/libmbus test/error-frames/premature_end_of_data1.hex: the last record (8B 60 04) has no data.
PREMATURE_END = h(
    "68 1C 1C 68 08 02 72 78 56 34 12 24 40 01 07 55 00 00 00 03 13 15 31 00 DA 02 3B 13 01 8B 60 04 C7 16"
)


def test_a_record_cut_short_at_the_end_keeps_the_complete_records() -> None:
    with pytest.raises(ProtocolError, match="premature end"):
        decode_mbus_telegram(PREMATURE_END, strict=True)
    t = decode_mbus_telegram(PREMATURE_END)
    assert t.id == "12345678"
    assert [r.value for r in t.records] == [Decimal("12.565"), Decimal("0.113")]
    assert t.records[1].function == "maximum"
    assert [(u.offset, u.data) for u in t.unparsed] == [(29, h("8B 60 04"))]
    body = t.to_json_dict()
    assert body["unparsed"] == [{"offset": 29, "hex": "8B6004", "reason": t.unparsed[0].reason}]


def test_bytes_after_the_stop_byte_and_fill_after_the_last_record() -> None:
    wired = frame(0x72, HEADER + h("0413 39300000 2F2F2F"))
    t = decode_mbus_telegram(wired + h("00"))  # one byte more than the L field says
    assert [r.value for r in t.records] == [Decimal("12.345")]
    assert [(u.offset, u.data) for u in t.unparsed] == [(len(wired), b"\x00")]
    with pytest.raises(GxError, match="trailing"):
        decode_mbus_telegram(wired + h("00"), strict=True)
    assert decode_mbus_telegram(wired).unparsed == []  # 0x2F fill is no loss: nothing to report
    # Fill that is not 0x2F: the records before it are kept, the fill is reported.
    t = decode_mbus_telegram(frame(0x72, HEADER + h("0413 39300000 00")))
    assert [r.value for r in t.records] == [Decimal("12.345")]
    assert t.unparsed[0].data == b"\x00" and "VIF missing" in t.unparsed[0].reason


def test_a_bad_checksum_is_still_refused_in_tolerant_mode() -> None:
    wired = bytearray(frame(0x72, HEADER + h("0413 39300000")))
    wired[-2] ^= 0xFF
    with pytest.raises(ChecksumError):
        decode_mbus_telegram(bytes(wired) + h("00"))


def test_application_error_and_short_header() -> None:
    with pytest.raises(ProtocolError, match="application busy"):
        decode_mbus_telegram(frame(0x70, b"\x08"))
    with pytest.raises(ProtocolError, match="12 bytes"):
        decode_mbus_telegram(frame(0x72, HEADER[:8]))
    with pytest.raises(ProtocolError, match="unsupported CI"):
        decode_mbus_telegram(frame(0x55, HEADER))


# -- properties -----------------------------------------------------------------------


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=300))
def test_any_bytes_decode_or_raise_a_gxcore_error(data: bytes) -> None:
    with contextlib.suppress(GxError):
        decode_mbus_telegram(data)


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=252))
def test_any_payload_in_a_valid_frame_decodes_or_raises_a_gxcore_error(payload: bytes) -> None:
    try:
        telegram = decode_mbus_telegram(frame(0x72, HEADER + payload))
    except GxError:
        return
    telegram.to_json_dict()


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(VECTORS), st.data())
def test_mutated_published_frames_decode_or_raise_a_gxcore_error(vector: bytes, data: st.DataObject) -> None:
    mutated = bytearray(vector)
    action = data.draw(st.sampled_from(["flip", "truncate", "extend", "flip-refix"]))
    if action in ("flip", "flip-refix"):
        index = data.draw(st.integers(0, len(mutated) - 1))
        mutated[index] ^= data.draw(st.integers(1, 255))
        if action == "flip-refix" and len(mutated) > 6:
            mutated[-2] = sum(mutated[4:-2]) & 0xFF  # keep the checksum right so records get exercised
    elif action == "truncate":
        del mutated[data.draw(st.integers(0, len(mutated) - 1)) :]
    else:
        mutated += data.draw(st.binary(min_size=1, max_size=10))
    with contextlib.suppress(GxError):
        decode_mbus_telegram(bytes(mutated))


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=252), st.booleans())
def test_tolerant_records_are_exactly_what_the_strict_decoder_reads_from_the_bytes_before_the_rest(
    payload: bytes, msb: bool
) -> None:
    # Never a record invented from garbage: every record the tolerant decoder returns is one the
    # strict decoder reads from the bytes before ``unparsed``, and the unparsed bytes are the rest.
    got, more, unparsed = parse_records(payload, medium=0x02, msb_first=msb)
    if not unparsed:
        assert (got, more) == parse_records(payload, medium=0x02, msb_first=msb, strict=True)[:2]
        return
    (rest,) = unparsed
    assert payload[rest.offset :] == rest.data and rest.data
    assert parse_records(payload[: rest.offset], medium=0x02, msb_first=msb, strict=True)[:2] == (got, False)
    with pytest.raises(ProtocolError):
        parse_records(payload, medium=0x02, msb_first=msb, strict=True)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(VECTORS), st.binary(min_size=1, max_size=12))
def test_published_frames_with_bytes_after_them_keep_every_record(vector: bytes, extra: bytes) -> None:
    whole = decode_mbus_telegram(vector)
    padded = decode_mbus_telegram(vector + extra)
    assert padded.records == whole.records
    assert padded.unparsed[-1].data == extra and padded.unparsed[-1].offset == len(vector)
