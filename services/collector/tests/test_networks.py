"""The meter network allow-list: schemes, CIDRs and ports, serial names, host names, IPv6, settings."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import pytest
from prometheus_client import REGISTRY

from gxami_collector.networks import JobRefusedError, MeterNetworks, NetworkRule
from gxami_collector.settings import CollectorSettings
from gxami_runtime.service import load_settings
from gxcore.errors import ConfigurationError


def refused(reason: str) -> float:
    return REGISTRY.get_sample_value("gxami_collector_jobs_refused_total", {"reason": reason}) or 0.0


async def check(policy: MeterNetworks, url: str) -> str | None:
    """None when ``url`` is allowed, else the refusal's message."""
    try:
        await policy.check(url)
    except JobRefusedError as exc:
        kind, message = exc.kind, str(exc)
    else:
        return None
    assert kind == "configuration"
    return message


POLICY = MeterNetworks.of(
    ["tcp", "udp", "serial"],
    ["10.20.0.0/16:4059", "192.0.2.7:4000-4100", "[2001:db8:1::/48]:4059", "fd00:aa::/32"],
    ["/dev/ttyUSB*", "/dev/serial/by-id/*", "/dev/rs485-bus1"],
)


@pytest.mark.parametrize(
    "url",
    [
        "tcp://10.20.3.4:4059",
        "udp://10.20.255.255:4059",
        "tcp://192.0.2.7:4000",
        "tcp://192.0.2.7:4100",
        "tcp://[2001:db8:1::5]:4059",
        "tcp://[fd00:aa::1]:1",  # a rule without ports allows every port
        "tcp://[::ffff:10.20.0.9]:4059",  # IPv4-mapped IPv6 is its IPv4
        "serial:///dev/ttyUSB0?baud=2400",
        "serial:///dev/serial/by-id/usb-FTDI_FT232R-if00-port0",
        "serial:///dev/rs485-bus1",
    ],
)
async def test_allowed_urls_pass(url: str) -> None:
    assert await check(POLICY, url) is None


@pytest.mark.parametrize(
    ("url", "reason", "says"),
    [
        ("file:///etc/passwd", "scheme", "scheme 'file' is not allowed"),
        ("http://10.20.3.4:4059/", "scheme", "scheme 'http'"),
        ("gopher://10.20.3.4:70", "scheme", "scheme 'gopher'"),
        ("listen://10.20.3.4:4059", "scheme", "scheme 'listen'"),  # not in this policy's schemes
        ("tcp://10.21.0.1:4059", "network", "tcp://10.21.0.1:4059 is outside"),
        ("tcp://10.20.3.4:4060", "network", "outside the allowed meter networks"),  # right network, wrong port
        ("tcp://192.0.2.7:4101", "network", "outside"),
        ("tcp://192.0.2.8:4000", "network", "outside"),
        ("udp://127.0.0.1:4059", "network", "outside"),  # loopback is not in this policy
        ("tcp://[2001:db8:2::5]:4059", "network", "tcp://[2001:db8:2::5]:4059"),
        ("tcp://[2001:db8:1::5]:4060", "network", "outside"),
        ("tcp://[::ffff:10.21.0.9]:4059", "network", "outside"),
        ("serial:///dev/ttyS0", "serial-device", "'/dev/ttyS0' is not an allowed serial device"),
        ("serial:///dev/ttyUSB0/../sda", "serial-device", "'/dev/sda'"),  # normalised before matching
        ("serial:///dev/ttyUSB0/x", "serial-device", "not an allowed"),  # * never crosses a /
        ("serial:///dev/watchdog", "serial-device", "not an allowed"),
        ("serial://host/dev/ttyUSB0", "serial-device", "with a host"),
        ("tcp://10.20.3.4", "url", "needs host and port"),
    ],
)
async def test_refused_urls_name_what_was_refused_and_are_counted(url: str, reason: str, says: str) -> None:
    before = refused(reason)
    message = await check(POLICY, url)
    assert message is not None and says in message, message
    assert "allow-list" in message
    assert refused(reason) == before + 1


async def test_credentials_in_a_url_are_never_echoed() -> None:
    message = await check(POLICY, "tcp://admin:hunter2@10.20.3.4:4059")
    assert message is not None and "hunter2" not in message


async def test_every_address_a_name_resolves_to_must_be_allowed() -> None:
    answers = {"inside.meters": ["10.20.0.5", "2001:db8:1::5"], "split.meters": ["10.20.0.5", "198.51.100.9"]}

    async def resolve(host: str, port: int | None) -> list[str]:
        if host not in answers:
            raise OSError("no such name")
        return answers[host]

    policy = MeterNetworks.of(["tcp"], ["10.20.0.0/16", "2001:db8:1::/48"], [], resolve=resolve)
    assert await check(policy, "tcp://inside.meters:4059") is None
    message = await check(policy, "tcp://split.meters:4059")
    assert message is not None and "split.meters resolves to 198.51.100.9" in message
    message = await check(policy, "tcp://nowhere.meters:4059")
    assert message is not None and "does not resolve" in message


async def test_a_name_that_resolves_slowly_is_refused_after_the_timeout() -> None:
    async def slow(host: str, port: int | None) -> list[str]:
        await asyncio.sleep(5)
        return ["10.20.0.5"]

    policy = MeterNetworks.of(["tcp"], ["10.20.0.0/16"], [], resolve_timeout=0.05, resolve=slow)
    before = refused("unresolved")
    message = await check(policy, "tcp://slow.meters:4059")
    assert message is not None and "did not resolve within 0.05 s" in message
    assert refused("unresolved") == before + 1


