"""Remote disconnect/reconnect and clock synchronisation against the simulated fleet."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from gxami_meterlab.simulators.dlms import POWER, DlmsFleetSimulator, expected_register
from gxcore.drivers.dlms import run_dlms_command
from gxcore.drivers.dlms.reader import DlmsSession
from gxcore.errors import AccessDeniedError, ConfigurationError, ProtocolError
from gxcore.protocols.dlms import CosemValue, DlmsParameters

NOW = datetime(2024, 7, 8, 9, 10, 11, tzinfo=UTC)


def tcp(port: int) -> str:
    return f"tcp://127.0.0.1:{port}"


async def read_register(port: int, params: DlmsParameters, obis: str) -> tuple[datetime, float]:
    """The meter clock and one register's value, in one association."""
    async with DlmsSession(tcp(port), params, timeout=2) as session:
        return await session.read_clock(), (await session.read_value(CosemValue(obis)))[0]


@pytest.mark.parametrize("interface", ["wrapper", "hdlc"])
async def test_disconnect_and_reconnect(interface: str, capsys: pytest.CaptureFixture[str]) -> None:
    params = DlmsParameters(interface=interface)  # type: ignore[arg-type]
    async with DlmsFleetSimulator(2, seed=3, clock=lambda: NOW, interface=interface) as sim:  # type: ignore[arg-type]
        port = sim.meters[1].port
        off = await run_dlms_command(tcp(port), params, "disconnect", timeout=2)
        assert off.supply is not None
        assert (off.supply.output_state, off.supply.name) == (False, "disconnected")
        # The state outlives the association: a later read sees no power flowing.
        _, power = await read_register(port, params, POWER)
        assert power == 0 == expected_register(3, 1, POWER, NOW, connected=False)
        neighbour = await run_dlms_command(tcp(sim.meters[0].port), params, "read-supply", timeout=2)
        assert neighbour.supply is not None
        assert neighbour.supply.output_state
        on = await run_dlms_command(tcp(port), params, "reconnect", timeout=2)
        assert on.supply is not None
        assert (on.supply.output_state, on.supply.name) == (True, "connected")
        _, power = await read_register(port, params, POWER)
        assert power == expected_register(3, 1, POWER, NOW) > 0
    assert capsys.readouterr().out == ""


async def test_clock_sync_moves_the_meter_clock_and_the_registers_follow() -> None:
    true_time = NOW + timedelta(minutes=7, seconds=30)
    async with DlmsFleetSimulator(1, seed=3, clock=lambda: NOW) as sim:
        port = sim.meters[0].port
        result = await run_dlms_command(tcp(port), DlmsParameters(), "clock-sync", timeout=2, clock=lambda: true_time)
        assert (result.meter_time_before, result.meter_time_after) == (NOW, true_time)
        meter_time, energy = await read_register(port, DlmsParameters(), "1.0.1.8.0.255")
    assert meter_time == true_time
    assert energy == expected_register(3, 0, "1.0.1.8.0.255", true_time)


async def test_only_the_clock_time_is_writable_and_only_disconnect_control_acts() -> None:
    async with (
        DlmsFleetSimulator(1, clock=lambda: NOW) as sim,
        DlmsSession(tcp(sim.meters[0].port), DlmsParameters(), timeout=2) as session,
    ):
        with pytest.raises(AccessDeniedError):
            await session.action(3, "1.0.1.8.0.255", 1)
        with pytest.raises(ProtocolError, match="object-undefined"):
            await session.action(70, "0.0.96.3.99.255", 1)
        with pytest.raises(ProtocolError, match="object-undefined"):
            (await session._run(session.core.set_clock(NOW, "0.0.1.0.1.255"))).value()
        assert await session.read_clock() == NOW


async def test_unknown_command_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError):
        await run_dlms_command(tcp(1), DlmsParameters(), "explode", timeout=1)  # type: ignore[arg-type]
