"""A meter's push (DataNotification) inside a client exchange: set aside, and the reply still read.

The meter side is the real meter core answering our client core; the push is the
simulator's DataNotification (its values, name and clock), addressed to our client or to
the push client, slipped onto the link before the reply, glued to it, after it, or cut in
two across reads. gurux-dlms parsed such a push into the reply object it was handed and
left it unusable: before the fix the reply failed to decode ("reply could not be decoded"),
or an HDLC link fell out of step; a push to another wPort was taken for a foreign reply.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Literal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gxami_meterlab.dlms.notify import PushRegister, encode_push, push_body
from gxami_meterlab.dlms.server import CosemMeterCore
from gxami_meterlab.simulators.dlms import (
    EPOCH,
    IMPORT,
    LOAD_PROFILE,
    PROFILES,
    REGISTERS,
    Household,
    _MeterValues,
    client_security,
    expected_profile,
    expected_register,
    meter_id,
    meter_security,
    push_message,
)
from gxcore.drivers.dlms.reader import DlmsSession
from gxcore.errors import GxError, ProtocolError
from gxcore.protocols.dlms import CosemValue, DlmsParameters, ProfileRange, hdlc, wrapper
from gxcore.protocols.dlms.invocation import MemoryInvocationCounters
from gxcore.protocols.dlms.parameters import DlmsSecurity, Interface
from gxcore.protocols.dlms.profile import decode_rows, encode_range_selection, parse_capture_objects
from gxcore.protocols.dlms.push import decode_dlms_push
from gxcore.protocols.dlms.session import DlmsClientCore, Exchange
from gxcore.protocols.dlms.unsolicited import PushHandler
from gxcore.secrets import Secret

SEED, INDEX = 5, 2
NOW = datetime(2024, 6, 1, 12, 34, 56, tzinfo=UTC)
PUSHED_AT = datetime(2024, 6, 1, 12, 30, tzinfo=UTC)
Where = Literal["before", "glued", "after", "split"]
WHERE: tuple[Where, ...] = ("before", "glued", "after", "split")
PUSH_CLIENT = 102  # where the simulator's pushes go


def meter_push(
    destination: int,
    *,
    interface: Interface = "wrapper",
    security: DlmsSecurity | None = None,
    dedicated_key: Secret | None = None,
) -> bytes:
    """The simulator meter's DataNotification at PUSHED_AT (as :func:`push_message` builds it) to ``destination``."""
    house, t = Household.of(SEED, INDEX), int((PUSHED_AT - EPOCH).total_seconds())
    registers = [PushRegister(r.obis, house.raw(r.obis, t), r.data_type, r.scaler, r.unit) for r in REGISTERS]
    body = push_body(registers, name=meter_id(SEED, INDEX).encode(), clock=PUSHED_AT)
    return encode_push(
        body,
        at=PUSHED_AT,
        security=security,
        dedicated_key=dedicated_key,
        interface=interface,
        destination=destination,
    )


@pytest.mark.parametrize("interface", ["wrapper", "hdlc"])
def test_the_pushes_here_are_the_simulators_own(interface: Interface) -> None:
    assert meter_push(PUSH_CLIENT, interface=interface) == push_message(SEED, INDEX, PUSHED_AT, interface=interface)
    frame = meter_push(16)
    used, parsed = wrapper.decode(frame)
    assert used == len(frame) and parsed is not None
    assert (parsed.source, parsed.destination, parsed.apdu[0]) == (1, 16, 0x0F)


class PushingLink:
    """The real meter core on the far end; on the way back, ``push`` is slipped onto the link.

    ``before``: a read of its own ahead of the reply; ``glued``: in the reply's read, ahead
    of it; ``after``: in the reply's read, behind it; ``split``: its first half behind the
    reply, the rest at the start of the next read.
    """

    def __init__(self, meter: CosemMeterCore, push: bytes, where: Where) -> None:
        self.meter = meter
        self.push = push
        self.where = where
        self.pushing = False
        self.pushed = 0
        self._pending = b""

    def reads(self, request: bytes) -> list[bytes]:
        reply = self.meter.receive_data(request, NOW)
        head, self._pending = self._pending, b""
        if not self.pushing:
            return [head + reply]
        push = self.push
        self.pushed += 1
        if self.where == "before":
            return [head + push, reply]
        if self.where == "glued":
            return [head + push + reply]
        if self.where == "after":
            return [head + reply + push]
        cut = len(push) // 2
        self._pending = push[cut:]
        return [head + reply + push[:cut]]


