"""Typed values end to end: a simulated DLMS meter read by the collector's reader, published on the
real broker, stored by the running ingest service: the logical device name (an octet-string) is
text in register_values, an integer register stays an integer on the wire, scaled registers are
stored digit for digit."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import asyncpg
import pytest
import yaml

from gxami_collector.jobs import MeterReader
from gxami_collector.secret_store import SecretStore
from gxami_contracts import ReadingBatch, ReadJob
from gxami_ingest.app import Ingest
from gxami_ingest.settings import IngestSettings
from gxami_meterlab.devstack import StackEndpoints
from gxami_meterlab.dlms.image_transfer import DEFAULT_FIRMWARE
from gxami_meterlab.simulators.dlms import DlmsFleetSimulator, expected_register, meter_id, serial_number
from gxami_runtime.kafka import ensure_topics, make_producer
from gxami_store import migrate
from gxcore.profiles import ProfileCatalog
from gxcore.profiles.model import BUILTIN_DIR

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

SEED = 5


def _profile_folder(tmp_path: Path) -> Path:
    """generic-dlms plus the logical device name (octet-string) and the event code (an integer)."""
    profile = yaml.safe_load((Path(BUILTIN_DIR) / "generic-dlms.yaml").read_text())
    profile["name"] = "values-dlms"
    profile["points"] = [p for p in profile["points"] if "billing" in p["purpose"] or "instantaneous" in p["purpose"]]
    profile["points"] += [
        {"quantity": "0-0:42.0.0", "unit": "", "source": "1/0.0.42.0.0.255", "purpose": ["billing"]},
        {"quantity": "0-0:96.11.0", "unit": "", "source": "1/0.0.96.11.0.255", "purpose": ["billing"]},
        # the serial number (a visible-string) and the active firmware id (an octet-string): text too
        {"quantity": "0-0:96.1.0", "unit": "", "source": "1/0.0.96.1.0.255", "purpose": ["billing"]},
        {"quantity": "1-0:0.2.0", "unit": "", "source": "1/1.0.0.2.0.255", "purpose": ["billing"]},
    ]
    folder = tmp_path / "profiles"
    folder.mkdir()
    (folder / "values-dlms.yaml").write_text(yaml.safe_dump(profile))
    return folder


async def test_dlms_text_and_exact_numbers_reach_the_database(
    stack: StackEndpoints, database_url: str, topic_prefix: str, tmp_path: Path
) -> None:
    settings = IngestSettings(
        kafka_bootstrap=stack.kafka_bootstrap,
        kafka_enable_idempotence=stack.kafka_enable_idempotence,
        database_url=database_url,
        consumer_group=f"{topic_prefix}ingest",
        batch_max_age_ms=100,
        kafka_session_timeout_ms=2000,
        kafka_heartbeat_interval_ms=500,
        vee_enabled=True,
        topic_overrides={
            "ami.readings": f"{topic_prefix}readings",
            "ami.events": f"{topic_prefix}events",
            "ami.dead-letter": f"{topic_prefix}dlq",
        },
    )
    reader = MeterReader(
        ProfileCatalog(_profile_folder(tmp_path)), SecretStore(), exchange_timeout=2, session_timeout=30
    )
    async with DlmsFleetSimulator(1, seed=SEED) as sim:
        meter = sim.meters[0]
        url = f"tcp://127.0.0.1:{meter.port}"
        now = datetime.now(UTC)
        job = ReadJob(
            job_id=uuid.uuid4().hex,
            meter_id=meter.meter_id,
            link_id=url,
            protocol="dlms",
            url=url,
            profile="values-dlms",
            purposes=["billing", "instantaneous"],
            issued_at=now,
            deadline=now + timedelta(minutes=5),
        )
        outcome = await reader.run(job)
    assert outcome.result.error_message is None, outcome.result.error_message
    batch = outcome.batch
    assert batch is not None
    wire = batch.model_dump_json()
    # on the wire: the integer register a JSON integer, the name a text value
    received = ReadingBatch.from_wire(wire)
    codes = next(s for s in received.series if s.quantity == "0-0:96.11.0")
    assert all(type(v) is int for v in codes.values)
    names = next(s for s in received.text_series if s.quantity == "0-0:42.0.0")
    assert (names.kind, names.values) == ("text", [meter_id(SEED, 0)])

    conn = await asyncpg.connect(database_url)
    try:
        await migrate(conn)
        await conn.execute(
            "INSERT INTO meters (meter_id, protocol, url, link_id, profile, interval_s)"
            " VALUES ($1, 'dlms', $2, $2, 'values-dlms', 900)",
            meter.meter_id,
            url,
        )
    finally:
        await conn.close()
    await ensure_topics(settings, ["ami.readings", "ami.events", "ami.dead-letter"])
    producer = make_producer(settings)
    await producer.start()
    try:
        await producer.send_and_wait(settings.topic("ami.readings"), wire.encode(), key=meter.meter_id.encode())
    finally:
        await producer.stop()

    stop = asyncio.Event()
    task = asyncio.create_task(Ingest(settings).run(stop))
    conn = await asyncpg.connect(database_url)
    try:
        deadline = asyncio.get_running_loop().time() + 30
        while await conn.fetchval("SELECT count(*) FROM register_values") == 0:
            assert asyncio.get_running_loop().time() < deadline, "the text value was not stored within 30 s"
            await asyncio.sleep(0.1)
        name = await conn.fetchrow(
            "SELECT kind, text_value FROM meter_register_values WHERE meter_id = $1 AND quantity = '0-0:42.0.0'",
            meter.meter_id,
        )
        assert name is not None and tuple(name) == ("text", meter_id(SEED, 0))
        texts = {
            r["quantity"]: (r["kind"], r["text_value"])
            for r in await conn.fetch(
                "SELECT quantity, kind, text_value FROM meter_register_values WHERE meter_id = $1", meter.meter_id
            )
        }
        assert texts["0-0:96.1.0"] == ("text", serial_number(SEED, 0))
        assert texts["1-0:0.2.0"] == ("text", DEFAULT_FIRMWARE.decode())
        stored = {
            r["quantity"]: (r["value"], r["shown"])
            for r in await conn.fetch(
                "SELECT quantity, value, value::text AS shown FROM readings WHERE meter_id = $1", meter.meter_id
            )
        }
        read_at = next(s.ts[0] for s in received.series if s.quantity == "1-0:1.8.0")
        energy = Decimal(expected_register(SEED, 0, "1.0.1.8.0.255", read_at)) / 1000
        value, shown = stored["1-0:1.8.0"]
        assert value == float(energy) and Decimal(shown) == energy  # digit for digit, no float noise
        volts = next(s.values[0] for s in received.series if s.quantity == "1-0:32.7.0")
        assert Decimal(stored["1-0:32.7.0"][1]) == Decimal(repr(volts))
    finally:
        await conn.close()
        stop.set()
        await asyncio.wait_for(task, 30)
