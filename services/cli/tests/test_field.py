"""`gxami decode`, `gxami read` and `gxami profile`: JSON out, one-line errors, exit codes, no secrets.

The typer apps are mounted here exactly as main.py mounts them. `read` runs in a worker
thread (it calls asyncio.run) while the simulators serve on the test's event loop.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import sys
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import typer
from hypothesis import given
from hypothesis import strategies as st
from typer.testing import CliRunner, Result

from gxami_cli import field
from gxami_meterlab.simulators.dlms import DlmsFleetSimulator, expected_register
from gxami_meterlab.simulators.dsmr import DsmrTcpServer, SimulatedP1Meter
from gxami_meterlab.simulators.iec62056_21 import Iec62056TcpServer, SimulatedIecMeter
from gxami_meterlab.simulators.mbus import MBusBus, MBusTcpGateway, register_value
from gxami_meterlab.simulators.modbus import ModbusMeterSimulator
from gxami_meterlab.simulators.wmbus import WMBusFeedServer, WMBusTelegramGenerator, volume_litres
from gxcore.drivers import available_drivers
from gxcore.profiles import ProfileCatalog, json_schema
from gxcore.protocols.iec62056_21 import encode_data_message

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
app.add_typer(field.decode_app, name="decode")
app.add_typer(field.profile_app, name="profile")
app.command("read")(field.read_command)
runner = CliRunner()

AT = datetime(2024, 3, 5, 14, 7, 30, tzinfo=UTC)
MBUS_AT = datetime(2024, 1, 15, 12, 0, tzinfo=UTC)  # the simulated M-Bus's fixed clock

# rscada/libmbus test/test-frames/oms_frame1.hex: the OMS gas meter example, wired form.
OMS_GAS_WIRED = (
    "68 20 20 68 08 FD 72 78 56 34 12 93 15 33 03 2A 00 00 00 0C 14 27 04 85 02 04 6D 32 37 1F 15 02 FD 17 00 00 89 16"
)
# OMS gas meter example, security mode 5 (lvogt/wireless-mbus-parser test/applicationLayer.test.ts).
OMS_MODE5 = "2E4493157856341233037A2A0020255923C95AAA26D1B2E7493B013EC4A6F6D3529B520EDFF0EA6DEFC99D6D69EBF3"
OMS_MODE5_KEY = "0102030405060708090A0B0C0D0E0F11"
WRONG_KEY = "C0FFEE00112233445566778899AABBCC"
# ndokter/dsmr_parser test/example_telegrams.py TELEGRAM_V5 (Iskra, CRC 6EEE).
TELEGRAM_V5 = (
    b"/ISk5\\2MT382-1000\r\n\r\n1-3:0.2.8(50)\r\n0-0:1.0.0(170102192002W)\r\n"
    b"0-0:96.1.1(4B384547303034303436333935353037)\r\n1-0:1.8.1(000004.426*kWh)\r\n1-0:1.8.2(000002.399*kWh)\r\n"
    b"1-0:2.8.1(000002.444*kWh)\r\n1-0:2.8.2(000000.000*kWh)\r\n0-0:96.14.0(0002)\r\n1-0:1.7.0(00.244*kW)\r\n"
    b"1-0:2.7.0(00.000*kW)\r\n0-0:96.7.21(00013)\r\n0-0:96.7.9(00000)\r\n1-0:99.97.0(0)(0-0:96.7.19)\r\n"
    b"1-0:32.32.0(00000)\r\n1-0:52.32.0(00000)\r\n1-0:72.32.0(00000)\r\n1-0:32.36.0(00000)\r\n1-0:52.36.0(00000)\r\n"
    b"1-0:72.36.0(00000)\r\n0-0:96.13.0()\r\n1-0:32.7.0(0230.0*V)\r\n1-0:52.7.0(0230.0*V)\r\n1-0:72.7.0(0229.0*V)\r\n"
    b"1-0:31.7.0(0.48*A)\r\n1-0:51.7.0(0.44*A)\r\n1-0:71.7.0(0.86*A)\r\n1-0:21.7.0(00.070*kW)\r\n"
    b"1-0:41.7.0(00.032*kW)\r\n1-0:61.7.0(00.142*kW)\r\n1-0:22.7.0(00.000*kW)\r\n1-0:42.7.0(00.000*kW)\r\n"
    b"1-0:62.7.0(00.000*kW)\r\n0-1:24.1.0(003)\r\n0-1:96.1.0(3232323241424344313233343536373839)\r\n"
    b"0-1:24.2.1(170102161005W)(00000.107*m3)\r\n0-2:24.1.0(003)\r\n0-2:96.1.0()\r\n!6EEE\r\n"
)
# pwitab/iec62056-21 tests/test_data.py: a readout data message with its BCC.
IEC_READOUT = b'\x023:14(314*kWh)4:15(415*kWh)\r\n!\r\n\x03"'
GXCORE_DRIVERS = {
    "mbus": "gxcore.drivers.mbus:MBusDriver",
    "wmbus": "gxcore.drivers.wmbus:WMBusDriver",
    "dsmr": "gxcore.drivers.dsmr:DsmrDriver",
    "iec62056-21": "gxcore.drivers.iec62056_21:Iec62056Driver",
}


@pytest.fixture(scope="module", autouse=True)
def field_drivers_registered(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Until gxcore's installed metadata lists the new drivers, register them from a temporary dist-info."""
    missing = {name: value for name, value in GXCORE_DRIVERS.items() if name not in available_drivers()}
    if not missing:
        yield
        return
    site = tmp_path_factory.mktemp("site")
    info = site / "gxcore_field_drivers-0.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: gxcore-field-drivers\nVersion: 0.0\n")
    lines = "".join(f"{name} = {value}\n" for name, value in missing.items())
    (info / "entry_points.txt").write_text("[gxami.drivers]\n" + lines)
    sys.path.insert(0, str(site))
    importlib.invalidate_caches()
    try:
        yield
    finally:
        sys.path.remove(str(site))
        importlib.invalidate_caches()


