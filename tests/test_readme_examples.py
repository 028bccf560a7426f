"""The README's example fleet file and secrets file are what the scheduler and the collector accept."""

from __future__ import annotations

import re
from pathlib import Path

from gxami_collector.secret_store import SecretStore
from gxami_scheduler.fleet import parse_fleet
from gxcore.profiles import ProfileCatalog

README = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")


def _yaml_block(first_line: str) -> str:
    (block,) = re.findall(r"```yaml\n(" + re.escape(first_line) + r".*?)```", README, re.S)
    return block


def test_the_real_fleet_example_imports_with_the_built_in_profiles() -> None:
    meters = parse_fleet("README-fleet.yaml", _yaml_block("meters:\n  - meter_id: ELEC-0001"), ProfileCatalog())
    assert [(m.meter_id, m.protocol, m.connection) for m in meters] == [
        ("ELEC-0001", "dlms", "poll"),
        ("HEAT-0042", "mbus", "poll"),
        ("PV-INV-3", "modbus", "poll"),
        ("CELL-7710", "dlms", "push"),
    ]


def test_the_secrets_file_example_loads_and_every_meter_of_it_is_in_the_fleet(tmp_path: Path) -> None:
    path = tmp_path / "secrets.yaml"
    path.write_text(_yaml_block("default: {password:"), encoding="utf-8")
    store = SecretStore.load(path)
    assert set(store.for_meter("ELEC-0001")) == {"password", "key", "auth_key"}
    assert len(store.for_meter("ELEC-0001")["key"].reveal()) == 32  # hex digits, as written
