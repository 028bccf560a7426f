"""The push simulator's framings and ciphers, received over real TCP and decoded by gxcore."""

from __future__ import annotations

import asyncio

import pytest

from gxami_meterlab.simulators.dlms import dedicated_key, meter_id, meter_security, run_pusher
from gxcore.drivers.dlms.pushes import push_layout
from gxcore.errors import DecryptionError
from gxcore.profiles import ProfileCatalog
from gxcore.protocols.dlms.push import decode_dlms_push

CATALOG = ProfileCatalog()  # loaded once, outside the event loop (YAML and pydantic block it)

SEED = 9


async def _received(**style: object) -> list[bytes]:
    frames: list[bytes] = []

    async def take(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        frames.append(await reader.read())
        writer.close()

    server = await asyncio.start_server(take, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        await run_pusher(2, SEED, [("127.0.0.1", port)], 0.01, asyncio.Event(), pushes=1, **style)  # type: ignore[arg-type]
        while len(frames) < 2:
            await asyncio.sleep(0.01)
    finally:
        server.close()
        await server.wait_closed()
    return sorted(frames)


async def test_hdlc_framed_general_ded_pushes_decode_with_the_dedicated_key() -> None:
    frames = await _received(ciphered=True, interface="hdlc", dedicated=True)
    titles = set()
    for frame in frames:
        assert frame[0] == 0x7E
        (i,) = [i for i in range(2) if meter_security(SEED, i).system_title in frame]
        with pytest.raises(DecryptionError):  # the global key does not open a general-ded push
            decode_dlms_push(
                frame, key=meter_security(SEED, i).block_cipher_key, auth_key=meter_security(SEED, i).authentication_key
            )
        push = decode_dlms_push(frame, key=dedicated_key(SEED, i), auth_key=meter_security(SEED, i).authentication_key)
        titles.add(push.system_title)
        assert push.readings
    assert titles == {meter_security(SEED, i).system_title for i in range(2)}


@pytest.mark.parametrize("style", ["aidon", "kaifa", "kamstrup"])
async def test_han_lists_are_named_by_their_serial_through_the_profile(style: str) -> None:
    frames = await _received(ciphered=False, han=style)
    columns, names = push_layout(CATALOG.get(f"han-{style}"))
    got = {decode_dlms_push(f, columns=columns, names=names).meter_id for f in frames}
    assert got == {meter_id(SEED, 0), meter_id(SEED, 1)}
    assert all(f[0] == 0x7E and b"\xe6\xe7\x00" in f[:12] for f in frames)