@pytest.fixture(autouse=True)
async def _simulators_wind_down() -> AsyncIterator[None]:
    """Let simulator connection handlers notice their closed sockets (at most one send interval)."""
    before = set(asyncio.all_tasks())
    yield
    loop = asyncio.get_running_loop()
    until = loop.time() + 2.0
    while loop.time() < until:
        running = [t for t in asyncio.all_tasks() - before if not t.done() and t is not asyncio.current_task()]
        if not running:
            return
        await asyncio.wait(running, timeout=until - loop.time())


def invoke(*args: str, **kwargs: Any) -> Result:
    return runner.invoke(app, list(args), **kwargs)


async def invoke_async(*args: str, **kwargs: Any) -> Result:
    return await asyncio.to_thread(runner.invoke, app, list(args), **kwargs)


def ok_json(result: Result) -> Any:
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


def one_line_error(result: Result, code: int) -> str:
    assert result.exit_code == code, (result.stdout, result.stderr)
    assert result.stdout == ""
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


# -- gxami decode -----------------------------------------------------------------------------


def test_decode_mbus_prints_identity_and_records() -> None:
    document = ok_json(invoke("decode", "mbus", OMS_GAS_WIRED))
    assert (document["id"], document["manufacturer"], document["medium"]) == ("12345678", "ELS", "gas")
    volume = document["records"][0]
    assert volume["quantity"] == "7-0:3.0.0"
    assert volume["value"] == pytest.approx(28504.27)
    assert volume["unit"] == "m³"
    assert {k: volume[k] for k in ("storage", "tariff", "subunit", "function")} == {
        "storage": 0, "tariff": 0, "subunit": 0, "function": "instantaneous",
    }  # fmt: skip
    clock = document["records"][1]
    assert (clock["quantity"], clock["value"]) == ("0-0:1.0.0", "2008-05-31T23:50:00")


def test_decode_mbus_takes_split_words_and_stdin() -> None:
    split = ok_json(invoke("decode", "mbus", *OMS_GAS_WIRED.split()))
    piped = ok_json(invoke("decode", "mbus", "-", input=OMS_GAS_WIRED + "\n"))
    assert split == piped == ok_json(invoke("decode", "mbus", OMS_GAS_WIRED.replace(" ", "")))


