from __future__ import annotations

import pytest

from gxcore.drivers import available_drivers, load_driver
from gxcore.errors import ConfigurationError, GxError, MeterTimeoutError
from gxcore.media.endpoint import Endpoint
from gxcore.profiles import ProfileCatalog
from gxcore.secrets import Secret


def test_endpoint_parses_the_meter_url_forms() -> None:
    tcp = Endpoint.parse("tcp://10.0.0.5:4059")
    assert (tcp.scheme, tcp.host, tcp.port) == ("tcp", "10.0.0.5", 4059)
    serial = Endpoint.parse("serial:///dev/ttyUSB0?baud=9600&parity=E")
    assert serial.path == "/dev/ttyUSB0"
    assert dict(serial.query) == {"baud": "9600", "parity": "E"}


@pytest.mark.parametrize("url", ["http://x:1", "tcp://host", "tcp://:80", "serial://", "tcp://h:99999"])
def test_bad_urls_are_configuration_errors(url: str) -> None:
    with pytest.raises(ConfigurationError):
        Endpoint.parse(url)


def test_credentials_in_a_url_are_refused_without_echoing_them() -> None:
    with pytest.raises(ConfigurationError) as info:
        Endpoint.parse("tcp://admin:Sup3rSecret@10.0.0.5:4059")
    assert "Sup3rSecret" not in str(info.value)
    assert "admin" not in str(info.value)


def test_secrets_never_print_and_never_pickle() -> None:
    import pickle

    s = Secret("hunter2")
    assert "hunter2" not in repr(s) + str(s) + f"{s}" + repr({"k": s})
    assert s.reveal() == b"hunter2"
    with pytest.raises(TypeError):
        pickle.dumps(s)
    with pytest.raises(ValueError, match="not shown"):
        Secret.from_hex("zz-top-secret")


def test_errors_carry_offset_hexdump_and_meter() -> None:
    err = MeterTimeoutError("no reply within 2 s", offset=3, frame=bytes(range(100)))
    err.meter_id = "M42"
    text = str(err)
    assert text.startswith("meter M42: no reply within 2 s at byte offset 3 [frame: 00 01 02")
    assert "(+36 bytes)" in text
    assert err.kind == "timeout"
    assert isinstance(err, GxError)


def test_installed_drivers_are_found_through_entry_points() -> None:
    assert {"dlms", "modbus", "mbus", "wmbus", "dsmr", "iec62056-21"} <= set(available_drivers())
    assert load_driver("dlms").name == "dlms"
    with pytest.raises(ConfigurationError, match="no driver for protocol 'nope'"):
        load_driver("nope")


def test_every_shipped_profile_validates_with_its_driver() -> None:
    catalog = ProfileCatalog()
    for name in catalog.names():
        profile = catalog.get(name)
        load_driver(profile.protocol).validate_profile(profile)
    assert len(catalog.names()) >= 8
