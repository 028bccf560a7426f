"""`gxami get dlms|modbus|mbus` and `gxami scan mbus` against the simulators: reads without a profile."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from gxami_cli.main import app
from gxami_meterlab.simulators.dlms import DlmsFleetSimulator, expected_register
from gxami_meterlab.simulators.mbus import MBusBus, MBusTcpGateway, register_value
from gxami_meterlab.simulators.modbus import ModbusMeterSimulator
from gxcore.profiles import ProfileCatalog

runner = CliRunner()
AT = datetime(2024, 3, 5, 14, 7, 30, tzinfo=UTC)


async def invoke(*args: str, **kwargs: Any) -> Result:
    return await asyncio.to_thread(runner.invoke, app, list(args), **kwargs)


def ok_json(result: Result) -> Any:
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


def one_line_error(result: Result, code: int) -> str:
    assert result.exit_code == code, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    return lines[0]


async def test_get_dlms_register_text_and_clock_without_a_profile() -> None:
    async with DlmsFleetSimulator(1, seed=2, clock=lambda: AT) as sim:
        url, device_name = f"tcp://127.0.0.1:{sim.meters[0].port}", sim.meters[0].meter_id
        energy = await invoke("get", "dlms", url, "1-0:1.8.0")
        raw_scaler = await invoke("get", "dlms", url, "1.0.1.8.0.255", "--attribute", "3")
        clock = await invoke("get", "dlms", url, "0-0:1.0.0", "--class", "8")
        name = await invoke("get", "dlms", url, "0-0:42.0.0", "--class", "1")
        missing = await invoke("get", "dlms", url, "1-0:99.99.99", "--timeout", "1")
        misspelt = await invoke("get", "dlms", url, "1-0:1.8.0", "-o", "clinet=1")
    got = ok_json(energy)
    assert (got["obis"], got["unit"]) == ("1-0:1.8.0", "Wh")  # the meter's own unit, scaled by its scaler
    assert got["value"] == pytest.approx(expected_register(2, 0, "1-0:1.8.0", AT))
    scaler, unit_code = ok_json(raw_scaler)["value"]
    assert got["scaler"] == scaler and isinstance(unit_code, int)
    assert ok_json(clock)["value"].startswith("2024-03-05T")
    assert ok_json(name)["value"] == device_name  # the logical device name, as text
    assert "GET 3/1.0.99.99.99.255/2: meter answered object-undefined" in one_line_error(missing, 1)
    assert "unknown option clinet for protocol dlms" in one_line_error(misspelt, 2)


async def test_get_modbus_registers_as_the_profile_would_read_them() -> None:
    profile = ProfileCatalog().get("eastron-sdm630")
    point = next(p for p in profile.points if p.source == "input:0x0048")
    follow = next(p for p in profile.points if p.source == "input:0x004A")
    async with ModbusMeterSimulator(profile, seed=11, clock=lambda: AT) as sim:
        one = await invoke("get", "modbus", sim.url(), "--register", "input:0x48", "--type", "float32")
        two = await invoke("get", "modbus", sim.url(), "--table", "input", "--register", "72", "--count", "4",
                           "--type", "float32", "-o", "unit_id=1")  # fmt: skip
        odd = await invoke("get", "modbus", sim.url(), "--register", "0x48", "--count", "3", "--type", "float32")
    (value,) = ok_json(one)["values"]
    assert value["value"] == pytest.approx(float(sim.expected(1, point, AT)), rel=1e-6)
    both = ok_json(two)["values"]
    assert [v["register"] for v in both] == ["input:0x0048", "input:0x004a"]
    assert both[1]["value"] == pytest.approx(float(sim.expected(1, follow, AT)), rel=1e-6)
    assert "not a multiple of the 2 registers" in one_line_error(odd, 2)


async def test_scan_and_get_mbus_without_a_profile() -> None:
    bus = MBusBus(seed=7, count=3)  # IDs that share digits: the search must split them
    async with MBusTcpGateway(bus) as gateway:
        url = f"tcp://127.0.0.1:{gateway.port}"
        scanned = await invoke("scan", "mbus", url, "--timeout", "0.3")
        first = bus.meters[0]
        read = await invoke("get", "mbus", url, "--address", str(first.secondary), "--timeout", "1")
        by_primary = await invoke("get", "mbus", url, "--address", "1", "--timeout", "1")
    found = ok_json(scanned)
    assert sorted(m["secondary_address"] for m in found["meters"]) == sorted(str(m.secondary) for m in bus.meters)
    assert found["unresolved"] == []
    telegrams = ok_json(read)["telegrams"]
    assert telegrams[0]["id"] == first.secondary.id_digits
    assert ok_json(by_primary)["telegrams"][0]["id"] == first.secondary.id_digits
    values = [r["value"] for t in telegrams for r in t["records"]]
    assert round(register_value(7, 0, datetime(2024, 1, 15, 12, 0, tzinfo=UTC))) * 1000 in values  # Wh