def run(exchange: Exchange, link: PushingLink) -> Exchange:
    for _ in range(500):
        if exchange.done:
            return exchange
        for data in link.reads(exchange.data_to_send()):
            exchange.receive_data(data, 0.0)
    raise AssertionError("exchange did not complete")


def connect(link: PushingLink, params: DlmsParameters, on_push: PushHandler | None) -> DlmsClientCore:
    core = DlmsClientCore(params, counters=MemoryInvocationCounters(), on_push=on_push)
    snrm = core.open_link()
    if snrm is not None:
        core.check_link(run(snrm, link))
    core.check_association(run(core.associate(), link))
    return core


def register_and_profile(core: DlmsClientCore, link: PushingLink) -> None:
    """A register, then a one-day load profile (several blocks, several HDLC segments)."""
    raw = run(core.get(3, IMPORT, 2), link).value()
    assert raw == expected_register(SEED, INDEX, IMPORT, NOW)
    columns = parse_capture_objects(run(core.get(7, LOAD_PROFILE, 3), link).value())
    start = NOW.replace(microsecond=0) - timedelta(days=1)
    selection = encode_range_selection(columns[0], start, NOW)
    rows = decode_rows(run(core.get(7, LOAD_PROFILE, 2, selection), link).value(), columns, None)
    got = [(at, {"1-0:1.8.0": r[1], "1-0:2.8.0": r[2]}) for at, r in rows]  # Wh, scaler 0
    assert got == expected_profile(SEED, INDEX, start, NOW)


@pytest.mark.parametrize("destination", [16, PUSH_CLIENT])
@pytest.mark.parametrize("where", WHERE)
@pytest.mark.parametrize("interface", ["wrapper", "hdlc"])
def test_a_push_inside_an_exchange_is_set_aside_and_the_reply_read(
    interface: Interface, where: Where, destination: int
) -> None:
    meter = CosemMeterCore(_MeterValues(SEED, INDEX), REGISTERS, PROFILES, max_pdu=256, interface=interface)
    push = meter_push(destination, interface=interface)
    link = PushingLink(meter, push, where)
    received: list[bytes] = []
    core = connect(link, DlmsParameters(max_pdu=256, interface=interface), received.append)
    link.pushing = True
    register_and_profile(core, link)
    # The next exchange, with the link quiet again, works too (and takes in a push cut in two).
    link.pushing = False
    assert run(core.get(3, IMPORT, 3), link).value() == [0, 30]
    assert link.pushed > 3
    assert received == [push] * link.pushed
    assert core.pushes_set_aside == link.pushed
    pushed = decode_dlms_push(received[0])
    assert pushed.meter_id == meter_id(SEED, INDEX)
    assert {r.quantity: r.value for r in pushed.readings}["1-0:1.8.0"] == expected_register(
        SEED, INDEX, IMPORT, PUSHED_AT
    )


def test_a_short_push_to_our_client_before_each_reply() -> None:
    meter = CosemMeterCore(_MeterValues(SEED, INDEX), REGISTERS, PROFILES)
    push = encode_push(push_body([PushRegister(IMPORT, 7)]), at=PUSHED_AT, destination=16)
    link = PushingLink(meter, push, "before")
    core = connect(link, DlmsParameters(), None)
    link.pushing = True
    for _ in range(3):
        assert run(core.get(3, IMPORT, 3), link).value() == [0, 30]
    assert core.pushes_set_aside == 3


def _ciphered_pushes() -> dict[str, bytes]:
    """Pushes to our client (address 1, the management client) ciphered every way a meter may."""
    dedicated = Secret(bytes(range(0x40, 0x50)))
    keys = {policy: meter_security(SEED, INDEX, policy) for policy in ("authenticated-encrypted", "encrypted")}
    return {
        "plain": meter_push(1),
        "glo authenticated-encrypted": meter_push(1, security=keys["authenticated-encrypted"]),
        "glo encrypted": meter_push(1, security=keys["encrypted"]),
        "glo authenticated": meter_push(1, security=meter_security(SEED, INDEX, "authenticated")),
        "ded": meter_push(1, security=keys["authenticated-encrypted"], dedicated_key=dedicated),
        "to the push client": meter_push(PUSH_CLIENT, security=keys["authenticated-encrypted"]),
    }


