"""Fleet files name how a meter is reached and the identities a listener matches; the registry keeps
them beside the options, and the ami.fleet entry carries them (never a secret)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from gxami_scheduler.fleet import FleetFileError, parse_fleet
from gxami_scheduler.fleet_feed import fleet_entry
from gxami_scheduler.registry import contact_of, meter_contact, split_options, stored_options

PUSH_YAML = """\
meters:
  - meter_id: p-1
    protocol: dlms
    address: tcp://0.0.0.0:4059
    profile: generic-dlms
    schedule: 15m
    connection: push
    system_title: 4758410100000007
    serial: "0012"
    options: {authentication: high-gmac}
  - meter_id: p-2
    protocol: dlms
    address: tcp://10.0.0.5:4059
    profile: generic-dlms
    schedule: 15m
"""


def test_push_meters_carry_connection_and_identities_and_polled_ones_stay_as_they_were() -> None:
    push, poll = parse_fleet("f.yaml", PUSH_YAML)
    assert (push.connection, push.system_title, push.serial, push.polled) == ("push", "4758410100000007", "0012", False)
    assert (poll.connection, poll.system_title, poll.polled) == ("poll", None, True)
    assert meter_contact(poll) == {}
    raw = stored_options(push.options, push.purposes, meter_contact(push))
    assert split_options(raw) == ({"authentication": "high-gmac"}, ["billing", "load-profile"])
    assert contact_of(raw) == {"connection": "push", "system_title": "4758410100000007", "serial": "0012"}
    assert contact_of(stored_options({}, ["billing"])) == {"connection": "poll"}


def test_a_system_title_is_lower_cased_and_a_push_meter_without_identity_is_refused() -> None:
    text = PUSH_YAML.replace("4758410100000007", "47584101000000AB")
    assert parse_fleet("f.yaml", text)[0].system_title == "47584101000000ab"
    bare = PUSH_YAML.replace("    system_title: 4758410100000007\n", "").replace('    serial: "0012"\n', "")
    with pytest.raises(FleetFileError, match="needs system_title, serial or wmbus_id"):
        parse_fleet("f.yaml", bare)
    with pytest.raises(FleetFileError, match="system_title"):
        parse_fleet("f.yaml", PUSH_YAML.replace("4758410100000007", "4758"))


def test_the_fleet_entry_of_a_registry_row_has_identities_and_no_secret() -> None:
    push = parse_fleet("f.yaml", PUSH_YAML)[0]
    row: dict[str, Any] = {
        "meter_id": push.meter_id,
        "protocol": push.protocol,
        "url": push.address,
        "link_id": push.link,
        "profile": push.profile,
        "meter_group": push.group,
        "interval_s": push.interval_s,
        "options": stored_options(push.options, push.purposes, meter_contact(push)),
        "enabled": True,
        "updated_at": datetime(2026, 11, 26, tzinfo=UTC),
    }
    entry = fleet_entry(row)  # type: ignore[arg-type]  # a mapping stands in for the asyncpg record
    assert entry.identities() == ["4758410100000007", "0012"]
    assert entry.connection == "push"
    assert entry.options == {"authentication": "high-gmac"}
    assert "_contact" not in json.loads(entry.model_dump_json())["options"]
