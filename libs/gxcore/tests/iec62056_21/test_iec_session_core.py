"""SessionCore: the session's events as the driver loop's queue, speed changes in their place (fake clock)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from gxami_meterlab.simulators.iec62056_21 import MeterSend, SimulatedIecMeter
from gxcore.errors import MeterTimeoutError, ProtocolError
from gxcore.protocols.iec62056_21 import Iec62056Session, SessionCore, SessionTimings

AT = datetime(2024, 6, 1, 8, 30, tzinfo=UTC)


def meter_reply(meter: SimulatedIecMeter, data: bytes) -> bytes:
    return b"".join(o.data for o in meter.receive_data(data, AT) if isinstance(o, MeterSend))


def test_mode_c_queue_holds_each_byte_until_its_speed_is_set() -> None:
    meter = SimulatedIecMeter(3, 0)
    core = SessionCore(Iec62056Session(), now=10.0)
    assert core.data_to_send() == b""  # 300 Bd first: nothing may leave before it is set
    assert core.take_baud() == 300
    request = core.data_to_send()
    assert request == b"/?!\r\n"
    assert core.take_baud() is None
    core.receive_data(meter_reply(meter, request), now=10.5)
    assert not core.done
    deadline = core.next_deadline()
    assert deadline == pytest.approx(10.5 + 0.2)  # the reaction time before our ACK
    core.handle_timeout(deadline)
    ack = core.data_to_send()
    assert ack == b"\x06050\r\n"
    assert core.take_baud() == 9600  # after the ACK has left, before the readout comes
    assert core.data_to_send() == b""
    core.receive_data(meter_reply(meter, ack), now=11.0)
    assert core.done
    assert core.result().identification == meter.identification


def test_timeouts_end_the_core_with_the_sessions_error() -> None:
    core = SessionCore(Iec62056Session(timings=SessionTimings(response_timeout=0.5)), now=0.0)
    core.take_baud()
    core.data_to_send()
    deadline = core.next_deadline()
    assert deadline is not None
    core.handle_timeout(deadline - 0.01)  # early: nothing happens
    assert not core.done
    core.handle_timeout(deadline)
    assert core.done
    with pytest.raises(MeterTimeoutError, match="no identification: response timeout"):
        core.result()


def test_result_before_the_end_is_a_protocol_error() -> None:
    core = SessionCore(Iec62056Session(), now=0.0)
    with pytest.raises(ProtocolError, match="not finished"):
        core.result()
