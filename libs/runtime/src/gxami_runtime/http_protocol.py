"""aiohttp's connection handler with a request-head timeout and malformed requests answered in JSON.

aiohttp (checked against 3.14) has no timeout on reading a request head: its keep-alive timer
starts when the connection opens and is reset only after a response, so its value (an hour by
default) is all that bounds a client that sends its headers a byte at a time. It answers a
request it cannot parse with a text 400 and logs the parse error at ERROR with a traceback
through ``aiohttp.server``. This module replaces those two behaviours; everything else is aiohttp.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError, LineTooLong
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest
from aiohttp.web_server import Server

log = logging.getLogger("gxami.http")

Refused = Callable[[str], None]  # called with the reason label of every refused request


def json_error(status: int, message: str, *, headers: dict[str, str] | None = None) -> web.Response:
    """The one error shape of every gxami HTTP API: ``{"error": "..."}``."""
    return web.json_response({"error": message}, status=status, headers=headers)


def safe_reason(exc: BaseException | None, fallback: str) -> str:
    """A one-line reason for a parse error that never echoes the request bytes (they may hold a token)."""
    if isinstance(exc, LineTooLong):
        return "the request line or a header line is too long"
    if not isinstance(exc, HttpProcessingError) or not exc.message:
        return fallback
    # aiohttp's messages read "what went wrong: the offending bytes"; keep only the first part.
    first = str(exc.message).splitlines()[0] if str(exc.message).strip() else ""
    for marker in (":", "'", '"'):
        first = first.split(marker, 1)[0]
    first = first.strip()
    if not first or not first.isprintable():
        return fallback
    return first[:200]


class _HardenedRequestHandler(RequestHandler):
    """One connection: closes it when a request head is not complete within ``head_timeout`` seconds."""

    def __init__(self, manager: Server, *, head_timeout: float, refused: Refused, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._head_timeout = head_timeout
        self._refused = refused
        self._head_timer: asyncio.TimerHandle | None = None
        self._head_started = False  # some bytes of the awaited request head have arrived

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        # A new connection is waiting for its first head, bytes or not: bound it from now.
        self._arm_head_timer()

    def data_received(self, data: bytes) -> None:
        before = self._request_count
        if data and self._awaiting_head():
            if self._head_timer is None:  # the first bytes of a head on a kept-alive connection
                self._arm_head_timer()
            self._head_started = True
        super().data_received(data)
        if self._request_count != before:  # a complete head (or a parse error) arrived
            self._cancel_head_timer()
            self._head_started = False

    def connection_lost(self, exc: BaseException | None) -> None:
        self._cancel_head_timer()
        super().connection_lost(exc)

    def _awaiting_head(self) -> bool:
        """True while the connection waits for a new request (not in a handler, not reading a body)."""
        if self._messages or self._request_in_progress:
            return False
        waiter = self._waiter
        if waiter is None:  # a fresh connection whose first wake-up has not created its waiter yet
            return self._request_count == 0
        return not waiter.done()

    def _arm_head_timer(self) -> None:
        self._cancel_head_timer()
        self._head_timer = self._loop.call_later(self._head_timeout, self._head_timed_out)

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        transport = self.transport
        if transport is None or self._force_close:
            return
        if not self._awaiting_head():
            return  # busy with a request; the keep-alive timer bounds the next head
        peer = self.peername
        remote = peer[0] if isinstance(peer, tuple) else str(peer)
        if self._head_started:
            log.info(
                "HTTP request head not complete in time: answered 408 and closed",
                extra={"remote": remote, "timeout_s": self._head_timeout},
            )
            body = json.dumps({"error": f"request head not complete within {self._head_timeout:g} s"}).encode()
            head = (
                "HTTP/1.1 408 Request Timeout\r\nContent-Type: application/json; charset=utf-8\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
            )
            transport.write(head.encode("ascii") + body)
        else:
            log.info(
                "HTTP connection sent no request in time: closed",
                extra={"remote": remote, "timeout_s": self._head_timeout},
            )
        self._refused("header_timeout")
        self.force_close()

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        """A request aiohttp could not parse (4xx: one INFO line) or a failure outside every handler (5xx)."""
        if request.writer.output_size > 0:
            raise ConnectionError("response already started; cannot send the error")
        if status >= 500:
            # Our middleware answers every handler failure itself, so this is a bug: keep the traceback.
            log.error("HTTP request failed outside its handler", exc_info=exc, extra={"status": status})
            reason = "internal error"
            kind = "internal_error"
        else:
            reason = safe_reason(exc, "malformed request")
            log.info(
                "refused a malformed HTTP request: %s",
                reason,
                extra={"remote": request.remote, "status": status, "reason": reason},
            )
            kind = "malformed"
        self._refused(kind)
        resp = json_error(status, reason)
        resp.force_close()
        return resp


class HardenedServer(Server):
    """aiohttp's ``Server`` building :class:`_HardenedRequestHandler` connections."""

    def __init__(self, base: Server, *, head_timeout: float, refused: Refused) -> None:
        super().__init__(
            base.request_handler,
            request_factory=base.request_factory,
            handler_cancellation=base.handler_cancellation,
            loop=base._loop,
            **base._kwargs,
        )
        self._head_timeout = head_timeout
        self._refused = refused

    def __call__(self) -> RequestHandler:
        return _HardenedRequestHandler(
            self, loop=self._loop, head_timeout=self._head_timeout, refused=self._refused, **self._kwargs
        )


class HardenedAppRunner(web.AppRunner):
    """``AppRunner`` whose server is a :class:`HardenedServer`."""

    def __init__(self, app: web.Application, *, head_timeout: float, refused: Refused, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self._head_timeout = head_timeout
        self._refused = refused

    async def _make_server(self) -> Server:
        base = await super()._make_server()
        return HardenedServer(base, head_timeout=self._head_timeout, refused=self._refused)
