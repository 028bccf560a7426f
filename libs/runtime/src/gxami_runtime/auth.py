"""API tokens and roles for every gxami HTTP API: the token store, the check, and each route's declared role.

A token reads ``gxa_<id>_<secret>``: ``id`` is 16 hex digits, public, the row's key; ``secret`` is
``secrets.token_urlsafe(32)`` (256 random bits). It is shown once, when created; the database keeps
only SHA-256 of the whole token. A plain hash is right here, not a slow password KDF: the input is
256 random bits, not a password, so there is no dictionary to try and no way to brute-force a
digest; salting or stretching would add nothing but CPU per request. A request is looked up by id
and its digest compared with ``hmac.compare_digest`` (an unknown id is compared against a dummy
digest, so both paths do the same work).

Roles are ordered: ``viewer`` reads, ``operator`` also commands and writes, ``admin`` also manages
tokens and the fleet. Every route declares what it needs (:func:`requires` or :func:`public`); the
OpsServer refuses to start with a route that declares nothing. A verified token is cached for
``cache_s`` seconds, so a revoked token keeps working on a running server for at most that long.

Repeated failures (no token, a malformed, unknown or revoked token) are rate-limited per peer
address with a token bucket; a peer past its bucket gets 429 without its token being looked up.
Repeated 403s of one known token (its role is too weak) are limited per token the same way.
No token, digest or Authorization header is ever logged, put in an error or in a metric label.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import re
import secrets
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from hmac import compare_digest
from typing import TYPE_CHECKING, Literal, Protocol

import asyncpg
from aiohttp import web
from asyncpg.pool import PoolConnectionProxy

from gxami_runtime.ratelimit import Clock, TokenBuckets

if TYPE_CHECKING:
    from gxami_runtime.settings import ServiceSettings

log = logging.getLogger("gxami.auth")

__all__ = [
    "OPEN",
    "AuthPolicy",
    "Authenticator",
    "IssuedToken",
    "PoolTokens",
    "Principal",
    "Refusal",
    "Role",
    "StoredToken",
    "TokenInfo",
    "create_token",
    "list_tokens",
    "principal_of",
    "public",
    "requires",
    "revoke_token",
    "route_access",
    "token_hash",
]

Conn = asyncpg.Connection | PoolConnectionProxy
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

TOKEN_PREFIX = "gxa"  # noqa: S105 - the public prefix of every token, not a secret
_TOKEN = re.compile(r"gxa_([0-9a-f]{16})_([A-Za-z0-9_-]{43})")
_DUMMY_DIGEST = hashlib.sha256(b"gxami: no such token").digest()
_ACCESS_ATTR = "__gxami_access__"
OPEN: Literal["open"] = "open"
# Errors that mean the token store is unreachable (not that the token is wrong).
_STORE_ERRORS = (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError)


class Role(StrEnum):
    """What a token may do; each role includes the ones before it."""

    VIEWER = "viewer"
    OPERATOR = "operator"
    ADMIN = "admin"

    def includes(self, needed: Role) -> bool:
        """True when a token with this role may do what ``needed`` allows."""
        order = list(Role)
        return order.index(self) >= order.index(needed)


@dataclass(frozen=True, slots=True)
class Principal:
    """Who made a request: attached to it (``principal_of``) for handlers and audit records."""

    token_id: str
    name: str
    role: Role


@dataclass(frozen=True, slots=True)
class IssuedToken:
    """A token just created; ``token`` is the only copy of the secret and is never stored."""

    id: str
    name: str
    role: Role
    token: str = field(repr=False)  # never in a repr, so never in a log line by accident


@dataclass(frozen=True, slots=True)
class StoredToken:
    """What the database holds for one token id."""

    id: str
    name: str
    role: Role
    digest: bytes
    revoked: bool


@dataclass(frozen=True, slots=True)
class TokenInfo:
    """One token as ``gxami token list`` shows it: never its secret or digest."""

    id: str
    name: str
    role: Role
    created_at: datetime
    created_by: str
    revoked_at: datetime | None
    last_used_at: datetime | None


def token_hash(token: str) -> bytes:
    """SHA-256 of the whole token string: what the database stores and the check compares."""
    return hashlib.sha256(token.encode("utf-8")).digest()


def _parse(token: str) -> str | None:
    """The id of a well-formed token, else None."""
    m = _TOKEN.fullmatch(token)
    return m.group(1) if m else None


def _new_token() -> tuple[str, str]:
    token_id = secrets.token_hex(8)
    return token_id, f"{TOKEN_PREFIX}_{token_id}_{secrets.token_urlsafe(32)}"


async def create_token(conn: Conn, name: str, role: Role, created_by: str) -> IssuedToken:
    """Create a token; raises ValueError when a live token already has ``name``."""
    token_id, token = _new_token()
    try:
        await conn.execute(
            "INSERT INTO api_tokens (id, name, role, hash, created_by) VALUES ($1, $2, $3, $4, $5)",
            token_id,
            name,
            role.value,
            token_hash(token),
            created_by,
        )
    except asyncpg.UniqueViolationError:
        raise ValueError(f"a live token is already named {name!r}; revoke it or choose another name") from None
    except asyncpg.CheckViolationError:
        raise ValueError(f"token name {name!r} must be 1 to 100 characters") from None
    return IssuedToken(token_id, name, role, token)


async def revoke_token(conn: Conn, name_or_id: str) -> list[str]:
    """Revoke the live token with this name or id; returns the ids revoked (empty: none matched)."""
    rows = await conn.fetch(
        "UPDATE api_tokens SET revoked_at = now() WHERE revoked_at IS NULL AND (name = $1 OR id = $1) RETURNING id",
        name_or_id,
    )
    return [str(r["id"]) for r in rows]


async def list_tokens(conn: Conn, *, include_revoked: bool = False) -> list[TokenInfo]:
    """Every live token (and the revoked ones when asked), oldest first."""
    rows = await conn.fetch(
        "SELECT id, name, role, created_at, created_by, revoked_at, last_used_at FROM api_tokens"
        " WHERE $1 OR revoked_at IS NULL ORDER BY created_at, id",
        include_revoked,
    )
    return [
        TokenInfo(
            r["id"], r["name"], Role(r["role"]), r["created_at"], r["created_by"], r["revoked_at"], r["last_used_at"]
        )
        for r in rows
    ]


async def find_token(conn: Conn, token_id: str) -> StoredToken | None:
    """The stored token with this id, revoked or not, or None."""
    r = await conn.fetchrow("SELECT id, name, role, hash, revoked_at FROM api_tokens WHERE id = $1", token_id)
    if r is None:
        return None
    return StoredToken(r["id"], r["name"], Role(r["role"]), bytes(r["hash"]), r["revoked_at"] is not None)


class TokenLookup(Protocol):
    """Where the check finds tokens (:class:`PoolTokens` in services)."""

    async def find(self, token_id: str) -> StoredToken | None: ...

    async def used(self, token_id: str) -> None: ...


class PoolTokens:
    """Tokens in the database, through a service's pool."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def find(self, token_id: str) -> StoredToken | None:
        async with self._pool.acquire() as conn:
            return await find_token(conn, token_id)

    async def used(self, token_id: str) -> None:
        async with self._pool.acquire() as conn:
            await conn.execute("UPDATE api_tokens SET last_used_at = now() WHERE id = $1", token_id)


