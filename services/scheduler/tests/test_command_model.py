"""Command requests checked for form, their idempotency hash, what each protocol supports, the state table."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from gxami_contracts import CommandKind
from gxami_scheduler.command_model import (
    FINAL,
    TRANSITIONS,
    CommandError,
    MeterState,
    parse_request,
    summary_state,
    support_problem,
    transition_allowed,
)
from gxcore.profiles import DeviceProfile

NOW = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
DLMS = DeviceProfile.model_validate(
    {
        "name": "em",
        "protocol": "dlms",
        "points": [
            {"quantity": "1-0:1.8.0", "unit": "kWh", "source": "3/1-0:1.8.0.255"},
            {
                "quantity": "0-0:96.3.10",
                "unit": "",
                "source": "1/0-0:96.3.10.255",
                "options": {"writable": True},
            },
        ],
    }
)
MODBUS = DeviceProfile.model_validate(
    {
        "name": "mb",
        "protocol": "modbus",
        "points": [
            {"quantity": "1-0:1.8.0", "unit": "kWh", "source": "input:0"},
            {"quantity": "0-0:96.3.10", "unit": "", "source": "holding:100"},
        ],
    }
)


def _req(**fields: Any) -> dict[str, Any]:
    return {"command_id": "c-1", "kind": "disconnect", "meter": "e1", **fields}


@pytest.mark.parametrize(
    ("body", "status", "says"),
    [
        ({"kind": "disconnect", "meter": "e1"}, 400, "command_id is required"),
        (_req(command_id="has space"), 400, "command_id"),
        (_req(command_id="x" * 65), 400, "command_id"),
        (_req(kind="explode"), 400, "kind must be one of"),
        (_req(meter=None), 400, "exactly one of meter, meters"),
        (_req(meters=["e2"]), 400, "exactly one of meter, meters"),
        ({"command_id": "c", "kind": "read", "meters": []}, 400, "non-empty list"),
        ({"command_id": "c", "kind": "read", "meters": ["ok", "bad id"]}, 400, "meters[1]"),
        (_req(expires_at="tomorrow"), 400, "expires_at 'tomorrow' is not an ISO 8601 time"),
        (_req(expires_at="2026-05-01T12:00:00"), 400, "has no UTC offset"),
        (_req(expires_at=5), 400, "not a int"),
        (_req(colour="red"), 400, "unknown field 'colour'"),
        (_req(point="0-0:96.3.10"), 400, "disconnect takes no point"),
        (_req(kind="write-point"), 400, "write-point needs point"),
        (_req(kind="write-point", point="p"), 400, "write-point needs value"),
        (_req(kind="clock-set"), 400, "clock-set needs clock"),
        (_req(kind="firmware-update"), 400, "firmware-update needs body"),
        (_req(body={"image": "x"}), 400, "disconnect takes no body"),
        (_req(kind="write-point", point="p", value=[1]), 400, "value must be a number"),
        (_req(kind="write-point", point="p", value=float("nan")), 400, "finite"),
        (_req(options={"a": 1}), 400, "option 'a'"),
        (
            _req(not_before="2026-05-01T13:00:00+00:00", expires_at="2026-05-01T12:30:00+00:00"),
            422,
            "expires_at must be after not_before",
        ),
    ],
)
def test_a_malformed_request_is_refused_naming_what_is_wrong(body: dict[str, Any], status: int, says: str) -> None:
    with pytest.raises(CommandError) as err:
        parse_request(body)
    assert err.value.status == status
    assert says in err.value.message


def test_a_well_formed_request_and_its_target() -> None:
    r = parse_request(_req(meters=None, meter=None, group="street-7", not_before="2026-05-01T12:05:00Z"))
    assert (r.kind, r.group, r.meters) == (CommandKind.DISCONNECT, "street-7", ())
    assert r.target() == {"group": "street-7"}
    one = parse_request({"command_id": "c", "kind": "read", "meters": ["b", "a", "b"]})
    assert one.meters == ("b", "a")  # duplicates dropped, order kept
    assert r.not_before == datetime(2026, 5, 1, 12, 5, tzinfo=UTC)


def test_the_hash_is_the_content_the_client_sent_without_the_id() -> None:
    a = parse_request(_req())
    assert a.content_hash() == parse_request(_req()).content_hash()
    assert a.content_hash() == parse_request(_req(command_id="other")).content_hash()
    assert a.content_hash() == parse_request(_req(meters=["e1"], meter=None)).content_hash()  # meter = [meter]
    assert a.content_hash() != parse_request(_req(kind="reconnect")).content_hash()
    assert a.content_hash() != parse_request(_req(meter="e2")).content_hash()
    assert a.content_hash() != parse_request(_req(expires_at="2026-05-01T13:00:00+00:00")).content_hash()
    # The same instant written with another offset is the same request.
    utc = parse_request(_req(expires_at="2026-05-01T13:00:00+00:00")).content_hash()
    assert utc == parse_request(_req(expires_at="2026-05-01T15:00:00+02:00")).content_hash()
    # An omitted expiry hashes as omitted, so a retry of it (whose default would differ) is the same request.
    assert parse_request(_req()).expires_at is None


def test_the_default_lifetime_starts_when_the_command_may_start() -> None:
    r = parse_request(_req())
    assert r.lifetime_end(NOW, timedelta(minutes=15)) == NOW + timedelta(minutes=15)
    later = parse_request(_req(not_before="2026-05-01T14:00:00+00:00"))
    assert later.lifetime_end(NOW, timedelta(minutes=15)) == datetime(2026, 5, 1, 14, 15, tzinfo=UTC)
    given = parse_request(_req(expires_at="2026-05-01T12:01:00+00:00"))
    assert given.lifetime_end(NOW, timedelta(hours=1)) == datetime(2026, 5, 1, 12, 1, tzinfo=UTC)


def test_what_each_protocol_and_profile_supports() -> None:
    relay = parse_request(_req())
    assert support_problem(relay, "e1", "dlms", DLMS) is None
    assert "speaks modbus, which has no disconnect" in str(support_problem(relay, "m1", "modbus", MODBUS))
    assert "speaks iec62056-21" in str(support_problem(relay, "i1", "iec62056-21", None))
    write = parse_request(_req(kind="write-point", point="0-0:96.3.10", value=3))
    assert support_problem(write, "m1", "modbus", MODBUS) is None  # a holding register is writable
    assert "has no write-point" in str(support_problem(write, "e1", "dlms", DLMS))
    read_only = parse_request(_req(kind="write-point", point="1-0:1.8.0", value=3))
    assert "writable: true" in str(support_problem(read_only, "m1", "modbus", MODBUS))  # an input register
    attr = parse_request(_req(kind="set-attribute", point="0-0:96.3.10", value=2))
    assert support_problem(attr, "e1", "dlms", DLMS) is None
    energy = parse_request(_req(kind="set-attribute", point="3/1-0:1.8.0.255", value=2))
    assert "does not mark '3/1-0:1.8.0.255' writable: true" in str(support_problem(energy, "e1", "dlms", DLMS))
    missing = parse_request(_req(kind="set-attribute", point="9-9:9.9.9", value=2))
    assert "has no point named" in str(support_problem(missing, "e1", "dlms", DLMS))
    assert "not known" in str(support_problem(attr, "e1", "dlms", None))
    assert support_problem(parse_request(_req(kind="read")), "w1", "wmbus", None) is None


def test_the_state_table() -> None:
    assert transition_allowed(MeterState.REQUESTED, MeterState.APPROVED)
    assert transition_allowed(MeterState.APPROVED, MeterState.QUEUED)
    assert transition_allowed(MeterState.QUEUED, MeterState.SENT)
    assert transition_allowed(MeterState.SENT, MeterState.SUCCEEDED)
    assert transition_allowed(MeterState.APPROVED, MeterState.EXPIRED)  # expired in the scheduler
    assert not transition_allowed(MeterState.REQUESTED, MeterState.QUEUED)  # four eyes first
    assert not transition_allowed(MeterState.QUEUED, MeterState.CANCELLED)  # the collector has it
    assert not transition_allowed(MeterState.SUCCEEDED, MeterState.SENT)  # a late "sent" changes nothing
    for final in FINAL:
        assert final not in TRANSITIONS, f"{final} is final"


def test_a_commands_state_summarises_its_meters() -> None:
    s = MeterState
    assert summary_state([s.SUCCEEDED, s.SUCCEEDED]) is s.SUCCEEDED
    assert summary_state([s.SUCCEEDED, s.FAILED]) is s.FAILED
    assert summary_state([s.SUCCEEDED, s.EXPIRED]) is s.FAILED
    assert summary_state([s.CANCELLED, s.CANCELLED]) is s.CANCELLED
    assert summary_state([s.SUCCEEDED, s.SENT, s.QUEUED]) is s.SENT
    assert summary_state([s.SUCCEEDED, s.APPROVED]) is s.APPROVED
    assert summary_state([s.REQUESTED]) is s.REQUESTED


def test_the_command_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    from pydantic import ValidationError

    from gxami_scheduler.settings import SchedulerSettings

    monkeypatch.setenv("GXAMI_CLOCK_SYNC_PERIOD", "3600")
    monkeypatch.setenv("GXAMI_COMMAND_FOUR_EYES_ABOVE", "3")
    settings = SchedulerSettings()
    assert (settings.clock_sync_period, settings.command_four_eyes_above) == (timedelta(hours=1), 3)
    monkeypatch.setenv("GXAMI_CLOCK_SYNC_PERIOD", "PT6H")
    assert SchedulerSettings().clock_sync_period == timedelta(hours=6)
    for bad in ("0", "soon"):
        monkeypatch.setenv("GXAMI_CLOCK_SYNC_PERIOD", bad)
        with pytest.raises(ValidationError, match="clock_sync_period"):
            SchedulerSettings()


def _calendar() -> dict[str, Any]:
    from gxcore.tariffs import calendar_body, load_tariff_file

    example = Path(__file__).resolve().parents[3] / "docs" / "examples" / "tariff-day-night.yaml"
    return calendar_body(load_tariff_file(example))


def test_a_tariff_calendar_body_is_checked_against_the_tariff_model() -> None:
    good = parse_request(_req(kind="tariff-calendar", body=_calendar()))
    assert good.body == _calendar()
    bad = _calendar()
    bad["weeks"][0]["monday"] = "nobody"
    with pytest.raises(CommandError) as err:
        parse_request(_req(kind="tariff-calendar", body=bad))
    assert err.value.status == 422
    assert "unknown days: nobody" in err.value.message
    wrong_switch = _calendar()
    wrong_switch["days"][0]["switches"][0]["at"] = "25:00"
    with pytest.raises(CommandError) as err:
        parse_request(_req(kind="tariff-calendar", body=wrong_switch))
    assert err.value.status == 422
    assert err.value.detail["field"] == "body.days.0.switches.0.at"
    assert "body.days.0.switches.0.at" in err.value.message
    with pytest.raises(CommandError) as err:
        parse_request(_req(kind="tariff-calendar", body={"name": "x"}))
    assert (err.value.status, err.value.detail["field"]) == (422, "body.seasons")
    assert "more)" in err.value.message
