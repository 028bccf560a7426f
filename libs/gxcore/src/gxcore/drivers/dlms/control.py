"""Meter control over DLMS/COSEM: remote disconnect/reconnect (class 70) and the clock.

Each command is one association over any DLMS medium (:func:`run_dlms_command` takes the
meter's URL, :func:`run_command` an unopened session); the result reports the state read
back from the meter after acting, so the caller audits what the meter says, not what was asked.

Class 70 control states: 0 disconnected, 1 connected, 2 ready-for-reconnection. ``reconnect``
invokes remote_reconnect and accepts connected or ready-for-reconnection (a control mode
that needs the customer's button, e.g. IDIS mode 2, arms instead of closing); ``arm-reconnect``
invokes the same method and requires ready-for-reconnection.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Final, Literal

from gxcore.drivers.dlms.reader import DlmsSession, utc_now
from gxcore.drivers.dlms.transport import MediumFactory, medium_for
from gxcore.errors import ConfigurationError, ProtocolError
from gxcore.protocols.dlms.invocation import InvocationCounterStore
from gxcore.protocols.dlms.parameters import CLASS_DISCONNECT_CONTROL, DlmsParameters

DISCONNECT_CONTROL: Final = "0.0.96.3.10.255"
DlmsCommand = Literal["disconnect", "reconnect", "arm-reconnect", "clock-sync", "clock-set", "read-supply"]
COMMANDS: Final = frozenset({"disconnect", "reconnect", "arm-reconnect", "clock-sync", "clock-set", "read-supply"})
# The control states each relay command must leave the meter in.
_WANTED: Final = {"disconnect": {0}, "reconnect": {1, 2}, "arm-reconnect": {2}}
# Blue Book class 70 control_state.
CONTROL_STATES: Final = {0: "disconnected", 1: "connected", 2: "ready-for-reconnection"}
_REMOTE_DISCONNECT, _REMOTE_RECONNECT = 1, 2


@dataclass(frozen=True, slots=True)
class SupplyState:
    """Disconnect control attributes 2 and 3: is the supply on, and the control state."""

    output_state: bool
    control_state: int

    @property
    def name(self) -> str:
        return CONTROL_STATES.get(self.control_state, f"state-{self.control_state}")


@dataclass(frozen=True, slots=True)
class DlmsCommandResult:
    """What the meter reported after the command: supply state and/or clock before and after."""

    command: DlmsCommand
    supply: SupplyState | None = None
    meter_time_before: datetime | None = None
    meter_time_after: datetime | None = None
    shifted_s: int | None = None  # a clock-sync by shift_time: the seconds shifted (clamped to the meter's limit)


CLASS_CLOCK: Final = 8
CLOCK_OBIS: Final = "0.0.1.0.0.255"
SHIFT_TIME: Final = 6  # shift_time(long: -900..900 seconds), Blue Book 4.5.1
SHIFT_LIMIT: Final = 900


def shift_time_parameter(seconds: int) -> bytes:
    """The A-XDR ``long`` (int16) a shift_time takes; the standard bounds it to +/-900 s."""
    if not -SHIFT_LIMIT <= seconds <= SHIFT_LIMIT:
        raise ConfigurationError(f"shift_time takes -{SHIFT_LIMIT}..{SHIFT_LIMIT} seconds, not {seconds}")
    return b"\x10" + seconds.to_bytes(2, "big", signed=True)


async def read_supply(session: DlmsSession, obis: str = DISCONNECT_CONTROL) -> SupplyState:
    """Read output_state and control_state of a disconnect control object."""
    output = await session.get(CLASS_DISCONNECT_CONTROL, obis, 2)
    state = await session.get(CLASS_DISCONNECT_CONTROL, obis, 3)
    if not isinstance(output, bool) or isinstance(state, bool) or not isinstance(state, int):
        raise ProtocolError(f"disconnect control {obis}: output/control state of unexpected types")
    return SupplyState(output, state)


async def run_dlms_command(
    url: str,
    params: DlmsParameters,
    command: DlmsCommand,
    *,
    timeout: float,
    clock: Callable[[], datetime] = utc_now,
    disconnect_control: str = DISCONNECT_CONTROL,
    counters: InvocationCounterStore | None = None,
    meter_key: str | None = None,
    media: MediumFactory = medium_for,
    at: datetime | None = None,
) -> DlmsCommandResult:
    """Run one control command in its own association over ``url`` and read back its effect.

    ``url`` is ``tcp://``, ``udp://`` (wrapper) or ``serial://`` (HDLC), as for
    :class:`~gxcore.drivers.dlms.reader.DlmsSession`. ``disconnect``/``reconnect`` invoke
    remote_disconnect/remote_reconnect and fail with ProtocolError if the meter's control
    state does not follow (see the module doc for ``arm-reconnect``); ``clock-sync`` sets the
    meter clock to ``clock()``, ``clock-set`` to ``at``, and both read it before and after;
    ``read-supply`` only reads. A ciphered meter needs ``counters``, a durable invocation
    counter store (ConfigurationError without).
    """
    session = DlmsSession(url, params, timeout=timeout, counters=counters, meter_key=meter_key, media=media)
    return await run_command(session, command, clock=clock, at=at, disconnect_control=disconnect_control)


async def run_command(
    session: DlmsSession,
    command: DlmsCommand,
    *,
    clock: Callable[[], datetime] = utc_now,
    at: datetime | None = None,
    disconnect_control: str = DISCONNECT_CONTROL,
    max_shift_s: int | None = None,
) -> DlmsCommandResult:
    """Open ``session`` (not yet entered), act, read the effect back and check it (see :func:`run_dlms_command`).

    With ``max_shift_s`` a clock-sync uses the clock's ``shift_time`` (class 8, method 6) by the drift,
    clamped to that many seconds, instead of setting the time: a meter that limits the size of an
    adjustment accepts it, and what is left is corrected by the next sync.
    """
    if command not in COMMANDS:
        raise ConfigurationError(f"unknown DLMS command {command!r}")
    if command == "clock-set" and (at is None or at.tzinfo is None):
        raise ConfigurationError("clock-set needs an aware time to set the meter clock to")
    async with session:
        if command == "clock-sync" and max_shift_s is not None:
            before = await session.read_clock()
            drift = round((clock() - before).total_seconds())
            step = max(-max_shift_s, min(max_shift_s, drift))
            if step:
                await session.call(CLASS_CLOCK, CLOCK_OBIS, SHIFT_TIME, shift_time_parameter(step))
            after = await session.read_clock()
            return DlmsCommandResult(command, meter_time_before=before, meter_time_after=after, shifted_s=step)
        if command in ("clock-sync", "clock-set"):
            before = await session.read_clock()
            await session.set_clock(at if command == "clock-set" and at is not None else clock())
            return DlmsCommandResult(command, meter_time_before=before, meter_time_after=await session.read_clock())
        if command != "read-supply":
            method = _REMOTE_DISCONNECT if command == "disconnect" else _REMOTE_RECONNECT
            await session.action(CLASS_DISCONNECT_CONTROL, disconnect_control, method)
        supply = await read_supply(session, disconnect_control)
    wanted = _WANTED.get(command)
    if wanted is not None and supply.control_state not in wanted:
        raise ProtocolError(f"meter accepted {command} but its control state is {supply.name}")
    return DlmsCommandResult(command, supply=supply)
