"""Back-fill: a load profile that fails while the registers are read never moves the meter's profile window.

Against the real DLMS simulator: a job whose load profile the meter cannot serve (the profile
names a Profile generic the meter does not have, so the meter refuses that GET and the session
goes on) still delivers its register readings, but reports an error, so the scheduler keeps
``last_profile_ts`` and the next job asks for the same window again.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from gxami_collector.jobs import MeterReader
from gxami_collector.secret_store import SecretStore
from gxami_contracts import JobStatus, ReadJob
from gxami_meterlab.simulators.dlms import DlmsFleetSimulator
from gxcore.profiles import ProfileCatalog
from gxcore.profiles.model import BUILTIN_DIR

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

SEED = 31
MISSING_PROFILE = "1.0.99.1.7.255"  # no such Profile generic in the simulated meter


def _job(meter_id: str, port: int, profile: str) -> ReadJob:
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    url = f"tcp://127.0.0.1:{port}"
    return ReadJob.model_validate(
        {
            "job_id": uuid.uuid4().hex,
            "meter_id": meter_id,
            "link_id": url,
            "protocol": "dlms",
            "url": url,
            "profile": profile,
            "options": {},
            "purposes": ["billing", "load-profile"],
            "profile_from": now - timedelta(hours=2),
            "profile_to": now,
            "issued_at": now,
            "deadline": now + timedelta(minutes=5),
        }
    )


async def test_a_failed_load_profile_read_is_an_error_with_its_register_readings(tmp_path: Path) -> None:
    text = (BUILTIN_DIR / "generic-dlms.yaml").read_text(encoding="utf-8")
    assert '"1.0.99.1.0.255"' in text
    broken = text.replace("name: generic-dlms", "name: generic-dlms-no-lp").replace(
        '"1.0.99.1.0.255"', f'"{MISSING_PROFILE}"'
    )
    (tmp_path / "generic-dlms-no-lp.yaml").write_text(broken, encoding="utf-8")
    catalog = await asyncio.to_thread(ProfileCatalog, tmp_path)  # YAML parsing: off the event loop
    reader = MeterReader(catalog, SecretStore(), exchange_timeout=5, session_timeout=60)
    async with DlmsFleetSimulator(1, seed=SEED) as sim:
        m = sim.meters[0]
        good = await reader.run(_job(m.meter_id, m.port, "generic-dlms"))
        bad = await reader.run(_job(m.meter_id, m.port, "generic-dlms-no-lp"))
    # The working profile: OK, with billing registers and 15-minute rows.
    assert good.result.status is JobStatus.OK, good.result
    assert good.batch is not None
    assert any(r.ts.minute % 15 == 0 and r.ts.second == 0 for r in good.batch.readings())
    # The failing one: the register readings still go out, but the job is an error naming the profile.
    assert bad.result.status is JobStatus.ERROR
    assert bad.result.error_kind, bad.result
    assert bad.result.error_message is not None and "load profile not read" in bad.result.error_message
    assert bad.batch is not None and bad.result.readings_count == bad.batch.count > 0
    assert {r.quantity for r in bad.batch.readings()} == {"1-0:1.8.0", "1-0:2.8.0"}
    assert len(bad.batch.readings()) == 2, "only the two billing registers: no profile row"
