"""What a receiver heard: link header and security without a key, and the listening loop over a memory pair."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest

from gxami_meterlab.simulators.wmbus import WMBusFeedServer, WMBusTelegramGenerator
from gxcore.drivers.wmbus_receiver import receive_telegrams
from gxcore.errors import MediaError, MeterTimeoutError
from gxcore.media import memory_pair
from gxcore.protocols.wmbus import decode_wmbus_telegram
from gxcore.protocols.wmbus.heard import HeardMeters, HeardTelegram, ReceiverCore, hear, security_of
from gxcore.protocols.wmbus.receivers import ReceivedFrame, Skipped

AT = datetime(2024, 1, 15, 12, 0, tzinfo=UTC)
GEN = WMBusTelegramGenerator(seed=6, count=4)
# lvogt/wireless-mbus-parser "Long Header - Encrypted Mode 5" (CI 0x72, link and TPL ID 57000044, AMB).
LONG_MODE5 = bytes.fromhex(
    "4644A205440000570C377244000057A2050C37A3003005D898C64FD0C9BD2634365084E4DF946736C71A2103E45A190CAA1A49"
    "B602E46C9F45FCEE79AFBE34F0C167FD857F659E"
)


async def collect(telegrams: AsyncIterator[HeardTelegram], into: list[HeardTelegram], *, within: float = 5) -> None:
    async with asyncio.timeout(within):
        async for telegram in telegrams:
            into.append(telegram)


def test_hear_reads_the_link_header_and_security_without_a_key() -> None:
    for meter in GEN.meters:
        heard = hear(ReceivedFrame(GEN.telegram(meter.index, AT), 7, "auto", rssi_raw=3), now=1.5)
        assert (heard.id, heard.manufacturer, heard.link.device_type) == (meter.id, "GXW", 0x07)
        assert heard.encrypted is (meter.key is not None)
        assert heard.security_mode == (5 if meter.key is not None else 0)
        assert (heard.offset, heard.received_at, heard.rssi_raw) == (7, 1.5, 3)
        decoded = decode_wmbus_telegram(heard.raw, meter.key, crc=heard.crc)  # decrypted later, per meter
        assert decoded.id == meter.id
    assert security_of(LONG_MODE5) == (True, 5)


def test_the_core_is_done_while_it_holds_telegrams_and_times_out_when_quiet() -> None:
    seen: list[Skipped] = []
    core = ReceiverCore("hex", now=0.0, idle_timeout=5.0, on_skipped=seen.append)
    line = GEN.telegram(1, AT).hex().encode() + b"\n"
    core.receive_data(b"junk\n" + line + b"0011\n", now=1.0)
    assert core.done
    assert [t.id for t in core.take()] == [GEN.meters[1].id]
    assert not core.done and core.next_deadline() == 6.0
    assert core.skipped == {"garbage": 2} and [s.offset for s in seen] == [0, 5 + len(line)]
    core.handle_timeout(5.9)
    assert not core.done
    core.handle_timeout(6.0)
    assert isinstance(core.error, MeterTimeoutError) and "quiet for 5 s" in str(core.error)


@pytest.mark.parametrize("framing", ["hex", "length", "lfield", "im871a", "amber"])
async def test_receive_telegrams_over_a_memory_pair_yields_every_telegram_then_the_hang_up(framing: str) -> None:
    server = WMBusFeedServer(GEN, framing=framing, junk=True)  # type: ignore[arg-type]  # parametrized framings
    near, far = memory_pair()
    stream = b"".join(server._frame(i, AT, i) for i in range(4))  # the simulator's own encoding, junk included
    skipped: list[Skipped] = []
    await far.send(stream[:17])
    await far.send(stream[17:])
    await far.close()
    heard: list[HeardTelegram] = []
    telegrams = receive_telegrams(near, framing, idle_timeout=2.0, on_skipped=skipped.append)  # type: ignore[arg-type]
    with pytest.raises(MediaError):
        await collect(telegrams, heard)
    assert [t.id for t in heard] == [m.id for m in GEN.meters]
    assert [t.encrypted for t in heard] == [True, False, True, False]
    if framing in ("im871a", "amber"):
        assert [t.rssi_raw for t in heard] == [GEN.rssi_of(i) for i in range(4)]
    assert skipped  # the junk was reported, and did not stop the listening
    await near.close()


async def test_a_quiet_receiver_ends_the_listening_with_a_timeout() -> None:
    near, far = memory_pair()
    await far.send(GEN.telegram(0, AT).hex().encode() + b"\n")
    heard: list[HeardTelegram] = []
    with pytest.raises(MeterTimeoutError, match="quiet"):
        await collect(receive_telegrams(near, "hex", idle_timeout=0.2), heard)
    assert [t.id for t in heard] == [GEN.meters[0].id]
    await near.close()
    await far.close()


def test_heard_meters_tally_per_id_and_stay_bounded() -> None:
    tally = HeardMeters(limit=2)
    for n in range(3):
        for index in range(3):
            tally.add(hear(ReceivedFrame(GEN.telegram(index, AT), 0, "auto", rssi_raw=n), now=float(n)))
    assert list(tally.meters) == [GEN.meters[0].id, GEN.meters[1].id]  # the third ID did not fit: counted only
    assert [m.count for m in tally.meters.values()] == [3, 3] and tally.dropped == 3 and tally.telegrams == 9
    first = tally.meters[GEN.meters[0].id].to_json_dict()
    assert first["encrypted"] is True and first["security_mode"] == 5 and first["last_rssi_raw"] == 2
    assert (first["manufacturer"], first["type"], first["medium"]) == ("GXW", 7, "water")
