"""Meter events: what is refused before the database, and storing each event id once."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from gxami_contracts import MeterEvent
from gxami_ingest.events import EventRejectedError, check_event, write_events
from gxami_store import migrate

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
LIMITS = {"now": NOW, "max_future": timedelta(days=1), "max_past": timedelta(days=3660)}


def _event(**kw: object) -> MeterEvent:
    fields: dict[str, object] = {
        "event_id": "ev-1",
        "meter_id": "M1",
        "ts": NOW - timedelta(hours=1),
        "kind": "power-down",
        "severity": "warning",
        "data": {"source": "0-0:99.98.0", "code": 1, "protocol": "dlms"},
    }
    fields.update(kw)
    return MeterEvent.model_validate(fields)


def _unchecked(**kw: object) -> MeterEvent:
    """An event the contract refuses, built past it: ingest's own checks are a second line."""
    return _event().model_copy(update=kw)


def test_a_good_event_becomes_a_row() -> None:
    row = check_event(_event(), known_meters={"M1"}, **LIMITS)  # type: ignore[arg-type]
    assert row[:5] == ("ev-1", "M1", NOW - timedelta(hours=1), "power-down", "warning")
    assert json.loads(row[5]) == {"source": "0-0:99.98.0", "code": 1, "protocol": "dlms"}


@pytest.mark.parametrize(
    ("event", "reason"),
    [
        (_event(meter_id="M9"), "unknown meter 'M9'"),
        (_event(ts=NOW + timedelta(days=2)), "meter M1: event 'ev-1' is stamped in the future"),
        (_event(ts=datetime(2000, 1, 1, tzinfo=UTC)), "stamped too far back"),
        (_unchecked(kind="power\x00down"), "must not contain NUL"),
        (_unchecked(data={"note": "a\x00b"}), "data.'note' contains a NUL"),
        (_unchecked(data={"v": float("nan")}), "non-finite number"),
    ],
)
def test_events_the_database_must_not_get_are_rejected_with_a_reason(event: MeterEvent, reason: str) -> None:
    with pytest.raises(EventRejectedError, match=reason.replace("(", r"\(")):
        check_event(event, known_meters={"M1"}, **LIMITS)  # type: ignore[arg-type]


@pytest.mark.integration
async def test_each_event_id_is_stored_once_and_the_first_version_stays(database_url: str) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        await migrate(conn)
        rows = [
            check_event(_event(event_id=f"ev-{i}", ts=NOW - timedelta(minutes=i)), known_meters={"M1"}, **LIMITS)  # type: ignore[arg-type]
            for i in range(5)
        ]
        first = await write_events(conn, rows)
        assert (first.offered, first.inserted, first.duplicates, first.conflicts) == (5, 5, 0, 0)
        # redelivered, plus the same message twice in one batch: nothing new
        again = await write_events(conn, [*rows, rows[0]])
        assert (again.inserted, again.duplicates, again.conflicts) == (0, 6, 0)
        # the same id with other content: counted, and the stored version is kept
        changed = check_event(
            _event(event_id="ev-0", ts=NOW, kind="power-up", severity="info"), known_meters={"M1"}, **LIMITS
        )  # type: ignore[arg-type]
        new = check_event(_event(event_id="ev-9"), known_meters={"M1"}, **LIMITS)  # type: ignore[arg-type]
        mixed = await write_events(conn, [changed, new])
        assert (mixed.inserted, mixed.duplicates, mixed.conflicts) == (1, 0, 1)
        stored = await conn.fetchrow("SELECT ts, kind, severity, data FROM events WHERE event_id = 'ev-0'")
        assert stored is not None
        assert (stored["ts"], stored["kind"], stored["severity"]) == (NOW, "power-down", "warning")
        assert json.loads(stored["data"]) == {"source": "0-0:99.98.0", "code": 1, "protocol": "dlms"}
        assert await conn.fetchval("SELECT count(*) FROM events") == 6
        assert (await write_events(conn, [])).offered == 0
    finally:
        await conn.close()