@pytest.mark.parametrize(
    ("text", "offset"),
    [("68 1F 1G 68", 2), ("zz", 0), ("6820 20 68 08 FD 72 78 56 34 12 9x", 11)],
)
def test_bad_hex_names_the_byte_offset(text: str, offset: int) -> None:
    line = one_line_error(invoke("decode", "mbus", text), 2)
    assert f"byte offset {offset}" in line


def test_odd_hex_and_undecodable_frames_are_bad_input() -> None:
    assert "byte offset 1 is incomplete" in one_line_error(invoke("decode", "mbus", "681"), 2)
    line = one_line_error(invoke("decode", "mbus", OMS_GAS_WIRED[:-6]), 2)
    assert line.startswith("gxami decode mbus: ")
    changed_checksum = OMS_GAS_WIRED[:-5] + "88 16"
    assert "checksum" in one_line_error(invoke("decode", "mbus", changed_checksum), 2).lower()


# rscada/libmbus test/error-frames/premature_end_of_data1.hex: its last record has no data.
PREMATURE_END = "68 1C 1C 68 08 02 72 78 56 34 12 24 40 01 07 55 00 00 00 03 13 15 31 00 DA 02 3B 13 01 8B 60 04 C7 16"


def test_decode_mbus_is_tolerant_by_default_and_strict_on_request() -> None:
    result = invoke("decode", "mbus", PREMATURE_END)
    document = ok_json(result)
    assert [r["value"] for r in document["records"]] == [12.565, 0.113]
    assert document["unparsed"] == [{"offset": 29, "hex": "8B6004", "reason": document["unparsed"][0]["reason"]}]
    assert "premature end" in document["unparsed"][0]["reason"]
    assert result.stderr.startswith("gxami decode mbus: warning: 3 byte(s) at offset 29 not decoded")
    line = one_line_error(invoke("decode", "mbus", "--strict", PREMATURE_END), 2)
    assert "premature end" in line
    padded = ok_json(invoke("decode", "mbus", OMS_GAS_WIRED + " 00"))  # one byte more than the L field says
    assert padded["records"] == ok_json(invoke("decode", "mbus", OMS_GAS_WIRED))["records"]
    assert padded["unparsed"][0]["hex"] == "00"
    assert "trailing" in one_line_error(invoke("decode", "mbus", "--strict", OMS_GAS_WIRED + " 00"), 2)


def test_decode_mbus_all_records_adds_raw_bytes_errors_and_the_header() -> None:
    plain = ok_json(invoke("decode", "mbus", PREMATURE_END))
    full = ok_json(invoke("decode", "mbus", "--all-records", PREMATURE_END))
    assert "raw" not in plain["records"][0] and "secondary_address" not in plain
    assert full["secondary_address"] == "1234567840240107" and full["ci"] == 0x72
    assert [(r["raw"], r["error"]) for r in full["records"]] == [("153100", None), ("1301", None)]
    assert [{k: v for k, v in r.items() if k not in ("raw", "error")} for r in full["records"]] == plain["records"]


def test_decode_wmbus_with_a_key() -> None:
    document = ok_json(invoke("decode", "wmbus", OMS_MODE5, "--key", OMS_MODE5_KEY))
    assert (document["id"], document["manufacturer"], document["security_mode"]) == ("12345678", "ELS", 5)
    volume = next(r for r in document["records"] if r["quantity"] == "7-0:3.0.0")
    assert volume["value"] == pytest.approx(28504.27)
    assert OMS_MODE5_KEY not in json.dumps(document).upper()


def test_decode_wmbus_key_from_the_environment() -> None:
    result = invoke("decode", "wmbus", OMS_MODE5, "--key-env", "GX_TEST_KEY", env={"GX_TEST_KEY": OMS_MODE5_KEY})
    assert ok_json(result)["records"][0]["quantity"] == "7-0:3.0.0"
    missing = one_line_error(invoke("decode", "wmbus", OMS_MODE5, "--key-env", "GX_NOT_SET_ANYWHERE"), 2)
    assert "GX_NOT_SET_ANYWHERE is not set" in missing


