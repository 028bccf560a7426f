"""The collector keeps DLMS invocation counters in a durable file by default, never only in memory."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from gxami_collector.jobs import MeterReader
from gxami_collector.secret_store import SecretStore
from gxami_collector.settings import CollectorSettings
from gxami_contracts import JobStatus, ReadJob
from gxami_meterlab.simulators.dlms import DlmsFleetSimulator, meter_secrets, meter_system_title
from gxcore.drivers.dlms.counter_file import JsonInvocationCounters
from gxcore.profiles import ProfileCatalog
from gxcore.secrets import Secret

SEED = 6


def test_the_default_counters_file_is_a_state_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("GXAMI_INVOCATION_COUNTERS_FILE", raising=False)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    assert CollectorSettings().invocation_counters_file == tmp_path / "gxami" / "invocation-counters.json"
    monkeypatch.setenv("GXAMI_INVOCATION_COUNTERS_FILE", str(tmp_path / "vol" / "c.json"))
    settings = CollectorSettings()
    assert settings.invocation_counters_file == tmp_path / "vol" / "c.json"
    reader = MeterReader(
        ProfileCatalog(),
        SecretStore(),
        exchange_timeout=1,
        session_timeout=5,
        invocation_counters=settings.invocation_counters_file,
    )
    driver = reader.driver("dlms")
    assert isinstance(getattr(driver, "counters", None), JsonInvocationCounters)
    assert (tmp_path / "vol").is_dir()  # created for it


def _job(meter_id: str, port: int) -> ReadJob:
    now = datetime.now(UTC)
    url = f"tcp://127.0.0.1:{port}"
    return ReadJob.model_validate(
        {
            "job_id": uuid.uuid4().hex,
            "meter_id": meter_id,
            "link_id": url,
            "protocol": "dlms",
            "url": url,
            "profile": "generic-dlms",
            "options": {
                "authentication": "high-gmac",
                "client": "1",
                "server_system_title": meter_system_title(SEED, 0).hex(),
            },
            "purposes": ["billing"],
            "issued_at": now,
            "deadline": now + timedelta(minutes=5),
        }
    )


async def test_without_a_store_a_ciphered_job_is_a_configuration_error(tmp_path: Path) -> None:
    async with DlmsFleetSimulator(1, seed=SEED, authentication="high-gmac") as sim:
        m = sim.meters[0]
        keys = meter_secrets(SEED, 0)
        secrets = SecretStore(meters={m.meter_id: {k: Secret(v) for k, v in keys.items()}})
        bare = MeterReader(ProfileCatalog(), secrets, exchange_timeout=2, session_timeout=30)
        refused = await bare.run(_job(m.meter_id, m.port))
        stored = MeterReader(
            ProfileCatalog(), secrets, exchange_timeout=2, session_timeout=30, invocation_counters=tmp_path / "c.json"
        )
        done = await stored.run(_job(m.meter_id, m.port))
        assert sim.repeats == []
    assert refused.result.status is JobStatus.ERROR and refused.result.error_kind == "configuration"
    assert "invocation counter store" in (refused.result.error_message or "")
    assert keys["key"] not in (refused.result.error_message or "")
    assert done.result.status is JobStatus.OK, done.result.error_message
