"""A read job's meter events: contract messages with stable ids, counted in the job result."""

from __future__ import annotations

import logging
import math
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from gxami_collector.jobs import MeterReader, _batch, meter_event
from gxami_collector.secret_store import SecretStore
from gxami_contracts import JobStatus, ReadJob
from gxami_meterlab.simulators.dlms import DlmsFleetSimulator, expected_events
from gxcore.drivers import MeterEventRecord
from gxcore.profiles import ProfileCatalog
from gxcore.readings import Reading

NOW = datetime(2024, 6, 1, 19, 41, 7, tzinfo=UTC)
PROFILE = """
name: events-dlms
protocol: dlms
points:
  - {quantity: "1-0:1.8.0", unit: kWh, source: "3/1.0.1.8.0.255", purpose: [billing]}
  - {quantity: "0-0:96.11.0", unit: "", source: "1/0.0.96.11.0.255", purpose: [events],
     options: {profile: "0.0.99.98.0.255", last_entries: 5}}
"""


def _job(meter_id: str, port: int, purposes: list[str]) -> ReadJob:
    now = datetime.now(UTC)
    url = f"tcp://127.0.0.1:{port}"
    return ReadJob(
        job_id=uuid.uuid4().hex,
        meter_id=meter_id,
        link_id=url,
        protocol="dlms",
        url=url,
        profile="events-dlms",
        purposes=purposes,
        issued_at=now,
        deadline=now + timedelta(minutes=5),
    )


async def test_events_are_published_with_the_job_and_counted(tmp_path: Path) -> None:
    (tmp_path / "events-dlms.yaml").write_text(PROFILE)
    reader = MeterReader(ProfileCatalog(tmp_path), SecretStore(), exchange_timeout=2, session_timeout=30)
    async with DlmsFleetSimulator(1, seed=3, clock=lambda: NOW) as sim:
        m = sim.meters[0]
        both = await reader.run(_job(m.meter_id, m.port, ["billing", "events"]))
        again = await reader.run(_job(m.meter_id, m.port, ["billing", "events"]))  # another job, same log
        only_events = await reader.run(_job(m.meter_id, m.port, ["events"]))
    r = both.result
    assert (r.status, r.readings_count, r.events_count) == (JobStatus.OK, 1, 5)
    assert both.batch is not None and [v.quantity for v in both.batch.readings()] == ["1-0:1.8.0"]
    assert [(e.ts, e.data["code"]) for e in both.events] == expected_events(3, 0, NOW - timedelta(days=400), NOW)[-5:]
    assert {e.meter_id for e in both.events} == {m.meter_id}
    assert {(e.data["source"], e.data["protocol"]) for e in both.events} == {("0-0:99.98.0", "dlms")}
    # a later job reading the same entries publishes the very same messages: ingest sees duplicates
    assert again.events == both.events
    # an events-only read is a success with no reading batch
    assert only_events.batch is None and only_events.result.status is JobStatus.OK
    assert (only_events.result.readings_count, only_events.result.events_count) == (0, 5)


def test_event_messages_keep_the_driver_id_and_extras() -> None:
    job = _job("M1", 4059, ["events"])
    record = MeterEventRecord(
        "M1", NOW, "tamper", "push", severity="alarm", extra={"cover": "open"}, event_id="meter-seq-17"
    )
    msg = meter_event(job, record)
    assert (msg.event_id, msg.meter_id, msg.ts, msg.kind, msg.severity) == (
        "meter-seq-17",
        "M1",
        NOW,
        "tamper",
        "alarm",
    )
    assert msg.data == {"cover": "open", "source": "push", "protocol": "dlms"}


def test_readings_the_contract_refuses_are_left_out_and_the_rest_kept(caplog: pytest.LogCaptureFixture) -> None:
    # A DLMS or Modbus float register can hold NaN or infinity; a plug-in driver may misname a quantity.
    job = _job("M1", 4059, ["billing"])
    before = REGISTRY.get_sample_value("gxami_collector_readings_refused_total") or 0.0
    given = [
        Reading("1-0:1.8.0", 12.5, "kWh", NOW),
        Reading("1-0:32.7.0", math.nan, "V", NOW),
        Reading("1-0:31.7.0", math.inf, "A", NOW),
        Reading("not a quantity!", 1.0, "", NOW),
        Reading("1-0:2.8.0", 3.0, "kWh", NOW, status=8),
    ]
    with caplog.at_level(logging.WARNING, logger="gxami.collector"):
        batch = _batch(job, given, NOW)
    assert batch is not None
    kept = batch.readings()
    assert [(r.quantity, r.value, r.status) for r in kept] == [("1-0:1.8.0", 12.5, None), ("1-0:2.8.0", 3.0, 8)]
    assert REGISTRY.get_sample_value("gxami_collector_readings_refused_total") == before + 3
    refused = [r for r in caplog.records if "outside the contract" in r.getMessage()]
    assert [getattr(r, "quantity", None) for r in refused] == ["1-0:32.7.0", "1-0:31.7.0", "not a quantity!"]
    assert all(getattr(r, "meter_id", None) == "M1" for r in refused)