@pytest.mark.parametrize("key", [WRONG_KEY, WRONG_KEY.lower(), " ".join(WRONG_KEY[i : i + 2] for i in range(0, 32, 2))])
def test_a_wrong_wmbus_key_never_appears_in_any_output(key: str) -> None:
    result = invoke("decode", "wmbus", OMS_MODE5, "--key", key)
    line = one_line_error(result, 2)
    assert "gxami decode wmbus:" in line
    for shown in (result.stdout, result.stderr, result.output):
        flat = shown.upper().replace(" ", "")
        assert WRONG_KEY not in flat
        assert WRONG_KEY[:16] not in flat and WRONG_KEY[16:] not in flat


def test_a_malformed_key_is_not_echoed_either() -> None:
    bad = "C0FFEE0011223344556677889ZZZBBCC"
    line = one_line_error(invoke("decode", "wmbus", OMS_MODE5, "--key", bad), 2)
    assert "value not shown" in line
    assert "C0FFEE" not in line
    assert "no key was given" in one_line_error(invoke("decode", "wmbus", OMS_MODE5), 2)


def test_decode_dsmr_from_a_file_and_stdin(tmp_path: Path) -> None:
    path = tmp_path / "p1.txt"
    path.write_bytes(TELEGRAM_V5)
    document = ok_json(invoke("decode", "dsmr", str(path)))
    assert ok_json(invoke("decode", "dsmr", "-", input=TELEGRAM_V5)) == document
    assert (document["manufacturer"], document["version"]) == ("ISk", "50")
    records = {r["quantity"]: r for r in document["records"]}
    assert (records["1-0:1.8.1"]["value"], records["1-0:1.8.1"]["unit"]) == (4.426, "kWh")
    assert records["0-1:24.2.1"]["value"] == pytest.approx(0.107)
    assert records["0-1:24.2.1"]["medium"] == "gas"


def test_decode_dsmr_crc_mismatch_and_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "p1.txt"
    path.write_bytes(TELEGRAM_V5.replace(b"(000004.426*kWh)", b"(000004.427*kWh)"))
    assert "CRC" in one_line_error(invoke("decode", "dsmr", str(path)), 2)
    assert "cannot read" in one_line_error(invoke("decode", "dsmr", str(tmp_path / "nope.txt")), 2)


def test_decode_dsmr_sets_an_odd_line_aside_unless_strict(tmp_path: Path) -> None:
    from gxcore.protocols.dsmr import encode_telegram

    odd = "1-0:99.97.0(231231235959W)(0-0:96.7.19)(231231235959W)(0000000240*s)"
    lines = ["1-3:0.2.8(50)", "0-0:1.0.0(240101120000W)", "1-0:1.8.1*255(000004.426*kWh)", odd]
    path = tmp_path / "odd.txt"
    path.write_bytes(encode_telegram("XMX5TEST", lines))
    result = invoke("decode", "dsmr", str(path))
    document = ok_json(result)
    assert [(r["quantity"], r["value"]) for r in document["records"] if r["kind"] == "register"] == [
        ("1-0:1.8.1", 4.426)
    ]
    assert document["unparsed"][0]["line"] == 6 and document["unparsed"][0]["text"] == odd
    assert "warning: " in result.stderr and "line 6" in result.stderr
    assert "line 6" in one_line_error(invoke("decode", "dsmr", "--strict", str(path)), 2)


def test_decode_iec62056_21_readout(tmp_path: Path) -> None:
    path = tmp_path / "readout.bin"
    path.write_bytes(IEC_READOUT)
    document = ok_json(invoke("decode", "iec62056-21", str(path)))
    assert [(r["quantity"], r["value"], r["unit"]) for r in document["records"]] == [
        ("3:14", 314.0, "kWh"),
        ("4:15", 415.0, "kWh"),
    ]
    generated = encode_data_message(["0.0.0(12345678)", "1.8.0(001234.567*kWh)"])
    document = ok_json(invoke("decode", "iec62056-21", "-", input=generated))
    assert document["id"] == "12345678"
    assert "BCC" in one_line_error(invoke("decode", "iec62056-21", "-", input=generated[:-1] + b"\x00"), 2)


