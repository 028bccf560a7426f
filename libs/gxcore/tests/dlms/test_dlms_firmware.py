"""Firmware update (image transfer, class 18) through the DLMS driver against the simulated meter over TCP."""

from __future__ import annotations

import asyncio
import hashlib
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from gxami_meterlab.dlms.image_transfer import DEFAULT_FIRMWARE, FirmwareFaults
from gxami_meterlab.simulators.dlms import (
    DlmsFleetSimulator,
    SimulatedMeter,
    client_security,
    meter_id,
    run_simulator,
)
from gxcore.drivers import MeterTarget
from gxcore.drivers.api import DriverCommand
from gxcore.drivers.dlms.driver import DlmsDriver
from gxcore.drivers.dlms.firmware import FirmwareProgress, FirmwareTransferError
from gxcore.errors import ConfigurationError, ProtocolError
from gxcore.profiles.model import BUILTIN_DIR, DeviceProfile, load_profile
from gxcore.protocols.dlms import image_transfer as it
from gxcore.protocols.dlms.invocation import MemoryInvocationCounters

NOW = datetime(2025, 3, 4, 10, 20, 30, tzinfo=UTC)
SEED = 7
PROFILE = load_profile(Path(BUILTIN_DIR) / "generic-dlms.yaml")
IMAGE = bytes(range(256)) * 4 + b"tail-of-image"  # 1037 bytes: 11 blocks of 96, the last short
BLOCKS = -(-len(IMAGE) // 96)


def target(port: int, index: int = 0, **secrets: object) -> MeterTarget:
    return MeterTarget(meter_id(SEED, index), f"tcp://127.0.0.1:{port}", {}, secrets)  # type: ignore[arg-type]


def update(ident: str = "GXSIM-2.0.0", image: bytes = IMAGE, **body: object) -> DriverCommand:
    return DriverCommand("firmware-update", body={"image": image, "identification": ident, **body})


def ciphered(profile: DeviceProfile = PROFILE) -> DeviceProfile:
    return profile.model_copy(
        update={"parameters": {**profile.parameters, "authentication": "high-gmac", "client_address": 1}}
    )


async def test_a_full_transfer_activates_and_changes_the_firmware_id() -> None:
    async with DlmsFleetSimulator(1, seed=SEED, clock=lambda: NOW) as sim:
        state = sim.states[0].firmware
        assert state.active == DEFAULT_FIRMWARE
        result = await DlmsDriver(clock=lambda: NOW).execute(target(sim.meters[0].port), PROFILE, update(), timeout=2)
        assert result.state == "activated"
        figures = {r.quantity: r.value for r in result.readings}
        assert figures == {
            "firmware-blocks-sent": BLOCKS,
            "firmware-blocks-done": BLOCKS,
            "firmware-blocks-total": BLOCKS,
            "firmware-first-missing": BLOCKS,
        }
        assert state.active == b"GXSIM-2.0.0"
        assert state.sent_blocks == list(range(BLOCKS))
        assert b"".join(state.blocks[n] for n in range(BLOCKS)) == IMAGE
        assert state.signature == hashlib.sha256(IMAGE).digest()
        assert [e[0] for e in state.log] == ["initiate", *["block"] * BLOCKS, "verify", "activate"]
        # The same command again: the meter already runs the image, nothing is sent.
        again = await DlmsDriver(clock=lambda: NOW).execute(target(sim.meters[0].port), PROFILE, update(), timeout=2)
        assert again.state == "activated" and "already the active firmware" in again.detail
        assert len(state.log) == BLOCKS + 3


async def test_an_interrupted_transfer_resumes_from_the_first_missing_block() -> None:
    faults = FirmwareFaults(drop_after_blocks=4)
    async with DlmsFleetSimulator(1, seed=SEED, clock=lambda: NOW, firmware_faults=faults) as sim:
        state = sim.states[0].firmware
        meter = target(sim.meters[0].port)
        with pytest.raises(FirmwareTransferError) as failed:
            await DlmsDriver(clock=lambda: NOW).execute(meter, PROFILE, update(), timeout=2)
        # The meter stored block 3, then dropped the link before answering: the driver saw 3 answered.
        assert failed.value.first_missing == 3 and failed.value.blocks_total == BLOCKS
        assert state.sent_blocks == [0, 1, 2, 3] and state.active == DEFAULT_FIRMWARE
        mark = len(state.log)
        heard: list[FirmwareProgress] = []
        driver = DlmsDriver(clock=lambda: NOW, firmware_progress=heard.append)
        result = await driver.execute(meter, PROFILE, update(), timeout=2)
        resumed = state.log[mark:]
        # Progress: where it resumed, then every block (11 blocks: 5 % is less than one), the last done.
        assert [(p.blocks_done, p.sent) for p in heard] == [(4 + n, n) for n in range(BLOCKS - 4 + 1)]
        assert {(p.meter_id, p.identification, p.blocks_total) for p in heard} == {
            (meter_id(SEED, 0), "GXSIM-2.0.0", BLOCKS)
        }
        assert resumed[0] == ("block", 4)  # no initiate, no block below the meter's first missing one
        assert [n for kind, n in resumed if kind == "block"] == list(range(4, BLOCKS))
        assert state.sent_blocks == list(range(BLOCKS))  # every block exactly once across both executes
        assert result.state == "activated" and state.active == b"GXSIM-2.0.0"
        figures = {r.quantity: r.value for r in result.readings}
        assert figures["firmware-blocks-sent"] == BLOCKS - 4
        assert "from block 4" in result.detail


async def test_a_ciphered_meter_resumes_without_reusing_an_invocation_counter() -> None:
    counters = MemoryInvocationCounters()
    faults = FirmwareFaults(drop_after_blocks=2)
    security = client_security(SEED, 0)
    keys = {"key": security.block_cipher_key, "auth_key": security.authentication_key}
    async with DlmsFleetSimulator(
        1, seed=SEED, clock=lambda: NOW, authentication="high-gmac", firmware_faults=faults
    ) as sim:  # leaving raises NonceReuseError if any counter was sent twice
        meter = target(sim.meters[0].port, **keys)
        driver = DlmsDriver(counters, clock=lambda: NOW)
        with pytest.raises(FirmwareTransferError):
            await driver.execute(meter, ciphered(), update(), timeout=2)
        result = await driver.execute(meter, ciphered(), update(), timeout=2)
        assert result.state == "activated" and sim.states[0].firmware.active == b"GXSIM-2.0.0"
        assert sim.states[0].firmware.sent_blocks == list(range(BLOCKS))


async def test_an_identification_mismatch_is_refused_and_nothing_is_activated() -> None:
    faults = FirmwareFaults(report_identification=b"VENDOR-OTHER")
    async with DlmsFleetSimulator(1, seed=SEED, clock=lambda: NOW, firmware_faults=faults) as sim:
        state = sim.states[0].firmware
        with pytest.raises(ProtocolError, match=r"not activating: the meter would activate .*VENDOR-OTHER"):
            await DlmsDriver(clock=lambda: NOW).execute(target(sim.meters[0].port), PROFILE, update(), timeout=2)
        assert state.active == DEFAULT_FIRMWARE
        assert not [e for e in state.log if e[0] == "activate"]


async def test_meter_failures_fail_the_command_with_progress() -> None:
    async with DlmsFleetSimulator(
        2, seed=SEED, clock=lambda: NOW, firmware_faults=FirmwareFaults(verify_failure_rate=1.0)
    ) as sim:
        sim.states[1].firmware.faults = FirmwareFaults(block_refusal_rate=0.5)
        with pytest.raises(FirmwareTransferError, match=r"after image_verify|image_verify refused"):
            await DlmsDriver(clock=lambda: NOW).execute(target(sim.meters[0].port), PROFILE, update(), timeout=2)
        assert sim.states[0].firmware.status == it.VERIFY_FAILED
        assert sim.states[0].firmware.active == DEFAULT_FIRMWARE
        # Half the blocks refused, each sent at most three times: some block runs out of tries.
        refusing = sim.states[1].firmware
        with pytest.raises(FirmwareTransferError, match=r"refused block \d+ 3 times") as failed:
            await DlmsDriver(clock=lambda: NOW).execute(target(sim.meters[1].port, 1), PROFILE, update(), timeout=2)
        assert ("refused", failed.value.first_missing) in refusing.log
        assert refusing.active == DEFAULT_FIRMWARE


async def test_a_future_activation_only_verifies_and_a_later_execute_activates() -> None:
    later = NOW + timedelta(hours=2)
    clock = [NOW]
    async with DlmsFleetSimulator(1, seed=SEED, clock=lambda: NOW) as sim:
        state = sim.states[0].firmware
        driver = DlmsDriver(clock=lambda: clock[0])
        command = update(activate_at=later.isoformat())
        first = await driver.execute(target(sim.meters[0].port), PROFILE, command, timeout=2)
        assert first.state == "verified" and state.status == it.VERIFIED and state.active == DEFAULT_FIRMWARE
        clock[0] = later
        mark = len(state.log)
        second = await driver.execute(target(sim.meters[0].port), PROFILE, command, timeout=2)
        assert second.state == "activated" and state.active == b"GXSIM-2.0.0"
        assert state.log[mark:] == [("activate", b"GXSIM-2.0.0")]  # nothing sent again, not verified again


def test_a_bad_body_is_refused_before_any_io() -> None:
    driver = DlmsDriver()
    meter = target(1)
    bad = [
        (DriverCommand("firmware-update"), "body.image"),
        (update(ident=""), "body.identification"),
        (update(sha256="00" * 32), "SHA-256"),
        (update(activate_at="tomorrow"), "activate_at"),
        (update(activate_at="2025-01-01T00:00:00"), "aware"),
    ]

    for command, message in bad:
        with pytest.raises(ConfigurationError, match=message):
            asyncio.run(driver.execute(meter, PROFILE, command, timeout=1))


def test_missing_blocks_follow_the_bitmap_from_the_first_missing() -> None:
    assert it.missing_blocks("1101", 2, 6) == [2, 4, 5]
    assert it.missing_blocks("", 0, 3) == [0, 1, 2]
    assert it.missing_blocks("111", 3, 3) == []
    assert it.initiate_parameters(b"AB", 300) == b"\x02\x02\x09\x02AB\x06\x00\x00\x01\x2c"


async def test_a_transfer_over_hdlc_framing_activates() -> None:
    hdlc = PROFILE.model_copy(update={"parameters": {**PROFILE.parameters, "interface": "hdlc"}})
    async with DlmsFleetSimulator(1, seed=SEED, clock=lambda: NOW, interface="hdlc") as sim:
        result = await DlmsDriver(clock=lambda: NOW).execute(target(sim.meters[0].port), hdlc, update(), timeout=2)
        assert result.state == "activated" and sim.states[0].firmware.active == b"GXSIM-2.0.0"
        assert sim.states[0].firmware.sent_blocks == list(range(BLOCKS))


async def test_the_dev_simulator_takes_its_failure_rates() -> None:
    stop, listening = asyncio.Event(), asyncio.Event()
    started: list[int] = []

    def on_started(meters: list[SimulatedMeter]) -> None:
        started.append(meters[0].port)
        listening.set()

    async def fail_once_listening() -> None:
        await listening.wait()
        try:
            with pytest.raises(FirmwareTransferError, match="verification-failed"):
                await DlmsDriver(clock=lambda: NOW).execute(target(started[0]), PROFILE, update(), timeout=2)
        finally:
            stop.set()

    served = run_simulator(
        1,
        SEED,
        "127.0.0.1",
        0,
        "none",
        None,
        stop,
        on_started=on_started,
        firmware_faults=FirmwareFaults(verify_failure_rate=1.0),
    )
    await asyncio.gather(served, fail_once_listening())


async def test_a_meter_that_verifies_and_activates_in_the_background_is_polled() -> None:
    faults = FirmwareFaults(busy_polls=3)
    async with DlmsFleetSimulator(2, seed=SEED, clock=lambda: NOW, firmware_faults=faults) as sim:
        patient = DriverCommand("firmware-update", body=update().body, options={"poll_interval": "0", "max_polls": "5"})
        result = await DlmsDriver(clock=lambda: NOW).execute(target(sim.meters[0].port), PROFILE, patient, timeout=2)
        assert result.state == "activated" and sim.states[0].firmware.active == b"GXSIM-2.0.0"
        hasty = DriverCommand("firmware-update", body=update().body, options={"poll_interval": "0", "max_polls": "1"})
        with pytest.raises(FirmwareTransferError, match="status verification-initiated"):
            await DlmsDriver(clock=lambda: NOW).execute(target(sim.meters[1].port, 1), PROFILE, hasty, timeout=2)
        assert sim.states[1].firmware.active == DEFAULT_FIRMWARE


def test_our_method_parameters_are_what_gurux_encodes() -> None:
    """The A-XDR of initiate and block transfer equals GXDLMSImageTransfer's own (we build it without
    gurux's request builder so every request goes through our invocation counter window)."""
    from gurux_dlms import GXByteBuffer
    from gurux_dlms.enums import DataType
    from gurux_dlms.internal._GXCommon import _GXCommon

    def structure(*items: tuple[int, object]) -> bytes:
        out = GXByteBuffer()
        out.setUInt8(DataType.STRUCTURE)
        out.setUInt8(len(items))
        for kind, value in items:
            _GXCommon.setData(None, out, kind, value)
        return bytes(out.array())

    ident = b"GXSIM-2.0.0"
    assert it.initiate_parameters(ident, 70_000) == structure((DataType.OCTET_STRING, ident), (DataType.UINT32, 70_000))
    block = bytes(range(200))
    assert it.block_parameters(7, block) == structure((DataType.UINT32, 7), (DataType.OCTET_STRING, block))
