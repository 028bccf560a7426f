"""The sans-IO session against the sans-IO meter model: an in-memory null modem with a fake clock."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

import pytest

from gxami_meterlab.simulators.iec62056_21 import MeterBaudChange, MeterSend, SimulatedIecMeter
from gxcore.errors import ChecksumError, FramingError, MeterTimeoutError, ProtocolError
from gxcore.protocols.iec62056_21 import (
    IdentificationReceived,
    Iec62056Readout,
    Iec62056Session,
    ReadoutReceived,
    SendBytes,
    SessionEvent,
    SessionFailed,
    SessionState,
    SessionTimings,
    SwitchBaudRate,
    decode_iec62056_21_readout,
    encode_data_message,
)

AT = datetime(2024, 6, 1, 8, 30, tzinfo=UTC)
LATENCY = 0.05  # seconds between a message leaving one side and arriving at the other


@dataclass
class NullModem:
    """Carries bytes between session and meter, keeps a clock, and records what happened."""

    session: Iec62056Session
    meter: SimulatedIecMeter
    now: float = 100.0
    chunk: int = 0  # deliver meter bytes in pieces of this size (0: whole messages)
    sent: list[tuple[float, bytes]] = field(default_factory=list)
    session_bauds: list[int] = field(default_factory=list)
    meter_bauds: list[int] = field(default_factory=list)
    events: list[SessionEvent] = field(default_factory=list)

    def run(self) -> Iec62056Readout | Exception:
        pending = self.session.start(self.now)
        for _ in range(100):
            inbound = self._act(pending)
            pending = []
            for data in inbound:
                self.now += LATENCY
                pieces = [data[i : i + self.chunk] for i in range(0, len(data), self.chunk)] if self.chunk else [data]
                for piece in pieces:
                    pending += self.session.receive_data(piece, self.now)
            if self.session.state is SessionState.DONE:
                assert self.session.readout is not None
                self._act(pending)
                return self.session.readout
            if self.session.state is SessionState.FAILED:
                self._act(pending)
                assert self.session.error is not None
                return self.session.error
            if not pending and not inbound:
                deadline = self.session.next_deadline()
                assert deadline is not None, "a waiting session always has a deadline"
                self.now = max(self.now, deadline)
                pending = self.session.handle_timer(self.now)
        raise AssertionError("session did not finish")

    def _act(self, events: list[SessionEvent]) -> list[bytes]:
        inbound: list[bytes] = []
        for event in events:
            self.events.append(event)
            if isinstance(event, SendBytes):
                self.sent.append((self.now, event.data))
                for out in self.meter.receive_data(event.data, AT):
                    if isinstance(out, MeterSend):
                        inbound.append(out.data)
                    elif isinstance(out, MeterBaudChange):
                        self.meter_bauds.append(out.baud)
            elif isinstance(event, SwitchBaudRate):
                self.session_bauds.append(event.baud)
        return inbound


def test_mode_c_readout_negotiates_9600() -> None:
    meter = SimulatedIecMeter(5, 1, baud_char="5")
    modem = NullModem(Iec62056Session(), meter)
    readout = modem.run()
    assert isinstance(readout, Iec62056Readout)
    assert [data for _, data in modem.sent] == [b"/?!\r\n", b"\x06050\r\n"]
    assert modem.session_bauds == [300, 9600]
    assert modem.meter_bauds == [9600]
    assert readout.identification == meter.identification
    assert readout.records == decode_iec62056_21_readout(meter.readout(AT)).records
    assert readout.meter_time == AT
    assert any(isinstance(e, IdentificationReceived) for e in modem.events)
    assert isinstance(modem.events[-1], ReadoutReceived)


def test_ack_waits_the_minimum_reaction_time() -> None:
    for manufacturer, pause in (("GXS", 0.2), ("GXs", 0.02)):
        modem = NullModem(Iec62056Session(), SimulatedIecMeter(1, manufacturer=manufacturer))
        modem.run()
        (t_request, _), (t_ack, _) = modem.sent
        # The identification arrives one latency after the request; the ACK follows after tr min.
        assert t_ack - (t_request + LATENCY) == pytest.approx(pause)


def test_ack_is_not_sent_before_its_time() -> None:
    session = Iec62056Session()
    session.start(0.0)
    events = session.receive_data(b"/GXS5SIM\r\n", 1.0)
    assert [type(e) for e in events] == [IdentificationReceived]
    assert session.next_deadline() == pytest.approx(1.2)
    assert session.handle_timer(1.1) == []
    assert isinstance(session.handle_timer(1.2)[0], SendBytes)


def test_max_baud_caps_the_proposal() -> None:
    modem = NullModem(Iec62056Session(max_baud=2400), SimulatedIecMeter(2, baud_char="6"))
    assert isinstance(modem.run(), Iec62056Readout)
    assert modem.sent[1][1] == b"\x06030\r\n"
    assert modem.meter_bauds == [2400]


def test_mode_b_switches_without_ack() -> None:
    modem = NullModem(Iec62056Session(), SimulatedIecMeter(3, baud_char="E"))
    assert isinstance(modem.run(), Iec62056Readout)
    assert [data for _, data in modem.sent] == [b"/?!\r\n"]
    assert modem.session_bauds == [300, 9600]


def test_mode_a_stays_at_300() -> None:
    modem = NullModem(Iec62056Session(), SimulatedIecMeter(3, baud_char=" "))
    assert isinstance(modem.run(), Iec62056Readout)
    assert modem.session_bauds == [300]
    assert modem.meter_bauds == []


def test_readout_delivered_byte_by_byte() -> None:
    modem = NullModem(Iec62056Session(), SimulatedIecMeter(4), chunk=1)
    readout = modem.run()
    assert isinstance(readout, Iec62056Readout)
    assert len(readout.records) > 5


def test_addressed_request_to_another_meter_times_out() -> None:
    modem = NullModem(Iec62056Session(address="99999999"), SimulatedIecMeter(4, address="12345678"))
    error = modem.run()
    assert isinstance(error, MeterTimeoutError)
    assert "no identification: response timeout" in str(error)
    # 1.5 s answer time plus the time the 13-character request takes at 300 baud.
    assert modem.now == pytest.approx(100.0 + 1.5 + len(b"/?99999999!\r\n") * 10 / 300)


def test_addressed_request_to_the_right_meter() -> None:
    modem = NullModem(Iec62056Session(address="12345678"), SimulatedIecMeter(4, address="12345678"))
    assert isinstance(modem.run(), Iec62056Readout)
    assert modem.sent[0][1] == b"/?12345678!\r\n"


def test_inter_character_timeout_during_readout() -> None:
    session = Iec62056Session(timings=SessionTimings(inter_char_timeout=0.5))
    session.start(0.0)
    session.receive_data(b"/GXS5SIM\r\n", 0.3)
    session.handle_timer(0.5)
    session.receive_data(b"\x021.8.0(0001.000*kWh)\r\n", 0.9)
    assert session.next_deadline() == pytest.approx(1.4)
    assert session.handle_timer(1.39) == []
    (failed,) = session.handle_timer(1.4)
    assert isinstance(failed, SessionFailed)
    assert "inter-character timeout" in str(failed.error)
    assert session.state is SessionState.FAILED


def test_echo_of_the_request_is_skipped() -> None:
    session = Iec62056Session()
    session.start(0.0)
    events = session.receive_data(b"/?!\r\n\x00/GXS5SIM\r\n", 0.3)
    assert isinstance(events[0], IdentificationReceived)


def test_bcc_error_fails_the_session() -> None:
    session = Iec62056Session()
    session.start(0.0)
    session.receive_data(b"/GXS5SIM\r\n", 0.3)
    session.handle_timer(0.5)
    block = bytearray(encode_data_message(["1.8.0(0001.000*kWh)"]))
    block[-1] ^= 0x20
    (failed,) = session.receive_data(bytes(block), 0.8)
    assert isinstance(failed, SessionFailed)
    assert isinstance(failed.error, ChecksumError)
    assert session.receive_data(b"more", 0.9) == []  # a finished session ignores the line


def test_garbage_identification_fails_the_session() -> None:
    session = Iec62056Session()
    session.start(0.0)
    (failed,) = session.receive_data(b"/\x7f\x7f\r\n", 0.3)
    assert isinstance(failed, SessionFailed)
    assert isinstance(failed.error, FramingError)


def test_a_session_starts_once() -> None:
    session = Iec62056Session()
    session.start(0.0)
    with pytest.raises(ProtocolError, match="not allowed"):
        session.start(1.0)