# -- gxami profile -----------------------------------------------------------------------------


def test_profile_schema_and_list() -> None:
    result = invoke("profile", "schema")
    assert result.exit_code == 0
    assert json.loads(result.stdout) == json.loads(json_schema())
    listed = {p["name"]: p for p in ok_json(invoke("profile", "list"))}
    assert set(ProfileCatalog().names()) == set(listed)
    assert listed["dsmr5"]["protocol"] == "dsmr"


def test_profile_validate(tmp_path: Path) -> None:
    good = tmp_path / "heat.yaml"
    good.write_text(
        "name: my-heat\nprotocol: mbus\npoints:\n  - {quantity: '6-0:1.0.0', unit: kWh, source: '6-0:1.0.0'}\n"
    )
    document = ok_json(invoke("profile", "validate", str(good)))
    assert document == {
        "file": str(good), "name": "my-heat", "protocol": "mbus", "points": 1, "driver_checked": True, "valid": True,
    }  # fmt: skip
    bad_source = tmp_path / "bad.yaml"
    bad_source.write_text(good.read_text().replace("source: '6-0:1.0.0'", "source: energy"))
    assert "neither a record quantity" in one_line_error(invoke("profile", "validate", str(bad_source)), 2)
    bad_yaml = tmp_path / "broken.yaml"
    bad_yaml.write_text("name: [unclosed\n")
    assert "not valid YAML" in one_line_error(invoke("profile", "validate", str(bad_yaml)), 2)


# -- gxami read ---------------------------------------------------------------------------------


async def test_read_mbus_heat_meter_with_the_default_profile() -> None:
    bus = MBusBus(seed=7, count=2)
    async with MBusTcpGateway(bus) as gateway:
        result = await invoke_async("read", f"tcp://127.0.0.1:{gateway.port}", "--protocol", "mbus",
                                    "--option", "primary_address=1", "--timeout", "1")  # fmt: skip
    document = ok_json(result)
    assert (document["profile"], document["meter_time"]) == ("generic-mbus-heat", "2024-01-15T12:00:00+00:00")
    readings = {r["quantity"]: r for r in document["readings"]}
    assert readings["6-0:1.0.0"]["value"] == round(register_value(7, 0, MBUS_AT))
    assert readings["6-0:1.0.0"]["unit"] == "kWh"
    assert set(readings) == {"6-0:1.0.0", "6-0:2.0.0"}
    assert datetime.fromisoformat(readings["6-0:1.0.0"]["timestamp"]).tzinfo is not None


async def test_read_iec62056_21_meter() -> None:
    async with Iec62056TcpServer(lambda: SimulatedIecMeter(3, 0), clock=lambda: AT) as server:
        result = await invoke_async("read", f"tcp://127.0.0.1:{server.port}", "-p", "iec62056-21",
                                    "--purpose", "billing", "--purpose", "instantaneous")  # fmt: skip
    readings = {r["quantity"]: r for r in ok_json(result)["readings"]}
    assert readings["1-0:1.8.0"]["value"] == 21785.869  # '1.8.0(0021785.869*kWh)' at AT for seed 3
    assert readings["1-0:1.8.0"]["timestamp"] == AT.isoformat()
    assert "1-0:32.7.0" in readings


async def test_read_dsmr_p1_port() -> None:
    meter = SimulatedP1Meter(3, 0, variant="5.0")
    async with DsmrTcpServer(meter, interval=0.05, clock=lambda: AT) as server:
        result = await invoke_async("read", f"tcp://127.0.0.1:{server.port}", "-p", "dsmr", "--meter-id", "home")
    document = ok_json(result)
    assert document["meter"] == "home"
    readings = {r["quantity"]: r["value"] for r in document["readings"]}
    assert readings["1-0:1.8.0"] == pytest.approx(9525.316 + 12260.554)
    assert readings["7-0:3.0.0"] == pytest.approx(round(meter.gas.energy(datetime(2024, 3, 5, 14, 5, tzinfo=UTC)), 3))