@dataclass(frozen=True, slots=True)
class AuthPolicy:
    """How long a verified token is trusted without a look-up, and how many failures a peer may make."""

    cache_s: float = 5.0
    failure_rate_per_s: float = 0.1
    failure_burst: int = 10
    max_cached: int = 4096

    @classmethod
    def from_settings(cls, settings: ServiceSettings) -> AuthPolicy:
        """The policy a service's GXAMI_HTTP_AUTH_* settings ask for."""
        return cls(
            cache_s=settings.http_auth_cache_s,
            failure_rate_per_s=settings.http_auth_failure_rate_per_s,
            failure_burst=settings.http_auth_failure_burst,
        )


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a request is refused: status, a reason safe to log and show, a metric label, headers."""

    status: int
    reason: str
    kind: str
    headers: dict[str, str]


_CHALLENGE = 'Bearer realm="gxami"'


class Authenticator:
    """Checks a request's bearer token against the store, with a short cache and per-peer failure limits."""

    def __init__(self, tokens: TokenLookup, policy: AuthPolicy | None = None, *, clock: Clock = time.monotonic) -> None:
        self.policy = policy or AuthPolicy()
        self._tokens = tokens
        self._clock = clock
        self._failures = TokenBuckets(self.policy.failure_rate_per_s, self.policy.failure_burst, clock=clock)
        self._forbidden = TokenBuckets(self.policy.failure_rate_per_s, self.policy.failure_burst, clock=clock)
        self._blocked: dict[str, float] = {}  # peer -> monotonic time its next attempt is looked at
        self._cache: OrderedDict[bytes, tuple[Principal, float]] = OrderedDict()  # digest -> (who, until)

    @classmethod
    def from_settings(cls, settings: ServiceSettings, tokens: TokenLookup) -> Authenticator:
        return cls(tokens, AuthPolicy.from_settings(settings))

    async def check(self, authorization: str | None, peer: str, needed: Role) -> Principal | Refusal:
        """The principal of a request whose token allows ``needed``, or why it is refused."""
        now = self._clock()
        until = self._blocked.get(peer)
        if until is not None:
            if now < until:
                return self._too_many(until - now)
            del self._blocked[peer]
        scheme, _, token = (authorization or "").strip().partition(" ")
        if not authorization:
            return self._failed(peer, now, "missing bearer token (Authorization: Bearer <token>)")
        if scheme.lower() != "bearer" or _parse(token.strip()) is None:
            return self._failed(peer, now, "malformed bearer token")
        token = token.strip()
        digest = token_hash(token)
        cached = self._cache.get(digest)
        if cached is not None and now < cached[1]:
            who = cached[0]
        else:
            self._cache.pop(digest, None)
            found = await self._verify(token, digest)
            if isinstance(found, Refusal):
                return found
            if found is None:
                return self._failed(peer, now, "invalid or revoked token")
            who = found
            self._remember(digest, who, now)
        if not who.role.includes(needed):
            # A known token trying what its role does not allow is limited per token, not per
            # peer: it is no failed login, and the peer's other tokens keep working.
            wait = self._forbidden.take(who.token_id)
            if wait > 0:
                return self._too_many(wait)
            return Refusal(
                403,
                f"token {who.name!r} has the {who.role} role; this needs {needed}",
                "forbidden",
                {"WWW-Authenticate": f'{_CHALLENGE}, error="insufficient_scope"'},
            )
        return who

    async def _verify(self, token: str, digest: bytes) -> Principal | Refusal | None:
        token_id = _parse(token)
        assert token_id is not None  # checked by the caller
        try:
            stored = await self._tokens.find(token_id)
        except _STORE_ERRORS as exc:
            log.warning("token store unavailable", extra={"error": type(exc).__name__})
            return Refusal(503, "authentication unavailable", "auth_unavailable", {"Retry-After": "5"})
        live = stored is not None and not stored.revoked
        # Compared either way, against a dummy digest when there is no live token, so both paths cost the same.
        expected = stored.digest if stored is not None and live else _DUMMY_DIGEST
        if not (compare_digest(expected, digest) and live and stored is not None):
            return None
        try:
            await self._tokens.used(token_id)
        except _STORE_ERRORS as exc:  # last_used_at is informative: a failed update does not refuse the request
            log.info("could not record a token's last use", extra={"error": type(exc).__name__})
        return Principal(stored.id, stored.name, stored.role)

    def _remember(self, digest: bytes, who: Principal, now: float) -> None:
        if self.policy.cache_s <= 0:
            return
        self._cache[digest] = (who, now + self.policy.cache_s)
        while len(self._cache) > self.policy.max_cached:
            self._cache.popitem(last=False)

    def _failed(self, peer: str, now: float, reason: str) -> Refusal:
        wait = self._failures.take(peer)
        if wait > 0:
            if len(self._blocked) >= 10_000:  # bounded: forget blocks that are over
                self._blocked = {p: t for p, t in self._blocked.items() if t > now}
            self._blocked[peer] = now + wait
            return self._too_many(wait)
        error = "" if reason.startswith("missing") else ', error="invalid_token"'
        return Refusal(401, reason, "unauthenticated", {"WWW-Authenticate": _CHALLENGE + error})

    @staticmethod
    def _too_many(wait: float) -> Refusal:
        return Refusal(
            429,
            "too many failed authentications from this address",
            "auth_rate_limited",
            {"Retry-After": str(max(1, int(wait + 0.999)))},
        )


Access = Role | Literal["open"]


def _declare(handler: Handler, access: Access) -> Handler:
    @functools.wraps(handler)
    async def declared(request: web.Request) -> web.StreamResponse:
        return await handler(request)

    setattr(declared, _ACCESS_ATTR, access)
    return declared


def requires(role: Role) -> Callable[[Handler], Handler]:
    """Declare that a route needs a token with at least ``role``."""
    return functools.partial(_declare, access=role)


def public(handler: Handler) -> Handler:
    """Declare a route open to anyone (health, readiness, metrics)."""
    return _declare(handler, OPEN)


def route_access(handler: object) -> Access | None:
    """What a route handler declared, or None when it declared nothing."""
    access = getattr(handler, _ACCESS_ATTR, None)
    return access if isinstance(access, Role) or access == OPEN else None


_PRINCIPAL_KEY = web.RequestKey("gxami.principal", Principal)


def attach(request: web.Request, who: Principal) -> None:
    request[_PRINCIPAL_KEY] = who


def principal_of(request: web.Request) -> Principal | None:
    """Who made this request (None on an open route)."""
    who = request.get(_PRINCIPAL_KEY)
    return who if isinstance(who, Principal) else None
