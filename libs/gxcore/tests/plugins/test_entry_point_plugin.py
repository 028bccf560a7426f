"""A driver in a separate package is found through the ``gxami.drivers`` entry point, gxcore untouched.

The test builds, at run time, what ``pip install acme-meter`` would leave in site-packages:
the package ``acme_meter`` and its ``acme_meter-0.1.dist-info`` (METADATA and
entry_points.txt). A folder on ``sys.path`` is all ``importlib.metadata`` needs to find
it. The collector's call path, ``load_driver(profile.protocol)`` with a profile from an
extra ``ProfileCatalog`` folder, then reads a (fake) ACME meter over TCP through it.
"""

from __future__ import annotations

import asyncio
import importlib
import sys
import textwrap
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from gxcore.drivers import Driver, MeterTarget, ReadRequest, available_drivers, load_driver
from gxcore.drivers.api import ReadOnlyDriver
from gxcore.errors import ConfigurationError, MeterTimeoutError
from gxcore.profiles import ProfileCatalog

ACME_DRIVER = textwrap.dedent(
    '''
    """ACME pulse counters: ask ``READ <register>`` over TCP, get ``<number>`` back."""

    from __future__ import annotations

    import asyncio
    from datetime import UTC, datetime
    from typing import ClassVar

    from gxcore.drivers import MeterTarget, ReadRequest, ReadResult
    from gxcore.errors import ConfigurationError, MediaError, MeterTimeoutError
    from gxcore.profiles.model import DeviceProfile
    from gxcore.readings import Reading


    class AcmeDriver:
        name: ClassVar[str] = "acme"

        def validate_profile(self, profile: DeviceProfile) -> None:
            if profile.protocol != "acme":
                raise ConfigurationError(f"profile {profile.name}: not an acme profile")
            for point in profile.points:
                if not point.source.startswith("reg:") or not point.source[4:].isdigit():
                    raise ConfigurationError(f"point {point.quantity}: source must be reg:<number>")

        async def read(
            self, target: MeterTarget, profile: DeviceProfile, request: ReadRequest, *, timeout: float
        ) -> ReadResult:
            self.validate_profile(profile)
            endpoint = target.endpoint()
            try:
                reader, writer = await asyncio.wait_for(
                    asyncio.open_connection(endpoint.host, endpoint.port), timeout
                )
            except TimeoutError:
                raise MeterTimeoutError("no connection", meter_id=target.meter_id) from None
            except OSError as exc:
                raise MediaError(f"cannot connect: {exc.strerror}", meter_id=target.meter_id) from None
            readings = []
            try:
                for point in profile.points_for(request.purposes):
                    writer.write(f"READ {point.source[4:]}\\n".encode())
                    try:
                        line = await asyncio.wait_for(reader.readline(), timeout)
                    except TimeoutError:
                        raise MeterTimeoutError("no answer", meter_id=target.meter_id) from None
                    value = float(line) * point.scale + point.offset
                    readings.append(Reading(point.quantity, value, point.unit, datetime.now(UTC)))
            finally:
                writer.close()
                await writer.wait_closed()
            return ReadResult(readings=readings)
    '''
)

ACME_PROFILE = textwrap.dedent(
    """
    name: acme-counter
    protocol: acme
    description: ACME pulse counter, two registers
    points:
      - {quantity: "1-0:1.8.0", unit: kWh, source: "reg:1", scale: 0.001}
      - {quantity: "8-0:1.0.0", unit: m3, source: "reg:2", purpose: [diagnostics]}
    """
)


@contextmanager
def installed_acme(root: Path) -> Iterator[Path]:
    """Lay out the acme-meter distribution under ``root`` and put it on sys.path for the block."""
    site = root / "site-packages"
    package = site / "acme_meter"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text('"""ACME meter drivers for gxami."""\n', encoding="utf-8")
    (package / "driver.py").write_text(ACME_DRIVER, encoding="utf-8")
    info = site / "acme_meter-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-meter\nVersion: 0.1\n", encoding="utf-8")
    (info / "entry_points.txt").write_text("[gxami.drivers]\nacme = acme_meter.driver:AcmeDriver\n", encoding="utf-8")
    sys.path.insert(0, str(site))
    importlib.invalidate_caches()
    try:
        yield site
    finally:
        sys.path.remove(str(site))
        for module in [m for m in sys.modules if m == "acme_meter" or m.startswith("acme_meter.")]:
            del sys.modules[module]
        importlib.invalidate_caches()