async def test_the_system_resolver_is_used_for_names() -> None:
    # localhost resolves to loopback addresses only, on every machine.
    assert await check(MeterNetworks.of(), "tcp://localhost:4059") is None
    message = await check(MeterNetworks.of(["tcp"], ["10.0.0.0/8"], []), "tcp://localhost:4059")
    assert message is not None and "localhost resolves to" in message


async def test_the_default_allows_loopback_and_usual_serial_devices_only() -> None:
    default = MeterNetworks.of()
    for url in ("tcp://127.0.0.1:4059", "udp://127.0.0.2:1", "tcp://[::1]:4059", "serial:///dev/ttyUSB3"):
        assert await check(default, url) is None, url
    for url in ("tcp://10.0.0.1:4059", "tcp://8.8.8.8:53", "tcp://[fe80::1%eth0]:4059", "listen://0.0.0.0:4059"):
        assert await check(default, url) is not None, url


async def test_link_local_ipv6_with_a_zone_is_checked_without_the_zone() -> None:
    policy = MeterNetworks.of(["tcp"], ["[fe80::/10]:4059"], [])
    assert await check(policy, "tcp://[fe80::1%eth0]:4059") is None
    message = await check(policy, "tcp://[fe80::1%eth0]:4060")
    assert message is not None and "tcp://[fe80::1%eth0]:4060 is outside" in message


async def test_listen_binds_are_checked_like_addresses() -> None:
    policy = MeterNetworks.of(["listen"], ["0.0.0.0/32:4059"], [])
    assert await check(policy, "listen://0.0.0.0:4059") is None
    assert await check(policy, "listen://:4059") is None  # no host: every interface
    assert await check(policy, "listen://0.0.0.0:4060") is not None


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("10.0.0.0/8", "10.0.0.0/8"),
        ("10.0.0.0/8:4059", "10.0.0.0/8:4059"),
        ("192.0.2.7:4000-4100", "192.0.2.7/32:4000-4100"),
        ("::1", "::1/128"),
        ("2001:db8::/32", "2001:db8::/32"),
        ("[2001:db8::/32]:502", "[2001:db8::/32]:502"),
    ],
)
def test_rules_parse(text: str, shown: str) -> None:
    assert str(NetworkRule.parse(text)) == shown


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("10.0.0.1/8", "host bits set"),
        ("10.0.0.0/33", "not an IP network"),
        ("meters.example", "not an IP network"),
        ("10.0.0.0/8:0", "1..65535"),
        ("10.0.0.0/8:5000-4000", "low end first"),
        ("10.0.0.0/8:http", "not a number"),
        ("[2001:db8::/32", "write an IPv6 network with a port"),
    ],
)
def test_bad_rules_name_the_entry(text: str, says: str) -> None:
    with pytest.raises(ValueError, match=says):
        NetworkRule.parse(text)


def test_settings_take_comma_lists_and_refuse_what_cannot_be_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GXAMI_ALLOWED_NETWORKS", "10.20.0.0/16:4059, [2001:db8::/32]:4059")
    monkeypatch.setenv("GXAMI_ALLOWED_SCHEMES", "tcp")
    monkeypatch.setenv("GXAMI_ALLOWED_SERIAL_DEVICES", "")
    policy = CollectorSettings().meter_networks()
    assert policy.schemes == {"tcp"}
    assert [str(r) for r in policy.networks] == ["10.20.0.0/16:4059", "[2001:db8::/32]:4059"]
    assert policy.serial_devices == ()
    for name, value in (("SCHEMES", "tcp,file"), ("SERIAL_DEVICES", "ttyUSB0"), ("SERIAL_DEVICES", "/dev/../etc/x")):
        monkeypatch.setenv(f"GXAMI_ALLOWED_{name}", value)
        with pytest.raises(ValueError, match=r"cannot be allowed|absolute, normalised"):
            CollectorSettings()
        monkeypatch.delenv(f"GXAMI_ALLOWED_{name}")


def test_a_bad_allow_list_setting_is_one_line_and_exit_2() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "gxami_collector"],
        env={"PATH": "/usr/bin:/bin", "GXAMI_ALLOWED_NETWORKS": "10.0.0.1/8"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert lines == [
        "gxami collector: bad setting GXAMI_ALLOWED_NETWORKS: network '10.0.0.1/8' is not an IP network"
        " in CIDR form (10.0.0.1/8 has host bits set)"
    ], proc.stderr


@pytest.mark.parametrize(
    ("env", "says"),
    [
        ({"GXAMI_ALLOWED_SCHEMES": "tcp,file"}, "GXAMI_ALLOWED_SCHEMES: scheme 'file' cannot be allowed"),
        ({"GXAMI_ALLOWED_SERIAL_DEVICES": "ttyUSB*"}, "GXAMI_ALLOWED_SERIAL_DEVICES: serial device 'ttyUSB*'"),
        ({"GXAMI_RESOLVE_TIMEOUT_S": "0"}, "GXAMI_RESOLVE_TIMEOUT_S: must lie in (0, 60]"),
        ({"GXAMI_CONCURRENCY": "many"}, "GXAMI_CONCURRENCY: Input should be a valid integer"),
    ],
)
def test_every_bad_setting_is_one_line(
    env: dict[str, str], says: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(SystemExit) as exit_:
        load_settings("collector", CollectorSettings)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("gxami collector: bad setting ") and says in err, err


def test_a_refusal_is_a_configuration_error() -> None:
    assert issubclass(JobRefusedError, ConfigurationError)
