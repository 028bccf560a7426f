"""Fleet file parsing: YAML and CSV, exact line numbers, duplicates, secrets refused."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gxami_scheduler.fleet import (
    FleetFileError,
    FleetProblem,
    default_link_id,
    looks_secret,
    parse_fleet,
    parse_interval,
    read_fleet_file,
)
from gxcore.profiles import ProfileCatalog

GOOD_YAML = """\
# a small fleet
meters:
  - meter_id: "0012"
    protocol: dlms
    address: tcp://127.0.0.1:4061
    profile: em-dlms
    group: north
    schedule: 15m
  - meter_id: bus-1
    protocol: modbus
    address: serial:///dev/ttyUSB0?baud=9600
    profile: em-modbus
    schedule: 1h
    options:
      unit: 3
      swap_words: true
    purposes: [billing]
  - meter_id: bus-2
    protocol: modbus
    address: serial:///dev/ttyUSB0?baud=9600
    profile: em-modbus
    schedule: 900
    link_id: custom-link
    enabled: false
"""

GOOD_CSV = """\
meter_id,protocol,address,profile,group,schedule,options,purposes,enabled
m-1,dlms,tcp://10.0.0.5:4059,em-dlms,south,15m,client=16;logical=1,,true
m-2,mbus,serial:///dev/ttyS1?baud=2400,water-mbus,,1h,,billing;load-profile,no