@pytest.mark.parametrize("kind", sorted(_ciphered_pushes()))
@pytest.mark.parametrize("where", ["glued", "after"])
def test_ciphered_pushes_inside_a_ciphered_session(kind: str, where: Where) -> None:
    """Replies are general-glo-ciphered too here: only the plaintext's first byte tells them apart."""
    meter = CosemMeterCore(
        _MeterValues(SEED, INDEX),
        REGISTERS,
        PROFILES,
        authentication="high-gmac",
        security=meter_security(SEED, INDEX),
        max_pdu=256,
    )
    push = _ciphered_pushes()[kind]
    link = PushingLink(meter, push, where)
    received: list[bytes] = []
    params = DlmsParameters(
        client_address=1, authentication="high-gmac", security=client_security(SEED, INDEX), max_pdu=256
    )
    core = connect(link, params, received.append)
    core.check_authentication(run(core.authenticate(), link))
    link.pushing = True
    register_and_profile(core, link)
    assert received == [push] * link.pushed
    if kind == "glo authenticated-encrypted":
        keys = meter_security(SEED, INDEX)
        readings = decode_dlms_push(received[-1], key=keys.block_cipher_key, auth_key=keys.authentication_key)
        assert readings.meter_id == meter_id(SEED, INDEX)


CIPHERED = DlmsParameters(client_address=1, authentication="high-gmac", security=client_security(SEED, INDEX))


@given(
    st.one_of(
        st.binary(min_size=1, max_size=200),
        st.builds(lambda tag, body: bytes([tag]) + body, st.sampled_from([0xDB, 0xDC, 0x0F, 0xC2]), st.binary()),
        st.builds(lambda body: b"\xdb\x08" + bytes(8) + body, st.binary(max_size=60)),
    )
)
def test_any_apdu_is_set_aside_or_raises_only_gxcore_errors(apdu: bytes) -> None:
    core = DlmsClientCore(CIPHERED, counters=MemoryInvocationCounters())
    exchange = core.get(3, IMPORT, 2)
    exchange.data_to_send()
    try:
        exchange.receive_data(wrapper.encode(1, 1, apdu), 0.0)
    except GxError:
        return
    # Set aside, or taken as (a block of) the reply: then complete, or asking for the next block.
    assert core.pushes_set_aside == 1 or exchange.done or exchange.data_to_send()


@given(st.binary(max_size=120), st.sampled_from([0x03, 0x13]))
def test_any_hdlc_ui_frame_is_set_aside(info: bytes, control: int) -> None:
    core = DlmsClientCore(dataclasses.replace(CIPHERED, interface="hdlc"), counters=MemoryInvocationCounters())
    exchange = core.get(3, IMPORT, 2)
    exchange.data_to_send()
    dest, src = hdlc.encode_address(1), hdlc.encode_address(1)
    length = 2 + len(dest) + len(src) + 1 + (2 + len(info) if info else 0) + 2
    head = bytes([0xA0 | (length >> 8), length & 0xFF]) + dest + src + bytes([control])
    body = head + (hdlc.fcs16(head).to_bytes(2, "little") + info if info else b"")
    exchange.receive_data(b"\x7e" + body + hdlc.fcs16(body).to_bytes(2, "little") + b"\x7e", 0.0)
    assert core.pushes_set_aside == 1 and not exchange.done


def test_a_stray_reply_after_the_reply_is_still_refused() -> None:
    meter = CosemMeterCore(_MeterValues(SEED, INDEX), REGISTERS, PROFILES)
    link = PushingLink(meter, b"", "before")
    core = connect(link, DlmsParameters(), None)
    exchange = core.get(3, IMPORT, 3)
    reply = meter.receive_data(exchange.data_to_send(), NOW)
    with pytest.raises(ProtocolError, match="bytes after the last reply frame"):
        exchange.receive_data(reply + reply, 0.0)


