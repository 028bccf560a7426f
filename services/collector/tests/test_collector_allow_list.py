"""A read job outside the meter network allow-list is refused as a configuration error, and nothing connects."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta

from prometheus_client import REGISTRY

from gxami_collector.jobs import MeterReader
from gxami_collector.networks import MeterNetworks
from gxami_collector.secret_store import SecretStore
from gxami_contracts import JobStatus, ReadJob
from gxami_meterlab.simulators.dlms import DlmsFleetSimulator
from gxcore.profiles import ProfileCatalog
from gxcore.secrets import Secret

PASSWORD = "s3cret-Pw"


def job(url: str, meter_id: str = "m-allow-1") -> ReadJob:
    now = datetime.now(UTC)
    return ReadJob.model_validate(
        {
            "job_id": uuid.uuid4().hex,
            "meter_id": meter_id,
            "link_id": url,
            "protocol": "dlms",
            "url": url,
            "profile": "generic-dlms",
            "options": {"authentication": "low"},
            "purposes": ["billing"],
            "issued_at": now,
            "deadline": now + timedelta(minutes=5),
        }
    )


# Built once, at import: loading and validating every profile takes ~0.1 s, too long to repeat on the loop.
PROFILES = ProfileCatalog()


def reader(networks: MeterNetworks | None) -> MeterReader:
    return MeterReader(
        PROFILES,
        SecretStore(default={"password": Secret(PASSWORD)}),
        exchange_timeout=1.0,
        session_timeout=10,
        networks=networks,
    )


def refused(reason: str) -> float:
    return REGISTRY.get_sample_value("gxami_collector_jobs_refused_total", {"reason": reason}) or 0.0


@asynccontextmanager
async def trap() -> AsyncIterator[tuple[int, list[str]]]:
    """A listening socket on loopback that records every connection it gets."""
    seen: list[str] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append(str(writer.get_extra_info("peername")))
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1], seen
    finally:
        server.close()
        await server.wait_closed()


async def test_jobs_outside_the_allow_list_are_configuration_errors_and_never_connect() -> None:
    async with DlmsFleetSimulator(1, seed=3, authentication="low", password=PASSWORD) as sim, trap() as (port, seen):
        meter = sim.meters[0]
        # Only the simulated meter's port is a meter network here; the trap listens on another loopback port.
        policy = MeterNetworks.of(["tcp", "serial"], [f"127.0.0.1:{meter.port}"], ["/dev/ttyUSB*"])
        before = (refused("network"), refused("scheme"), refused("serial-device"))
        to_trap = await reader(policy).run(job(f"tcp://127.0.0.1:{port}"))
        to_file = await reader(policy).run(job("file:///etc/passwd"))
        to_udp = await reader(policy).run(job(f"udp://127.0.0.1:{meter.port}"))
        to_device = await reader(policy).run(job("serial:///dev/watchdog"))
        allowed = await reader(policy).run(job(f"tcp://127.0.0.1:{meter.port}", meter.meter_id))
        await asyncio.sleep(0.1)  # a connection attempt, had there been one, reaches the trap by now
    assert seen == [], "the collector connected to a port outside the allow-list"
    for outcome, says in (
        (to_trap, f"tcp://127.0.0.1:{port} is outside the allowed meter networks"),
        (to_file, "URL scheme 'file' is not allowed"),
        (to_udp, "URL scheme 'udp' is not allowed"),
        (to_device, "serial device '/dev/watchdog' is not an allowed serial device"),
    ):
        r = outcome.result
        assert (r.status, r.error_kind) == (JobStatus.ERROR, "configuration")
        assert r.error_message is not None
        assert r.error_message.startswith("meter m-allow-1: refused by the meter network allow-list: ")
        assert says in r.error_message
        assert outcome.batch is None
    assert (refused("network"), refused("scheme"), refused("serial-device")) == (
        before[0] + 1,
        before[1] + 2,
        before[2] + 1,
    )
    # The allow-list does not stand in the way of a meter inside it.
    assert allowed.result.status is JobStatus.OK and allowed.batch is not None


async def test_the_default_allow_list_refuses_public_addresses_before_connecting() -> None:
    # 192.0.2.1 (TEST-NET-1) is unroutable: without the check this would be a media/timeout error.
    outcome = await reader(None).run(job("tcp://192.0.2.1:4059"))
    assert outcome.result.error_kind == "configuration"
    assert "outside the allowed meter networks" in (outcome.result.error_message or "")
    assert (outcome.result.finished_at - outcome.result.started_at).total_seconds() < 0.5