m-3,dlms,udp://10.0.0.6:4059,em-dlms,south,900s,,"billing,diagnostics",
"""


def test_good_yaml(profiles: ProfileCatalog) -> None:
    meters = parse_fleet("fleet.yaml", GOOD_YAML, profiles)
    assert [m.meter_id for m in meters] == ["0012", "bus-1", "bus-2"]
    first, second, third = meters
    assert first.interval_s == 900
    assert first.group == "north"
    assert first.link == "tcp://127.0.0.1:4061"
    assert first.purposes == ["billing", "load-profile"]
    assert first.enabled is True
    assert second.options == {"unit": "3", "swap_words": "true"}
    assert second.purposes == ["billing"]
    assert second.link == "serial:///dev/ttyUSB0"  # the bus, not the baud rate
    assert third.link == "custom-link"
    assert third.interval_s == 900
    assert third.enabled is False


def test_yaml_meter_id_taken_as_written(profiles: ProfileCatalog) -> None:
    text = GOOD_YAML.replace('"0012"', "0012")  # YAML 1.1 would read this as octal 10
    assert parse_fleet("fleet.yaml", text, profiles)[0].meter_id == "0012"


def test_good_csv(profiles: ProfileCatalog) -> None:
    meters = parse_fleet("fleet.csv", GOOD_CSV, profiles)
    assert [m.meter_id for m in meters] == ["m-1", "m-2", "m-3"]
    assert meters[0].options == {"client": "16", "logical": "1"}
    assert meters[0].purposes == ["billing", "load-profile"]
    assert meters[1].group == ""
    assert meters[1].enabled is False
    assert meters[1].link == "serial:///dev/ttyS1"
    assert meters[2].purposes == ["billing", "diagnostics"]
    assert meters[2].enabled is True  # blank cell: the default


def _refused(name: str, text: str, profiles: ProfileCatalog | None = None) -> FleetFileError:
    with pytest.raises(FleetFileError) as info:
        parse_fleet(name, text, profiles)
    return info.value


def test_yaml_bad_rows_name_exact_lines(profiles: ProfileCatalog) -> None:
    text = GOOD_YAML.replace("schedule: 1h", "schedule: 30s").replace(
        "address: serial:///dev/ttyUSB0?baud=9600\n    profile: em-modbus\n    schedule: 900",
        "address: ftp://nowhere\n    profile: em-modbus\n    schedule: 900",
    )
    err = _refused("fleet.yaml", text, profiles)
    assert [(p.line, p.field) for p in err.problems] == [(13, "schedule"), (20, "address")]
    assert "shorter than the minimum of 60 s" in err.problems[0].reason
    assert "scheme must be one of" in err.problems[1].reason
    assert str(err).splitlines()[0].startswith("fleet.yaml:13: schedule: ")
    assert (err.line, err.field) == (13, "schedule")


def test_csv_bad_rows_name_exact_lines(profiles: ProfileCatalog) -> None:
    text = (
        "meter_id,protocol,address,profile,schedule\n"  # line 1
        "a,dlms,tcp://h:1,em-dlms,15m\n"  # line 2
        'b,dlms,"tcp://h:2",em-dlms,"\n15m"\n'  # lines 3-4: a quoted newline in one row
        "c,dlms,tcp://h:3,em-dlms,fortnightly\n"  # line 5
        "d,dlms,tcp://h:4,no-such-profile,15m\n"  # line 6
        "e,dlms,tcp://h:5,em-dlms\n"  # line 7
    )
    err = _refused("fleet.csv", text, profiles)
    assert [(p.line, p.field) for p in err.problems] == [(5, "schedule"), (6, "profile"), (7, "")]
    assert "unknown device profile 'no-such-profile'" in err.problems[1].reason
    assert "has 4 cells, the header has 5" in err.problems[2].reason


def test_csv_header_checked_once() -> None:
    err = _refused("fleet.csv", "meter_id,protocol,adress,profile,schedule\nx,dlms,tcp://h:1,p,15m\n")
    assert [(p.line, p.field) for p in err.problems] == [(1, "adress"), (1, "address")]
    assert "unknown column" in err.problems[0].reason
    assert "required column missing" in err.problems[1].reason


def test_duplicates_name_both_lines() -> None:
    yaml_text = (
        "meters:\n"
        "  - {meter_id: a, protocol: dlms, address: 'tcp://h:1', profile: p, schedule: 15m}\n"
        "  - {meter_id: b, protocol: dlms, address: 'tcp://h:1', profile: p, schedule: 15m}\n"
        "  - {meter_id: a, protocol: dlms, address: 'tcp://h:2', profile: p, schedule: 15m}\n"
    )
    err = _refused("f.yaml", yaml_text)
    assert len(err.problems) == 1
    assert err.line == 4
    assert err.reason == "duplicate meter id 'a' (first at line 2)"

    csv_text = "meter_id,protocol,address,profile,schedule\na,dlms,tcp://h:1,p,1h\nb,dlms,tcp://h:1,p,1h\na,dlms,tcp://h:1,p,1h\n"
    err = _refused("f.csv", csv_text)
    assert (err.line, err.field, err.reason) == (4, "meter_id", "duplicate meter id 'a' (first at line 2)")


@pytest.mark.parametrize("name", ["password", "auth_key", "Authentication_Key", "hls_secret", "ek", "pin", "PSK"])
def test_secret_options_refused(name: str) -> None:
    assert looks_secret(name)
    text = (
        "meters:\n  - meter_id: a\n    protocol: dlms\n    address: tcp://h:1\n    profile: p\n    schedule: 1h\n"
        f"    options:\n      {name}: hunter2\n"
    )
    err = _refused("f.yaml", text)
    assert (err.line, err.field) == (8, "options")
    assert "secret store" in err.reason
    assert "hunter2" not in str(err)


def test_secret_in_csv_options_and_url_userinfo_refused() -> None:
    text = (
        "meter_id,protocol,address,profile,schedule,options\n"
        "a,dlms,tcp://h:1,p,1h,client=1;password=s3cr3t\n"
        "b,dlms,tcp://admin:s3cr3t@h:1,p,1h,\n"
        "c,dlms,serial:///dev/ttyS0?baud=9600&auth_key=s3cr3t,p,1h,\n"
    )
    err = _refused("f.csv", text)
    assert [(p.line, p.field) for p in err.problems] == [(2, "options"), (3, "address"), (4, "address")]
    assert "parameter 'auth_key' is refused" in err.problems[2].reason
    assert "s3cr3t" not in str(err)
    for harmless in ("client", "baud", "keepalive_s", "ping_interval", "authentication", "system_title"):
        assert not looks_secret(harmless)


def test_yaml_structure_errors() -> None:
    assert _refused("f.yaml", "meters:\n  - [1, 2]\n").problems[0].reason == "each meter must be a mapping of fields"
    assert _refused("f.yaml", "").line == 1
    err = _refused("f.yaml", "meters:\n  - meter_id: a\n    meter_id: b\n    protocol: [\n")
    assert "not valid YAML" in err.reason
    err = _refused("f.yaml", "metres:\n  - {}\n")
    assert (err.line, err.field) == (1, "metres")
    err = _refused("f.yaml", "meters:\n  - meter_id: a\n    meter_id: b\n    protocol: dlms\n")
    assert (3, "meter_id", "given twice in one meter (first at line 2)") in [
        (p.line, p.field, p.reason) for p in err.problems
    ]
    assert (2, "address", "Field required") in [(p.line, p.field, p.reason) for p in err.problems]
    err = _refused("f.yaml", "meters:\n  - meter_id: a\n    colour: red\n")
    assert ("colour", "unknown field") in [(p.field, p.reason) for p in err.problems]
    assert _refused("f.txt", "x").reason.startswith("unknown file type")
    err = _refused("f.yaml", "meters:\n  - meter_id: a\x07\n")
    assert (err.line, err.reason) == (2, "not valid YAML: special characters are not allowed (#x0007)")


def test_error_lists_every_problem_but_bounded() -> None:
    rows = "".join(f"m{i},dlms,tcp://h:1,p,10\n" for i in range(80))
    err = _refused("f.csv", "meter_id,protocol,address,profile,schedule\n" + rows)
    assert len(err.problems) == 50
    assert str(err).endswith("stopped after 50 problems")


def test_profile_protocol_must_match(profiles: ProfileCatalog) -> None:
    err = _refused("f.csv", "meter_id,protocol,address,profile,schedule\na,dlms,tcp://h:1,em-modbus,1h\n", profiles)
    assert (err.line, err.field) == (2, "profile")
    assert "is for protocol 'modbus'" in err.reason


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("15m", 900), ("1h", 3600), ("900s", 900), ("900", 900), (900, 900), ("1d", 86400), (" 2 H ", 7200), ("60", 60)],
)
def test_parse_interval(text: object, seconds: int) -> None:
    assert parse_interval(text) == seconds


@pytest.mark.parametrize("text", ["59", "0", "1m30", "-5m", "", "soon", True, 1.5, None, "400d"])
def test_parse_interval_refuses(text: object) -> None:
    with pytest.raises(ValueError):
        parse_interval(text)


def test_default_link_ids() -> None:
    assert default_link_id("tcp://10.0.0.5:4059") == "tcp://10.0.0.5:4059"
    assert default_link_id("tcp://gw:502?unit=3") == "tcp://gw:502"  # meters behind one gateway share it
    assert default_link_id("udp://10.0.0.5:4059") == "udp://10.0.0.5:4059"
    assert default_link_id("serial:///dev/ttyUSB0?baud=9600&parity=E") == "serial:///dev/ttyUSB0"


def test_read_fleet_file(tmp_path: Path, profiles: ProfileCatalog) -> None:
    path = tmp_path / "fleet.csv"
    path.write_text("\ufeff" + GOOD_CSV, encoding="utf-8")  # a BOM, as spreadsheet exports write it
    assert len(read_fleet_file(path, profiles)) == 3
    with pytest.raises(FleetFileError) as missing:
        read_fleet_file(tmp_path / "missing.yaml")
    err = missing.value
    assert err.path.endswith("missing.yaml")
    assert "cannot read the file" in err.reason
    bad = tmp_path / "latin1.csv"
    bad.write_bytes(b"meter_id,protocol,address,profile,schedule\nm\xe9,dlms,tcp://h:1,p,1h\n")
    with pytest.raises(FleetFileError) as latin1:
        read_fleet_file(bad)
    err = latin1.value
    assert (err.line, err.reason) == (2, "not UTF-8 text")


def _parses_or_refuses(name: str, text: str) -> None:
    """The property: a list of distinct meters, or a FleetFileError with located problems; nothing else."""
    problems: list[FleetProblem] = []
    try:
        meters = parse_fleet(name, text)
    except FleetFileError as exc:
        problems = exc.problems
        meters = []
        assert problems, "a refusal names at least one problem"
    assert all(p.line >= 1 for p in problems)
    assert len({m.meter_id for m in meters}) == len(meters)


@given(st.text(max_size=400), st.sampled_from(["f.csv", "f.yaml"]))
def test_any_text_parses_or_is_refused_with_a_fleet_error(text: str, name: str) -> None:
    _parses_or_refuses(name, text)


@given(
    st.lists(
        st.sampled_from(
            [
                "meter_id",
                "protocol",
                "address",
                "profile",
                "schedule",
                ",",
                "\n",
                '"',
                "a",
                "tcp://h:1",
                "15m",
                "dlms",
                "x=y;",
                "- ",
                ": ",
                "meters",
                "{",
                "}",
                "[",
                "]",
            ]
        ),
        max_size=60,
    ),
    st.sampled_from(["f.csv", "f.yaml"]),
)
def test_fleet_like_garbage_parses_or_is_refused(tokens: list[str], name: str) -> None:
    _parses_or_refuses(name, "".join(tokens))