def test_without_a_handler_a_push_is_counted_and_logged_without_its_content(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="gxcore.protocols.dlms")
    meter = CosemMeterCore(
        _MeterValues(SEED, INDEX), REGISTERS, PROFILES, authentication="high-gmac", security=meter_security(SEED, INDEX)
    )
    push = meter_push(1, security=meter_security(SEED, INDEX, "authenticated"))  # the body travels in clear
    link = PushingLink(meter, push, "before")
    security = client_security(SEED, INDEX)
    core = connect(link, DlmsParameters(client_address=1, authentication="high-gmac", security=security), None)
    core.check_authentication(run(core.authenticate(), link))
    link.pushing = True
    assert run(core.get(3, IMPORT, 3), link).value() == [0, 30]
    assert core.pushes_set_aside == 1
    assert f"protected data-notification of {len(push)} bytes" in caplog.text
    shown = caplog.text.lower()
    assert meter_id(SEED, INDEX).lower() not in shown
    assert push[-12:].hex() not in shown.replace(" ", "")
    for secret in (security.block_cipher_key, security.authentication_key):
        assert secret.reveal().hex() not in shown


# -- over TCP, through the session and the reader -----------------------------------------------
@asynccontextmanager
async def pushing_meter(push: Callable[[], bytes], *, glued: bool) -> AsyncIterator[int]:
    """A TCP meter (the real meter core) that pushes ahead of every reply; yields its port."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        core = CosemMeterCore(_MeterValues(SEED, INDEX), REGISTERS, PROFILES, max_pdu=512)
        try:
            while data := await reader.read(65536):
                reply = core.receive_data(data, NOW)
                if not reply:
                    continue
                if glued:
                    writer.write(push() + reply)
                else:
                    writer.write(push())
                    await writer.drain()
                    await asyncio.sleep(0.01)  # its own TCP segment, most likely its own read
                    writer.write(reply)
                await writer.drain()
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()


@pytest.mark.parametrize("glued", [False, True])
async def test_session_over_tcp_with_a_meter_that_pushes_all_the_time(glued: bool) -> None:
    pushed: list[bytes] = []

    def push() -> bytes:
        at = PUSHED_AT + timedelta(minutes=len(pushed))
        pushed.append(encode_push(push_body([PushRegister(IMPORT, len(pushed))]), at=at, destination=16))
        return pushed[-1]

    received: list[bytes] = []
    start = NOW.replace(microsecond=0) - timedelta(hours=6)
    async with (
        pushing_meter(push, glued=glued) as port,
        DlmsSession(f"tcp://127.0.0.1:{port}", DlmsParameters(max_pdu=512), timeout=2, on_push=received.append) as s,
    ):
        meter_time = await s.read_clock()
        registers = {CosemValue(r.obis).quantity: (await s.read_value(CosemValue(r.obis)))[0] for r in REGISTERS}
        profile = await s.read_profile(ProfileRange(LOAD_PROFILE, start, NOW.replace(microsecond=0)))
    assert meter_time == NOW.replace(microsecond=0)
    assert registers == {q: expected_register(SEED, INDEX, q, NOW) for q in registers}
    assert len(registers) == len(REGISTERS)
    rows: dict[datetime, dict[str, float]] = {}
    for r in profile:
        rows.setdefault(r.timestamp, {})[r.quantity] = r.value
    assert sorted(rows.items()) == expected_profile(SEED, INDEX, start, NOW.replace(microsecond=0))
    assert received == pushed  # every push handed on, in order, none lost or doubled
    assert [decode_dlms_push(p).timestamp for p in received[:2]] == [PUSHED_AT, PUSHED_AT + timedelta(minutes=1)]


async def test_a_session_without_a_handler_counts_the_pushes() -> None:
    async with (
        pushing_meter(lambda: meter_push(16), glued=True) as port,
        DlmsSession(f"tcp://127.0.0.1:{port}", DlmsParameters(), timeout=2) as session,
    ):
        first = await session.get(3, IMPORT, 2)
        second = await session.get(3, IMPORT, 2)
        assert first == second == expected_register(SEED, INDEX, IMPORT, NOW)
        assert session.core.pushes_set_aside == 3  # the AARE's, and one per GET
        assert not session.broken