async def test_read_modbus_with_its_default_profile() -> None:
    profile = ProfileCatalog().get("eastron-sdm630")
    async with ModbusMeterSimulator(profile, seed=11, clock=lambda: AT) as sim:
        result = await invoke_async("read", sim.url(), "-p", "modbus", "-o", "unit_id=1")
    readings = {r["quantity"]: r["value"] for r in ok_json(result)["readings"]}
    for point in profile.points_for(frozenset({"billing"})):
        assert readings[point.quantity] == pytest.approx(float(sim.expected(1, point, AT))), point.quantity


async def test_read_modbus_with_an_illegal_address_keeps_the_good_points_and_lists_the_problem(
    tmp_path: Path,
) -> None:
    import yaml

    profile = ProfileCatalog().get("eastron-sdm630")
    document = profile.model_dump(mode="json", exclude_none=True)
    beyond = {"quantity": "1-0:99.7.0", "unit": "", "source": "input:0x0400", "purpose": ["billing"]}
    document["points"] = [*document["points"], {**beyond, "options": {"type": "float32"}}]
    path = tmp_path / "sdm630-plus.yaml"
    path.write_text(yaml.safe_dump(document))
    async with ModbusMeterSimulator(profile, seed=11, clock=lambda: AT) as sim:
        result = await invoke_async("read", sim.url(), "-p", "modbus", "-o", "unit_id=1", "--profile", str(path))
    out = ok_json(result)
    readings = {r["quantity"]: r["value"] for r in out["readings"]}
    for point in profile.points_for(frozenset({"billing"})):
        assert readings[point.quantity] == pytest.approx(float(sim.expected(1, point, AT))), point.quantity
    assert [(p["quantity"], p["source"]) for p in out["problems"]] == [("1-0:99.7.0", "input:0x0400")]
    assert "illegal data address" in out["problems"][0]["reason"]
    warnings = [line for line in result.stderr.splitlines() if line.startswith("gxami read: warning: ")]
    assert len(warnings) == 1 and "1-0:99.7.0 (input:0x0400):" in warnings[0] and "illegal data address" in warnings[0]


async def test_read_dlms_shows_text_registers_and_a_missing_object_as_a_problem(tmp_path: Path) -> None:
    import yaml

    from gxami_meterlab.dlms.image_transfer import DEFAULT_FIRMWARE
    from gxami_meterlab.simulators.dlms import meter_id, serial_number

    points = [
        {"quantity": "1-0:1.8.0", "unit": "kWh", "source": "3/1.0.1.8.0.255", "purpose": ["billing"]},
        {"quantity": "0-0:42.0.0", "unit": "", "source": "1/0.0.42.0.0.255", "purpose": ["billing"]},
        {"quantity": "0-0:96.1.0", "unit": "", "source": "1/0.0.96.1.0.255", "purpose": ["billing"]},
        {"quantity": "1-0:0.2.0", "unit": "", "source": "1/1.0.0.2.0.255", "purpose": ["billing"]},
        {"quantity": "1-0:99.7.0", "unit": "", "source": "1/1.0.99.7.0.255", "purpose": ["billing"]},
    ]
    path = tmp_path / "texts.yaml"
    path.write_text(yaml.safe_dump({"name": "texts-dlms", "protocol": "dlms", "points": points}))
    async with DlmsFleetSimulator(1, seed=2, clock=lambda: AT) as sim:
        url = f"tcp://127.0.0.1:{sim.meters[0].port}"
        result = await invoke_async("read", url, "-p", "dlms", "--profile", str(path))
    out = ok_json(result)
    values = {r["quantity"]: r["value"] for r in out["readings"]}
    assert values["0-0:42.0.0"] == meter_id(2, 0)
    assert values["0-0:96.1.0"] == serial_number(2, 0)
    assert values["1-0:0.2.0"] == DEFAULT_FIRMWARE.decode()
    assert values["1-0:1.8.0"] == pytest.approx(expected_register(2, 0, "1-0:1.8.0", AT) / 1000)
    assert [(p["quantity"], p["reason"]) for p in out["problems"]] == [
        ("1-0:99.7.0", "GET 1/1.0.99.7.0.255/2: meter answered object-undefined")
    ]
    assert "gxami read: warning: 1-0:99.7.0 (1/1.0.99.7.0.255): GET" in result.stderr


