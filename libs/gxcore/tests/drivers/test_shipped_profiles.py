"""Every shipped profile validates against its driver; the published JSON Schema is current."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest

import gxcore.profiles
from gxcore.drivers import Driver
from gxcore.drivers.dlms.driver import DlmsDriver
from gxcore.drivers.dsmr import DsmrDriver
from gxcore.drivers.iec62056_21 import Iec62056Driver
from gxcore.drivers.mbus import MBusDriver
from gxcore.drivers.modbus import ModbusDriver
from gxcore.drivers.wmbus import WMBusDriver
from gxcore.profiles import ProfileCatalog, json_schema, load_profile

PROFILES = Path(gxcore.profiles.__file__).parent
SCHEMA_FILE = PROFILES / "device-profile.schema.json"
PYPROJECT = Path(__file__).parents[2] / "pyproject.toml"
DRIVERS: dict[str, type[Driver]] = {
    d.name: d for d in (DlmsDriver, ModbusDriver, MBusDriver, WMBusDriver, DsmrDriver, Iec62056Driver)
}
NEW_PROFILES = ["generic-mbus-heat", "generic-mbus-water", "dsmr5", "generic-iec62056-21", "generic-wmbus-water"]


@pytest.mark.parametrize("path", sorted((PROFILES / "data").glob("*.yaml")), ids=lambda p: p.stem)
def test_every_shipped_profile_validates_with_its_driver(path: Path) -> None:
    profile = load_profile(path)
    assert profile.name == path.stem  # the file name is the name fleets refer to
    DRIVERS[profile.protocol]().validate_profile(profile)


def test_the_field_profiles_are_in_the_catalog() -> None:
    names = ProfileCatalog().names()
    assert set(NEW_PROFILES) <= set(names)


def test_published_json_schema_equals_the_model() -> None:
    # Regenerate with: python -c "from gxcore.profiles import json_schema; print(json_schema())" > <file>
    assert SCHEMA_FILE.read_text(encoding="utf-8") == json_schema() + "\n"
    schema = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))
    assert schema["title"] == "DeviceProfile"
    assert "points" in schema["required"]


def test_profile_files_point_editors_at_the_schema() -> None:
    for name in NEW_PROFILES:
        first = (PROFILES / "data" / f"{name}.yaml").read_text(encoding="utf-8").splitlines()[0]
        assert first == "# yaml-language-server: $schema=../device-profile.schema.json"


def test_gxcore_registers_every_driver_under_its_protocol_name() -> None:
    declared = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))["project"]["entry-points"]["gxami.drivers"]
    for name, driver in DRIVERS.items():
        assert declared.get(name) == f"{driver.__module__}:{driver.__qualname__}", name
