"""A TCP proxy in front of one DLMS meter (wrapper framing) that sees, and can lose, every client frame.

Tests put it between a client and a simulated meter to lose a request on the way (the
client sent it, the meter never got it) or to hold one in flight while the client is
killed. :func:`carried_nonces` reads the (system title, invocation counter) pairs a frame
carries in the clear: the security header of a ciphered xDLMS APDU, and the ciphered
InitiateRequest inside an AARQ (whose calling-AP-title names the client's system title,
which glo-ciphered APDUs after it do not repeat).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field

from gxcore.errors import GxError
from gxcore.protocols.dlms import wrapper
from gxcore.protocols.dlms.ciphering import CIPHERED_TAGS, parse_ciphered_apdu, read_length

AARQ: int = 0x60
_CALLING_AP_TITLE, _USER_INFORMATION = 0xA6, 0xBE


def _ber_fields(apdu: bytes) -> dict[int, bytes]:
    """The top-level fields of an AARQ (tag -> value); an empty map for what does not parse."""
    out: dict[int, bytes] = {}
    try:
        length, at = read_length(apdu, 1, "AARQ")
        end = min(at + length, len(apdu))
        while at < end:
            tag = apdu[at]
            size, at = read_length(apdu, at + 1, "AARQ field")
            out[tag] = apdu[at : at + size]
            at += size
    except GxError:
        return out
    return out


def _octets(value: bytes) -> bytes | None:
    """The contents of an OCTET STRING (04 L ...), or None."""
    if not value or value[0] != 0x04:
        return None
    try:
        size, at = read_length(value, 1, "octet string")
    except GxError:
        return None
    return value[at : at + size]


def carried_nonces(apdu: bytes, client_title: bytes | None) -> tuple[bytes | None, list[tuple[bytes, int]]]:
    """The client's system title (learnt from an AARQ, else ``client_title``) and the pairs ``apdu`` carries."""
    if not apdu:
        return client_title, []
    if apdu[0] == AARQ:
        fields = _ber_fields(apdu)
        title = _octets(fields.get(_CALLING_AP_TITLE, b"")) or client_title
        inner = _octets(fields.get(_USER_INFORMATION, b""))
        if title is None or not inner or inner[0] not in CIPHERED_TAGS:
            return title, []
        try:
            head = parse_ciphered_apdu(inner)
        except GxError:
            return title, []
        return title, [(head.system_title or title, head.invocation_counter)]
    if apdu[0] not in CIPHERED_TAGS:
        return client_title, []
    try:
        head = parse_ciphered_apdu(apdu)
    except GxError:
        return client_title, []
    title = head.system_title or client_title
    return client_title, [(title, head.invocation_counter)] if title is not None else []


@dataclass(slots=True)
class DlmsWireTap:
    """Forwards ``host:port`` -> the meter at ``meter_port``; ``lose(apdu)`` True loses a client frame.

    A lost frame is never delivered; with ``cut_on_loss`` both connections are then cut (a
    link that failed mid-request), otherwise the client is left waiting for a reply.
    ``sent`` holds the pairs of every client frame (delivered or lost), ``lost`` those of
    lost frames, and ``lost_event`` is set at the first loss. ``delay`` slows every client
    frame down (so that two sessions surely overlap).
    """

    meter_port: int
    host: str = "127.0.0.1"
    lose: Callable[[bytes], bool] = lambda apdu: False
    cut_on_loss: bool = True
    delay: float = 0.0  # seconds each client frame is held before it is delivered (a slow link)
    port: int = 0
    sent: list[tuple[bytes, int]] = field(default_factory=list)
    lost: list[tuple[bytes, int]] = field(default_factory=list)
    lost_event: asyncio.Event = field(default_factory=asyncio.Event)
    _server: asyncio.Server | None = None
    _writers: list[asyncio.StreamWriter] = field(default_factory=list)

    async def __aenter__(self) -> DlmsWireTap:
        self._server = await asyncio.start_server(self._serve, self.host, 0)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.close()
        for writer in self._writers:
            writer.transport.abort()
        if self._server is not None:
            await self._server.wait_closed()

    async def _serve(self, client_in: asyncio.StreamReader, client_out: asyncio.StreamWriter) -> None:
        meter_in, meter_out = await asyncio.open_connection(self.host, self.meter_port)
        self._writers += [client_out, meter_out]
        back = asyncio.create_task(self._pipe(meter_in, client_out))
        try:
            await self._forward(client_in, meter_out, client_out)
        finally:
            meter_out.transport.abort()
            client_out.transport.abort()
            with contextlib.suppress(Exception):
                await back

    async def _forward(
        self, client_in: asyncio.StreamReader, meter_out: asyncio.StreamWriter, client_out: asyncio.StreamWriter
    ) -> None:
        buffer = bytearray()
        title: bytes | None = None
        while data := await client_in.read(65536):
            buffer += data
            while True:
                consumed, frame = wrapper.decode(buffer)
                if not consumed or frame is None:
                    break
                del buffer[:consumed]
                title, pairs = carried_nonces(frame.apdu, title)
                self.sent += pairs
                if self.lose(frame.apdu):
                    self.lost += pairs
                    self.lost_event.set()
                    if self.cut_on_loss:
                        return
                    continue
                if self.delay:
                    await asyncio.sleep(self.delay)
                meter_out.write(frame.raw)
                await meter_out.drain()

    @staticmethod
    async def _pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            while data := await source.read(65536):
                sink.write(data)
                await sink.drain()