async def test_read_dlms_with_a_password_from_the_environment() -> None:
    async with DlmsFleetSimulator(1, seed=2, clock=lambda: AT, authentication="low", password="pw-123456") as sim:
        url = f"tcp://127.0.0.1:{sim.meters[0].port}"
        args = ("read", url, "-p", "dlms", "-o", "authentication=low", "--password-env", "GX_TEST_PW")
        result = await invoke_async(*args, env={"GX_TEST_PW": "pw-123456"})
        denied = await invoke_async(*args, env={"GX_TEST_PW": "not-the-pw"})
    readings = {r["quantity"]: r["value"] for r in ok_json(result)["readings"]}
    assert readings["1-0:1.8.0"] == pytest.approx(expected_register(2, 0, "1-0:1.8.0", AT) / 1000)
    line = one_line_error(denied, 1)
    assert "not-the-pw" not in denied.output and "pw-123456" not in line


async def test_read_dlms_load_profile_over_a_range_and_hints_at_the_framing() -> None:
    async with DlmsFleetSimulator(1, seed=2, clock=lambda: AT) as sim:
        url = f"tcp://127.0.0.1:{sim.meters[0].port}"
        start, end = AT - timedelta(hours=2), AT
        ranged = await invoke_async(
            "read", url, "-p", "dlms", "--from", start.isoformat(), "--to", end.isoformat(), "--purpose", "billing"
        )
        wrong_framing = await invoke_async("read", url, "-p", "dlms", "-o", "interface=hdlc", "--timeout", "0.3")
        unranged = await invoke_async("read", url, "-p", "dlms", "--purpose", "load-profile")
    assert ok_json(unranged)["readings"] == []
    assert "warning: no readings: load-profile points need a range: give --from/--to or --last" in unranged.stderr
    rows = [r for r in ok_json(ranged)["readings"] if r["quantity"] == "1-0:2.8.0"]
    stamps = sorted(datetime.fromisoformat(r["timestamp"]) for r in rows)
    boundaries = [start.replace(minute=15 * (start.minute // 15 + 1), second=0)]
    while boundaries[-1] + timedelta(minutes=15) <= end:
        boundaries.append(boundaries[-1] + timedelta(minutes=15))
    # Every 15-minute row in the range, and the billing reading at the meter's clock beside them.
    assert stamps == [*boundaries, AT]
    line = one_line_error(wrong_framing, 1)
    assert "hint: a meter on TCP may speak the DLMS wrapper: try -o interface=wrapper" in line


async def test_read_wmbus_with_a_key_from_the_environment() -> None:
    generator = WMBusTelegramGenerator(seed=4, count=2)
    meter = generator.meters[0]
    assert meter.key is not None
    async with WMBusFeedServer(generator, start=AT, interval=0.05) as feed:
        url = f"tcp://127.0.0.1:{feed.port}"
        args = ("read", url, "-p", "wmbus", "-o", f"wmbus_id={meter.id}", "--key-env", "GX_TEST_KEY", "--timeout", "2")
        good = await invoke_async(*args, env={"GX_TEST_KEY": meter.key.hex()})
        wrong = await invoke_async(*args, env={"GX_TEST_KEY": WRONG_KEY})
    readings = {r["quantity"]: r["value"] for r in ok_json(good)["readings"]}
    assert readings == {"8-0:1.0.0": pytest.approx(volume_litres(4, 0, AT) / 1000)}
    one_line_error(wrong, 1)
    for shown in (wrong.stdout, wrong.stderr, good.stdout, good.stderr):
        assert WRONG_KEY not in shown.upper() and meter.key.hex().upper() not in shown.upper()


async def test_read_failures_of_the_meter_exit_1(unused_tcp_port: int) -> None:
    refused = await invoke_async("read", f"tcp://127.0.0.1:{unused_tcp_port}", "-p", "dsmr", "--timeout", "0.5")
    assert "connect" in one_line_error(refused, 1)

    async def mute(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()
        writer.close()

    server = await asyncio.start_server(mute, "127.0.0.1", 0)
    try:
        url = f"tcp://127.0.0.1:{server.sockets[0].getsockname()[1]}"
        silent = await invoke_async("read", url, "-p", "dsmr", "--timeout", "0.2")
    finally:
        server.close()
        await server.wait_closed()
    assert "no valid P1 telegram" in one_line_error(silent, 1)


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["read", "ftp://x:1", "-p", "dsmr"], {}, "scheme must be one of"),
        (["read", "tcp://127.0.0.1:1", "-p", "zigbee"], {}, "no default profile"),
        (["read", "tcp://127.0.0.1:1", "-p", "zigbee", "--profile", "dsmr5"], {}, "not 'zigbee'"),
        (["read", "tcp://127.0.0.1:1", "-p", "mbus", "--profile", "dsmr5"], {}, "for protocol 'dsmr'"),
        (["read", "tcp://127.0.0.1:1", "-p", "dsmr", "--profile", "no-such"], {}, "unknown device profile"),
        (["read", "tcp://127.0.0.1:1", "-p", "dsmr", "-o", "novalue"], {}, "not NAME=VALUE"),
        (["read", "tcp://127.0.0.1:1", "-p", "dsmr", "--purpose", "fun"], {}, "unknown purpose"),
        (["read", "tcp://127.0.0.1:1", "-p", "dsmr", "--key-env", "GX_UNSET_VAR_X"], {}, "GX_UNSET_VAR_X is not set"),
        (["read", "tcp://127.0.0.1:1", "-p", "mbus"], {}, "give options primary_address"),
        (["read", "tcp://127.0.0.1:1", "-p", "dsmr", "--key-env", "K"], {"K": "abcd"}, "32 hex digits"),
        (
            ["read", "tcp://127.0.0.1:1", "-p", "modbus", "-o", "unitid=3"],
            {},
            "unknown option unitid for protocol modbus (valid: unit_id)",
        ),
        (["read", "tcp://127.0.0.1:1", "-p", "dlms", "-o", "intreface=hdlc"], {}, "unknown option intreface"),
        (["read", "tcp://127.0.0.1:1", "-p", "dlms", "--last", "2 days"], {}, "not a duration such as 24h"),
        (["read", "tcp://127.0.0.1:1", "-p", "dlms", "--from", "yesterday"], {}, "not an ISO time"),
        (["read", "tcp://127.0.0.1:1", "-p", "dlms", "--to", "2026-01-01"], {}, "--to needs --from or --last"),
        (["read", "tcp://127.0.0.1:1", "-p", "dsmr", "--last", "24h"], {}, "has no load-profile points"),
    ],
)
async def test_bad_read_input_exits_2(args: list[str], env: dict[str, str], message: str) -> None:
    result = await invoke_async(*args, env=env)
    line = one_line_error(result, 2)
    assert message in line
    assert "abcd" not in line


def test_usage_errors_exit_2_without_traceback() -> None:
    result = invoke("read", "tcp://127.0.0.1:1")  # --protocol missing
    assert result.exit_code == 2
    assert "Traceback" not in result.output


@given(st.text(max_size=80))
def test_parse_hex_returns_bytes_or_names_an_offset(text: str) -> None:
    clean = "".join(text.split()).replace(":", "")
    clean = clean[2:] if clean[:2].lower() == "0x" else clean
    if clean and len(clean) % 2 == 0 and all(c in "0123456789abcdefABCDEF" for c in clean):
        assert field.parse_hex(text) == bytes.fromhex(clean)
    else:
        with pytest.raises(field.InputError, match=r"byte offset|empty"):
            field.parse_hex(text)
