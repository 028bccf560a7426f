"""The small HTTP side of every service: /metrics (Prometheus), /health and /ready, and the limits every route gets.

Every request is bounded before a handler sees it: its head must arrive within the head timeout,
its target must be well-formed, its bearer token must carry the role the route declares
(``gxami_runtime.auth``), a write must fit the client's rate limit, and its whole body is
read (bounded in size and time) before the handler runs, so a handler only ever acts on complete
requests. Every refusal is a JSON ``{"error": ...}`` answer logged as one INFO line.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import re
import urllib.parse
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aiohttp import web
from aiohttp.web_protocol import RequestPayloadError
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, Counter, generate_latest

from gxami_runtime.auth import OPEN, Authenticator, Refusal, Role, attach, public, route_access
from gxami_runtime.http_protocol import HardenedAppRunner, json_error
from gxami_runtime.ratelimit import TokenBuckets

if TYPE_CHECKING:
    from gxami_runtime.settings import ServiceSettings

log = logging.getLogger("gxami.http")

__all__ = ["HttpLimits", "OpsServer", "bad_request", "client_address", "json_error", "read_json_object"]

ClientKey = Callable[[web.Request], str]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_BAD_PERCENT = re.compile(r"%(?![0-9A-Fa-f]{2})")
# Lingering: after refusing a request whose body was not read, aiohttp reads and drops the rest
# for this long before closing, so the client sees the answer rather than a reset.
_LINGER_S = 2.0


@dataclass(frozen=True, slots=True)
class HttpLimits:
    """Time, size and rate limits of one HTTP server; the defaults are the settings' defaults."""

    header_timeout_s: float = 10.0
    body_timeout_s: float = 30.0
    keepalive_timeout_s: float = 75.0
    max_body_bytes: int = 1024 * 1024
    write_rate_per_s: float = 1.0
    write_burst: int = 20

    def __post_init__(self) -> None:
        for name in ("header_timeout_s", "body_timeout_s", "keepalive_timeout_s", "write_rate_per_s"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
                raise ValueError(f"HttpLimits.{name} must be a positive number, not {value!r}")
        for name in ("max_body_bytes", "write_burst"):
            value = getattr(self, name)
            if not (isinstance(value, int) and value >= 1):
                raise ValueError(f"HttpLimits.{name} must be a whole number of at least 1, not {value!r}")

    @classmethod
    def from_settings(cls, settings: ServiceSettings) -> HttpLimits:
        """The limits a service's GXAMI_HTTP_* settings ask for."""
        return cls(
            header_timeout_s=settings.http_header_timeout_s,
            body_timeout_s=settings.http_body_timeout_s,
            keepalive_timeout_s=settings.http_keepalive_timeout_s,
            max_body_bytes=settings.http_max_body_bytes,
            write_rate_per_s=settings.http_write_rate_per_s,
            write_burst=settings.http_write_burst,
        )


def client_address(request: web.Request) -> str:
    """The rate-limit key until requests carry an authenticated principal: the peer address."""
    return request.remote or "unknown"


class _ClosingResponse(web.Response):
    """A response after which the connection is closed at once, without draining the rest of the request.

    For a client that stalled mid-body: aiohttp would otherwise keep reading ("lingering") for a while.
    """

    def __init__(self, request: web.BaseRequest, status: int, message: str) -> None:
        super().__init__(text=json.dumps({"error": message}), status=status, content_type="application/json")
        self._closing = request
        self.force_close()

    async def write_eof(self, data: bytes = b"") -> None:
        await super().write_eof(data)
        self._closing.protocol.force_close()


class _HttpMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.refused = Counter(
            "gxami_http_refused_total",
            "HTTP requests refused before a handler ran, by reason",
            ["reason"],
            registry=registry,
        )
        self.handler_errors = Counter(
            "gxami_http_handler_errors_total", "HTTP handlers that failed unexpectedly (a bug)", registry=registry
        )


# Several servers may share one registry (tests, a process serving two ports): one set of metrics each.
_METRICS: weakref.WeakKeyDictionary[CollectorRegistry, _HttpMetrics] = weakref.WeakKeyDictionary()


def _metrics_for(registry: CollectorRegistry) -> _HttpMetrics:
    metrics = _METRICS.get(registry)
    if metrics is None:
        metrics = _METRICS[registry] = _HttpMetrics(registry)
    return metrics


def target_problem(raw_target: str) -> str | None:
    """Why a request target (path and query, as sent) is refused, or None when it is fine."""
    path, _, query = raw_target.partition("?")
    for part, what in ((path, "path"), (query, "query")):
        if _BAD_PERCENT.search(part):
            return f"bad percent-encoding in the {what}"
        try:
            text = urllib.parse.unquote_to_bytes(part).decode("utf-8")
        except UnicodeDecodeError:
            return f"the {what} is not UTF-8 once percent-decoded"
        if "\x00" in text:
            return f"NUL byte in the {what}"
        if any(ord(c) < 0x20 or ord(c) == 0x7F for c in text):
            return f"control character in the {what}"
    return None


async def read_json_object(request: web.Request, *, allowed: frozenset[str] = frozenset()) -> dict[str, Any]:
    """The request's JSON object body ({} when empty); raises a JSON 400 naming what is wrong."""
    raw = await request.read()  # already read in full, bounded in size and time, by the OpsServer middleware
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except ValueError as exc:
        where = f" at byte {exc.pos}" if isinstance(exc, json.JSONDecodeError) else ""
        raise bad_request(f"request body is not valid JSON{where}") from None
    if not isinstance(body, dict):
        raise bad_request("request body must be a JSON object")
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise bad_request(f"unknown field {unknown[0]!r} in the request body")
    return body


def bad_request(message: str) -> web.HTTPBadRequest:
    """A 400 to raise from a handler, with the JSON error body."""
    return web.HTTPBadRequest(text=json.dumps({"error": message}), content_type="application/json")


class OpsServer:
    """Serves metrics and health; services add their own routes to ``app`` before ``start``.

    Every route declares its access (``gxami_runtime.auth.requires`` or ``public``) and ``start``
    refuses a route that declares none, or one that needs a role on a server without ``auth``.
    /metrics, /health and /ready are open: probes and Prometheus carry no token, and they show
    no meter data.
    """

    def __init__(
        self,
        host: str,
        port: int,
        *,
        ready: Callable[[], bool] = lambda: True,
        registry: CollectorRegistry = REGISTRY,
        limits: HttpLimits | None = None,
        client_key: ClientKey = client_address,
        auth: Authenticator | None = None,
    ) -> None:
        self.limits = limits or HttpLimits()
        self.auth = auth
        self.app = web.Application(middlewares=[self._guard], client_max_size=self.limits.max_body_bytes)
        self._host = host
        self._port = port
        self._ready = ready
        self._registry = registry
        self._metrics = _metrics_for(registry)
        self._client_key = client_key
        self._writes = TokenBuckets(self.limits.write_rate_per_s, self.limits.write_burst)
        self._runner: web.AppRunner | None = None
        self.port: int | None = None
        self.app.router.add_get("/metrics", public(self._metrics_page))
        self.app.router.add_get("/health", public(self._health))
        self.app.router.add_get("/ready", public(self._readiness))

    @classmethod
    def from_settings(
        cls,
        settings: ServiceSettings,
        *,
        ready: Callable[[], bool] = lambda: True,
        registry: CollectorRegistry = REGISTRY,
        client_key: ClientKey = client_address,
        auth: Authenticator | None = None,
    ) -> OpsServer:
        """The server on ``settings.http_host``/``http_port`` with the GXAMI_HTTP_* limits."""
        return cls(
            settings.http_host,
            settings.http_port,
            ready=ready,
            registry=registry,
            limits=HttpLimits.from_settings(settings),
            client_key=client_key,
            auth=auth,
        )

    def _refuse(self, status: int, reason: str, kind: str, request: web.Request, **headers: str) -> web.Response:
        log.info(
            "refused an HTTP request: %s",
            reason,
            extra={"remote": request.remote, "method": request.method, "status": status, "reason": reason},
        )
        self._metrics.refused.labels(kind).inc()
        return json_error(status, reason, headers=headers or None)

    @web.middleware
    async def _guard(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await self._admit(request, handler)
        except web.HTTPException as exc:
            if exc.status < 400 or exc.content_type == "application/json":
                raise
            text = exc.text or ""
            default = f"{exc.status}: {exc.reason}"
            reason = exc.reason if not text or text == default else text
            headers = {k: v for k, v in exc.headers.items() if k.lower() not in ("content-type", "content-length")}
            return json_error(exc.status, reason, headers=headers or None)
        except asyncio.CancelledError:
            raise
        except Exception:
            # Only a bug gets here: one record, with its traceback.
            log.exception("HTTP handler failed", extra={"method": request.method, "path": request.path})
            self._metrics.handler_errors.inc()
            return json_error(500, "internal error")

    async def _admit(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        problem = target_problem(request.raw_path)
        if problem is not None:
            return self._refuse(400, problem, "bad_target", request)
        refused = await self._authorize(request)
        if refused is not None:
            return refused
        if request.method not in SAFE_METHODS:
            wait = self._writes.take(self._client_key(request))
            if wait > 0:
                retry_after = str(max(1, math.ceil(wait)))
                return self._refuse(
                    429, "too many write requests", "rate_limited", request, **{"Retry-After": retry_after}
                )
        if request.body_exists:
            length = request.content_length
            limit = self.limits.max_body_bytes
            if length is not None and length > limit:
                return self._refuse(413, f"request body larger than {limit} bytes", "body_too_large", request)
            try:
                async with asyncio.timeout(self.limits.body_timeout_s):
                    await request.read()
            except TimeoutError:
                reason = f"request body not complete within {self.limits.body_timeout_s:g} s"
                self._refuse(408, reason, "body_timeout", request)
                return _ClosingResponse(request, 408, reason)
            except web.HTTPRequestEntityTooLarge:
                return self._refuse(413, f"request body larger than {limit} bytes", "body_too_large", request)
            except ConnectionError:
                # Nobody is left to answer; aiohttp drops the connection quietly when this fails to send.
                log.info("HTTP client went away before its request body arrived", extra={"remote": request.remote})
                self._metrics.refused.labels("client_gone").inc()
                return json_error(400, "request body not complete")
            except RequestPayloadError:
                resp = self._refuse(400, "malformed request body", "malformed", request)
                resp.force_close()
                return resp
        return await handler(request)

    async def _authorize(self, request: web.Request) -> web.Response | None:
        """None when the route is open or the request's token has the route's role; else the refusal."""
        if request.match_info.http_exception is not None:
            return None  # no such route (404/405): aiohttp answers, no handler runs
        access = route_access(request.match_info.handler)
        if access == OPEN:
            return None
        if not isinstance(access, Role) or self.auth is None:  # start() checks this; a route added later
            return self._refuse(500, "route declares no access", "undeclared_route", request)
        outcome = await self.auth.check(request.headers.get("Authorization"), client_address(request), access)
        if isinstance(outcome, Refusal):
            return self._refuse(outcome.status, outcome.reason, outcome.kind, request, **outcome.headers)
        attach(request, outcome)
        if request.method not in SAFE_METHODS:
            log.info(
                "authorized a write request",
                extra={
                    "method": request.method,
                    "path": request.path,
                    "token_name": outcome.name,
                    "role": outcome.role.value,
                },
            )
        return None

    def check_routes(self) -> None:
        """Raise ValueError naming a route that declares no access, or needs a role with no ``auth``."""
        for route in self.app.router.routes():
            access = route_access(route.handler)
            where = f"{route.method} {route.resource.canonical if route.resource else '?'}"
            if access is None:
                raise ValueError(f"HTTP route {where} declares no access: wrap it in requires(Role...) or public()")
            if access != OPEN and self.auth is None:
                raise ValueError(f"HTTP route {where} needs the {access} role but the server has no authenticator")

    async def _metrics_page(self, _: web.Request) -> web.Response:
        body = generate_latest(self._registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _health(self, _: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def _readiness(self, _: web.Request) -> web.Response:
        ok = self._ready()
        return web.json_response({"ready": ok}, status=200 if ok else 503)

    async def start(self) -> int:
        """Start serving; returns the bound port (useful with port 0)."""
        self.check_routes()
        self._runner = HardenedAppRunner(
            self.app,
            head_timeout=self.limits.header_timeout_s,
            refused=lambda kind: self._metrics.refused.labels(kind).inc(),
            access_log=None,
            keepalive_timeout=self.limits.keepalive_timeout_s,
            lingering_time=min(_LINGER_S, self.limits.body_timeout_s),
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, self._port)
        await site.start()
        server = site._server
        assert server is not None
        sockets = getattr(server, "sockets", None) or []
        self.port = int(sockets[0].getsockname()[1]) if sockets else self._port
        return self.port

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