async def acme_meter(registers: dict[str, str]) -> asyncio.Server:
    """A fake ACME counter on a free localhost port."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while line := await reader.readline():
            register = line.decode().split()[1]
            writer.write(registers[register].encode() + b"\n")
            await writer.drain()
        writer.close()

    return await asyncio.start_server(serve, "127.0.0.1", 0)


async def mute(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """A meter that listens and never answers."""
    await reader.read()
    writer.close()


def test_unknown_before_install_and_after_uninstall(tmp_path: Path) -> None:
    assert "acme" not in available_drivers()
    with installed_acme(tmp_path):
        assert available_drivers()["acme"] == "acme_meter.driver:AcmeDriver"
    assert "acme" not in available_drivers()
    assert str(tmp_path / "site-packages") not in sys.path
    assert "acme_meter" not in sys.modules
    with pytest.raises(ConfigurationError, match="no driver for protocol 'acme'"):
        load_driver("acme")


def test_load_driver_instantiates_the_plugin(tmp_path: Path) -> None:
    with installed_acme(tmp_path):
        driver = load_driver("acme")
        assert isinstance(driver, Driver)
        # A read-only plug-in (no execute/serve) is wrapped, so the collector sees one driver API.
        assert isinstance(driver, ReadOnlyDriver)
        assert type(driver.inner).__module__ == "acme_meter.driver"
        assert driver.name == "acme"
        # The built-in drivers are still there beside it.
        assert {"acme", "dlms", "modbus"} <= set(available_drivers())


async def test_collector_call_path_reads_through_the_plugin(tmp_path: Path) -> None:
    folder = tmp_path / "profiles"
    folder.mkdir()
    (folder / "acme-counter.yaml").write_text(ACME_PROFILE, encoding="utf-8")
    server = await acme_meter({"1": "123456", "2": "42.5"})
    port = server.sockets[0].getsockname()[1]
    try:
        with installed_acme(tmp_path):
            # What the collector does with a read job: profile by name, driver by protocol.
            profile = ProfileCatalog(folder).get("acme-counter")
            driver = load_driver(profile.protocol)
            driver.validate_profile(profile)
            target = MeterTarget("acme-0001", f"tcp://127.0.0.1:{port}")
            request = ReadRequest(purposes=frozenset({"billing", "diagnostics"}))
            result = await driver.read(target, profile, request, timeout=1.0)
            billing = await driver.read(target, profile, ReadRequest(), timeout=1.0)
    finally:
        server.close()
        await server.wait_closed()
    assert [(r.quantity, r.value, r.unit) for r in result.readings] == [
        ("1-0:1.8.0", pytest.approx(123.456), "kWh"),
        ("8-0:1.0.0", 42.5, "m3"),
    ]
    assert [r.quantity for r in billing.readings] == ["1-0:1.8.0"]


async def test_plugin_errors_are_gxcore_errors(tmp_path: Path) -> None:
    folder = tmp_path / "profiles"
    folder.mkdir()
    (folder / "acme-counter.yaml").write_text(ACME_PROFILE.replace("reg:2", "register two"), encoding="utf-8")
    with installed_acme(tmp_path):
        profile = ProfileCatalog(folder).get("acme-counter")
        driver = load_driver("acme")
        with pytest.raises(ConfigurationError, match="reg:<number>"):
            driver.validate_profile(profile)
        silent = await asyncio.start_server(mute, "127.0.0.1", 0)
        try:
            good = ProfileCatalog(folder).get("acme-counter").model_copy(update={"points": profile.points[:1]})
            target = MeterTarget("acme-0002", f"tcp://127.0.0.1:{silent.sockets[0].getsockname()[1]}")
            with pytest.raises(MeterTimeoutError):
                await driver.read(target, good, ReadRequest(), timeout=0.2)
        finally:
            silent.close()
            await silent.wait_closed()
