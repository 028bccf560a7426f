"""The sans-IO master against the simulated bus: reads, FCB, multi-telegram, search, timeouts."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from gxami_meterlab.simulators.mbus import MBusBus
from gxcore.errors import MeterTimeoutError, ProtocolError
from gxcore.protocols.mbus.frame import FCB, SecondaryAddress, ShortFrame, decode_frame, snd_nke
from gxcore.protocols.mbus.master import (
    Event,
    Failed,
    MasterConfig,
    MBusMaster,
    ReadComplete,
    SearchComplete,
    State,
)

Peer = Callable[[bytes], bytes | None]


class Wire:
    """An in-memory bus between the master and a peer, with a trace of every request."""

    def __init__(self, peer: Peer) -> None:
        self.peer = peer
        self.requests: list[bytes] = []

    def run(self, master: MBusMaster, now: float = 0.0, limit: int = 20_000) -> tuple[Event, float]:
        for _ in range(limit):
            event = master.next_event()
            if event is not None:
                return event, now
            out = master.data_to_send()
            if out:
                self.requests.append(out)
                reply = self.peer(out)
                if reply:
                    master.receive_data(reply, now)
                    continue
            deadline = master.next_deadline()
            assert deadline is not None, "master waits for nothing but has no event"
            now = deadline
            master.handle_timeout(now)
        raise AssertionError("operation did not finish")

    def req_ud2_fcbs(self) -> list[bool]:
        fcbs = []
        for request in self.requests:
            _, frame = decode_frame(request)
            if isinstance(frame, ShortFrame) and frame.control & 0xCF == 0x4B:
                fcbs.append(bool(frame.control & FCB))
        return fcbs


@pytest.fixture
def bus() -> MBusBus:
    return MBusBus(seed=7, count=12)


def test_read_by_primary_address(bus: MBusBus) -> None:
    wire = Wire(bus.respond)
    master = MBusMaster()
    master.read_primary(1, now=0.0)
    event, _ = wire.run(master)
    assert isinstance(event, ReadComplete)
    assert len(event.telegrams) == 1
    telegram = event.telegrams[0]
    assert telegram.secondary_address == str(bus.meters[0].secondary)
    assert any(r.quantity == "6-0:1.0.0" for r in telegram.records)
    assert wire.requests[0] == snd_nke(1)
    assert master.state is State.IDLE
    assert master.next_deadline() is None


def test_multi_telegram_read_toggles_fcb(bus: MBusBus) -> None:
    wire = Wire(bus.respond)
    master = MBusMaster()
    master.read_primary(4, now=0.0)  # index 3: the heat meter with monthly history
    event, _ = wire.run(master)
    assert isinstance(event, ReadComplete)
    assert not event.truncated
    assert [t.more_records_follow for t in event.telegrams] == [True, True, False]
    assert wire.req_ud2_fcbs() == [True, False, True]
    storages = sorted(r.storage for t in event.telegrams for r in t.records if r.description == "Energy")
    assert storages == list(range(13))


def test_lost_reply_is_retried_with_the_same_fcb_and_the_slave_repeats(bus: MBusBus) -> None:
    dropped = {"count": 0}

    def lossy(request: bytes) -> bytes | None:
        reply = bus.respond(request)
        _, frame = decode_frame(request)
        # lose the reply to the second REQ_UD2 once: the slave has sent telegram 2 already
        if isinstance(frame, ShortFrame) and frame.control == 0x5B and dropped["count"] == 0:
            dropped["count"] += 1
            return None
        return reply

    wire = Wire(lossy)
    master = MBusMaster(MasterConfig(reply_timeout=0.3))
    master.read_primary(4, now=100.0)
    event, now = wire.run(master, now=100.0)
    assert isinstance(event, ReadComplete)
    assert [t.more_records_follow for t in event.telegrams] == [True, True, False]
    assert wire.req_ud2_fcbs() == [True, False, False, True]
    assert now == pytest.approx(100.3)  # exactly one reply window passed


def test_max_telegrams_bounds_a_long_reply(bus: MBusBus) -> None:
    master = MBusMaster(MasterConfig(max_telegrams=2))
    master.read_primary(4, now=0.0)
    event, _ = Wire(bus.respond).run(master)
    assert isinstance(event, ReadComplete)
    assert event.truncated
    assert len(event.telegrams) == 2


def test_silent_meter_times_out_after_retries(bus: MBusBus) -> None:
    master = MBusMaster(MasterConfig(reply_timeout=0.5, retries=2))
    master.read_primary(200, now=10.0)
    assert master.next_deadline() == pytest.approx(10.5)
    master.handle_timeout(10.2)  # too early: nothing happens
    assert master.next_event() is None
    wire = Wire(bus.respond)
    event, now = wire.run(master, now=10.0)
    assert isinstance(event, Failed)
    assert isinstance(event.error, MeterTimeoutError)
    assert now == pytest.approx(11.5)  # three SND_NKE windows
    assert wire.requests == [snd_nke(200)] * 3  # the request and its two retries, byte for byte


def test_garbled_replies_fail_as_protocol_error() -> None:
    def noisy(request: bytes) -> bytes | None:
        return b"\x68\x05\x05\x68\x08\x01"  # a long frame that never completes

    master = MBusMaster(MasterConfig(retries=1))
    master.read_primary(1, now=0.0)
    event, _ = Wire(noisy).run(master)
    assert isinstance(event, Failed)
    assert isinstance(event.error, ProtocolError)


def test_a_babbling_line_cannot_hold_the_reply_window_open() -> None:
    master = MBusMaster(MasterConfig(reply_timeout=0.5, transfer_time=1.0, retries=0))
    master.read_primary(1, now=0.0)
    master.data_to_send()
    now = 0.0
    while master.next_event() is None:
        now += 0.1
        assert now < 5, "window never closed"
        master.receive_data(b"\x68\x80\x80\x68", now)  # an endless stream of frame beginnings
        master.handle_timeout(now)
    assert now <= 1.5 + 1e-9


def test_read_by_secondary_address(bus: MBusBus) -> None:
    target = bus.meters[2].secondary
    master = MBusMaster()
    master.read_secondary(str(target), now=0.0)
    event, _ = Wire(bus.respond).run(master)
    assert isinstance(event, ReadComplete)
    telegram = event.telegrams[0]
    assert telegram.secondary_address == str(target)
    assert {r.quantity for r in telegram.records} >= {"1-0:1.8.0", "1-0:2.8.0", "1-0:32.7.0", "1-0:72.7.0"}


def test_secondary_wildcard_matching_several_meters_is_a_collision(bus: MBusBus) -> None:
    shared = bus.meters[0].secondary.id_digits[:7] + "F"
    master = MBusMaster()
    master.read_secondary(f"{shared}FFFFFFFF", now=0.0)
    event, _ = Wire(bus.respond).run(master)
    assert isinstance(event, Failed)
    assert isinstance(event.error, ProtocolError)


def test_unknown_secondary_address_times_out(bus: MBusBus) -> None:
    master = MBusMaster(MasterConfig(retries=0))
    master.read_secondary("99999999FFFFFFFF", now=0.0)
    event, _ = Wire(bus.respond).run(master)
    assert isinstance(event, Failed)
    assert isinstance(event.error, MeterTimeoutError)


def test_wildcard_search_finds_every_meter_despite_collisions(bus: MBusBus) -> None:
    master = MBusMaster(MasterConfig(reply_timeout=0.2))
    master.search(now=0.0)
    wire = Wire(bus.respond)
    event, now = wire.run(master)
    assert isinstance(event, SearchComplete)
    assert sorted(map(str, event.found)) == sorted(str(m.secondary) for m in bus.meters)
    assert event.unresolved == ()
    selections = [r for r in wire.requests if r[0] == 0x68 and r[6] == 0x52]
    # meters share 7 leading digits in pairs, so the search had to descend to the last digit
    assert any(SecondaryAddress.from_bytes(s[7:15]).first_wildcard() is None for s in selections)
    assert now > 0  # empty branches cost their timeouts, passed in as time


def test_search_below_a_mask_and_on_an_empty_branch(bus: MBusBus) -> None:
    prefix = bus.meters[6].secondary.id_digits[:4]
    master = MBusMaster(MasterConfig(reply_timeout=0.2))
    master.search(now=0.0, mask=SecondaryAddress.parse(prefix + "FFFFFFFFFFFF"))
    event, _ = Wire(bus.respond).run(master)
    assert isinstance(event, SearchComplete)
    expected = sorted(str(m.secondary) for m in bus.meters if m.secondary.id_digits.startswith(prefix))
    assert sorted(map(str, event.found)) == expected
    master.search(now=0.0, mask=SecondaryAddress.parse("0000FFFFFFFFFFFF"))
    event, _ = Wire(bus.respond).run(master)
    assert event == SearchComplete(found=(), unresolved=())


def test_identical_ids_are_reported_unresolved() -> None:
    twin = MBusBus(seed=1, count=2)
    # Give both slaves the same secondary address: no digit can tell them apart.
    object.__setattr__(twin.meters[1], "secondary", twin.meters[0].secondary)
    master = MBusMaster(MasterConfig(reply_timeout=0.1))
    master.search(now=0.0)
    event, _ = Wire(twin.respond).run(master)
    assert isinstance(event, SearchComplete)
    twin_id = twin.meters[0].secondary.id_digits
    assert event.found == ()
    assert [str(u) for u in event.unresolved] == [twin_id + "FFFFFFFF"]


def test_one_operation_at_a_time(bus: MBusBus) -> None:
    master = MBusMaster()
    master.read_primary(1, now=0.0)
    with pytest.raises(ProtocolError, match="busy"):
        master.read_primary(2, now=0.0)
    with pytest.raises(ValueError, match="primary address"):
        MBusMaster().read_primary(251, now=0.0)
