"""A read job with one bad point: the good readings are published, the bad one logged and counted."""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from gxami_collector.jobs import MeterReader
from gxami_collector.secret_store import SecretStore
from gxami_contracts import JobStatus, ReadJob
from gxami_meterlab.simulators.dlms import DlmsFleetSimulator
from gxcore.profiles import ProfileCatalog

NOW = datetime(2024, 6, 1, 19, 41, 7, tzinfo=UTC)
PROFILE = """
name: problems-dlms
protocol: dlms
points:
  - {quantity: "1-0:1.8.0", unit: kWh, source: "3/1.0.1.8.0.255", purpose: [billing]}
  - {quantity: "0-0:96.1.0", unit: "", source: "1/0.0.96.1.0.255", purpose: [billing]}
  - {quantity: "1-0:99.7.0", unit: "", source: "1/1.0.99.7.0.255", purpose: [billing]}
"""
METRIC = "gxami_collector_point_problems_total"


def _job(meter_id: str, port: int, purposes: list[str]) -> ReadJob:
    now = datetime.now(UTC)
    url = f"tcp://127.0.0.1:{port}"
    return ReadJob(
        job_id=uuid.uuid4().hex,
        meter_id=meter_id,
        link_id=url,
        protocol="dlms",
        url=url,
        profile="problems-dlms",
        purposes=purposes,
        issued_at=now,
        deadline=now + timedelta(minutes=5),
    )


async def test_a_point_the_meter_lacks_is_logged_with_the_meter_and_counted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "problems-dlms.yaml").write_text(PROFILE)
    reader = MeterReader(ProfileCatalog(tmp_path), SecretStore(), exchange_timeout=2, session_timeout=30)
    before = REGISTRY.get_sample_value(METRIC, {"protocol": "dlms"}) or 0.0
    async with DlmsFleetSimulator(1, seed=3, clock=lambda: NOW) as sim:
        m = sim.meters[0]
        with caplog.at_level(logging.WARNING, logger="gxami.collector"):
            outcome = await reader.run(_job(m.meter_id, m.port, ["billing"]))
            nothing = await reader.run(_job(m.meter_id, m.port, ["instantaneous"]))
    assert (outcome.result.status, outcome.result.readings_count) == (JobStatus.OK, 2)
    assert outcome.batch is not None
    assert {v.quantity for v in outcome.batch.readings()} == {"1-0:1.8.0", "0-0:96.1.0"}
    assert [s.quantity for s in outcome.batch.text_series] == ["0-0:96.1.0"]  # the serial number, as text
    # the missing point, and the read that selected no point at all: two problems, both logged
    assert REGISTRY.get_sample_value(METRIC, {"protocol": "dlms"}) == before + 2
    logged = [r for r in caplog.records if "no reading:" in r.getMessage()]
    assert [getattr(r, "quantity", None) for r in logged] == ["1-0:99.7.0", ""]
    assert all(getattr(r, "meter_id", None) == m.meter_id for r in logged)
    assert "object-undefined" in logged[0].getMessage()
    assert "no point for purpose instantaneous" in logged[1].getMessage()
    assert nothing.result.status is JobStatus.OK and nothing.batch is None
