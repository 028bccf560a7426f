"""FirstTelegram: the P1 wait as a driver-loop core, driven with a fake clock."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from gxami_meterlab.simulators.dsmr import SimulatedP1Meter
from gxcore.errors import DecryptionError, MeterTimeoutError
from gxcore.protocols.dsmr import P1Reader, SmartyReader
from gxcore.protocols.dsmr.first import FirstTelegram
from gxcore.secrets import Secret

AT = datetime(2024, 3, 5, 14, 7, 30, tzinfo=UTC)
KEY = Secret(bytes(range(16)))


def test_done_at_the_first_good_telegram_sending_nothing() -> None:
    raw = SimulatedP1Meter(3, 0, variant="5.0").telegram_at(AT)
    core = FirstTelegram(P1Reader(), now=0.0, wait=10.0, meter_id="p1")
    assert core.data_to_send() == b""
    assert core.next_deadline() == 10.0
    core.receive_data(raw[:100], now=1.0)
    assert not core.done
    core.receive_data(raw[100:], now=1.1)
    assert core.done
    assert core.next_deadline() is None
    assert core.result().timestamp == AT


def test_a_damaged_telegram_is_named_when_the_wait_runs_out() -> None:
    raw = bytearray(SimulatedP1Meter(3, 0, variant="5.0").telegram_at(AT))
    raw[20] ^= 0x01  # CRC no longer matches
    core = FirstTelegram(P1Reader(), now=0.0, wait=2.0, meter_id="p1")
    core.receive_data(bytes(raw), now=0.5)
    core.handle_timeout(2.0)
    with pytest.raises(MeterTimeoutError, match=r"no valid P1 telegram within 2 s; last error: .*CRC") as info:
        core.result()
    assert info.value.meter_id == "p1"


def test_two_frames_failing_authentication_end_the_wait_at_once() -> None:
    meter = SimulatedP1Meter(3, 0, variant="smarty")
    wrong = Secret(bytes(16))
    core = FirstTelegram(SmartyReader(wrong), now=0.0, wait=60.0)
    core.receive_data(meter.smarty_frame_at(AT, KEY), now=1.0)
    assert not core.done  # one bad frame may be one cut at connect
    core.receive_data(meter.smarty_frame_at(AT, KEY), now=2.0)
    assert core.done
    with pytest.raises(DecryptionError):
        core.result()
