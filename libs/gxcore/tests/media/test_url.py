"""open_medium / open_listener / medium_settings: URL and keyword parameters, errors naming them."""

from __future__ import annotations

import pytest

from gxcore.errors import ConfigurationError
from gxcore.media import (
    KNOWN_PARAMETERS,
    ListenerSettings,
    RS485Direction,
    SerialPort,
    SerialSettings,
    TcpClient,
    TcpSettings,
    UdpEndpoint,
    UdpSettings,
    medium_settings,
    open_medium,
)


def test_each_scheme_builds_its_settings() -> None:
    assert medium_settings("tcp://10.0.0.5:4059?connect_timeout=2.5") == TcpSettings("10.0.0.5", 4059, 2.5)
    assert medium_settings("udp://[fd00::5]:4059", max_datagrams=8) == UdpSettings("fd00::5", 4059, 8)
    assert medium_settings("listen://:4059?idle_timeout=30") == ListenerSettings("", 4059, idle_timeout=30.0)
    serial = medium_settings("serial:///dev/ttyUSB0?baud=9600&parity=E&stopbits=1&bytesize=8&rs485=1")
    assert serial == SerialSettings("/dev/ttyUSB0", 9600, 8, "E", 1, rs485=RS485Direction())


def test_serial_parameters_in_full() -> None:
    settings = medium_settings(
        "serial:///dev/ttyS1?baud=2400&parity=e&stopbits=2&bytesize=7&inter_frame=0.02&exclusive=no"
        "&rs485=true&rs485_rts_tx=0&rs485_rts_rx=1&rs485_delay_tx=0.001&rs485_delay_rx=0.002&buffer_limit=4096"
    )
    assert settings == SerialSettings(
        "/dev/ttyS1",
        baudrate=2400,
        bytesize=7,
        parity="E",
        stopbits=2,
        inter_frame_timeout=0.02,
        rs485=RS485Direction(False, True, 0.001, 0.002),
        exclusive=False,
        buffer_limit=4096,
    )


def test_keywords_override_the_query_and_mediums_are_unopened() -> None:
    medium = open_medium("serial:///dev/ttyUSB0?baud=9600", baud=2400, parity="E")
    assert isinstance(medium, SerialPort)
    assert medium.settings.baudrate == 2400
    assert not medium.is_open
    assert isinstance(open_medium("tcp://127.0.0.1:1"), TcpClient)
    assert isinstance(open_medium("udp://127.0.0.1:1"), UdpEndpoint)


@pytest.mark.parametrize(
    ("url", "params", "named"),
    [
        ("tcp://127.0.0.1:4059?conect_timeout=1", {}, "'conect_timeout'"),
        ("tcp://127.0.0.1:4059", {"connect_timeout": "soon"}, "'connect_timeout'"),
        ("tcp://127.0.0.1:4059", {"connect_timeout": -1}, "connect_timeout"),
        ("tcp://127.0.0.1:4059", {"buffer_limit": 1.5}, "'buffer_limit'"),
        ("udp://127.0.0.1:4059?max_datagrams=0", {}, "max_datagrams"),
        ("serial:///dev/ttyUSB0?baud=fast", {}, "'baud'"),
        ("serial:///dev/ttyUSB0?baud=0", {}, "baudrate"),
        ("serial:///dev/ttyUSB0?parity=M", {}, "'parity'"),
        ("serial:///dev/ttyUSB0?stopbits=3", {}, "stopbits"),
        ("serial:///dev/ttyUSB0?bytesize=9", {}, "bytesize"),
        ("serial:///dev/ttyUSB0?rs485=maybe", {}, "'rs485'"),
        ("serial:///dev/ttyUSB0?rs485_delay_tx=0.01", {}, "'rs485_delay_tx' needs rs485=1"),
        ("serial:///dev/ttyUSB0?rs485=1&rs485_delay_tx=2", {}, "delay_before_tx"),
        ("serial:///dev/ttyUSB0?inter_frame=0", {}, "inter_frame_timeout"),
        ("serial://dev/ttyUSB0", {}, "takes no host"),
        ("listen://0.0.0.0", {}, "needs a port"),
        ("listen://0.0.0.0:4059?max_connections=-1", {}, "max_connections"),
        ("ftp://meter:21", {}, "scheme"),
        ("tcp://meter", {}, "needs host and port"),
    ],
)
def test_bad_parameters_are_named(url: str, params: dict[str, object], named: str) -> None:
    with pytest.raises(ConfigurationError, match=named.replace("(", r"\(")):
        medium_settings(url, **params)  # type: ignore[arg-type]  # values of every type on purpose


def test_listen_url_is_not_a_medium_and_secrets_stay_out() -> None:
    with pytest.raises(ConfigurationError, match="open_listener"):
        open_medium("listen://0.0.0.0:4059")
    # credentials in a meter URL are refused outright, without being echoed
    for url in ("tcp://operator:s3cret@127.0.0.1:4059", "tcp://operator:s3cret@127.0.0.1:4059?bogus=1"):
        with pytest.raises(ConfigurationError) as caught:
            open_medium(url)
        assert "s3cret" not in str(caught.value)
        assert "secret store" in str(caught.value)


def test_known_parameters_cover_every_scheme() -> None:
    assert set(KNOWN_PARAMETERS) == {"tcp", "udp", "serial", "listen"}
    assert {"baud", "parity", "stopbits", "bytesize", "rs485"} <= KNOWN_PARAMETERS["serial"]
