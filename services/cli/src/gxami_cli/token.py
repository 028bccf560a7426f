"""`gxami token create|revoke|list`: API tokens for the HTTP APIs, straight in GXAMI_DATABASE_URL.

Whoever can run this against the database is an admin: token management has no HTTP route.
The token is printed once, by ``create``, and is not stored anywhere (only its SHA-256 is).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, TypeVar

import typer

if TYPE_CHECKING:
    import asyncpg

app = typer.Typer(help="API tokens for the HTTP APIs (scheduler, reports).", no_args_is_help=True, add_completion=False)

ROLES = ("viewer", "operator", "admin")  # gxami_runtime.auth.Role, spelled out so that help imports nothing heavy
T = TypeVar("T")


def _run(what: str, work: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
    import asyncio

    import asyncpg

    from gxami_runtime.service import redact_dsn
    from gxami_runtime.settings import ServiceSettings

    dsn = ServiceSettings().database_url.get_secret_value()

    async def run() -> T:
        conn = await asyncpg.connect(dsn, timeout=10)
        try:
            return await work(conn)
        finally:
            await conn.close()

    try:
        return asyncio.run(run())
    except asyncpg.UndefinedTableError:
        typer.echo(f"gxami token {what}: no api_tokens table: run `gxami db migrate` first", err=True)
        raise typer.Exit(2) from None
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        typer.echo(f"gxami token {what}: cannot use the database at {redact_dsn(dsn)}: {exc}", err=True)
        raise typer.Exit(2) from None


def _creator() -> str:
    import getpass

    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (a container with an arbitrary uid)
        return "unknown"


@app.command("create")
def create_command(
    name: str = typer.Option(..., "--name", help="a name for the token, unique among live tokens"),
    role: str = typer.Option(..., "--role", help=f"one of {', '.join(ROLES)}"),
) -> None:
    """Create a token and print it once (keep it: only its hash is stored)."""
    if role not in ROLES:
        typer.echo(f"gxami token create: --role must be one of {', '.join(ROLES)}, not {role!r}", err=True)
        raise typer.Exit(2)
    from gxami_runtime.auth import Role, create_token

    async def work(conn: asyncpg.Connection) -> tuple[str, str]:
        issued = await create_token(conn, name, Role(role), _creator())
        return issued.id, issued.token

    try:
        token_id, token = _run("create", work)
    except ValueError as exc:
        typer.echo(f"gxami token create: {exc}", err=True)
        raise typer.Exit(2) from None
    typer.echo(f"created {role} token {name!r} (id {token_id}); it is shown only this once:", err=True)
    typer.echo(token)


@app.command("revoke")
def revoke_command(name_or_id: str = typer.Argument(..., help="the token's name or id")) -> None:
    """Revoke a live token; running servers stop accepting it within their cache time (5 s by default)."""
    from gxami_runtime.auth import revoke_token

    async def work(conn: asyncpg.Connection) -> list[str]:
        return await revoke_token(conn, name_or_id)

    revoked = _run("revoke", work)
    if not revoked:
        typer.echo(f"gxami token revoke: no live token named or with id {name_or_id!r}", err=True)
        raise typer.Exit(1)
    typer.echo(f"revoked {', '.join(revoked)}")


@app.command("list")
def list_command(all_: bool = typer.Option(False, "--all", help="include revoked tokens")) -> None:
    """List tokens: id, name, role, created, last used (never a secret)."""
    from gxami_runtime.auth import TokenInfo, list_tokens

    async def work(conn: asyncpg.Connection) -> list[TokenInfo]:
        return await list_tokens(conn, include_revoked=all_)

    def when(ts: object) -> str:
        return ts.isoformat(timespec="seconds") if hasattr(ts, "isoformat") else "-"

    for t in _run("list", work):
        state = f"revoked {when(t.revoked_at)}" if t.revoked_at else "live"
        typer.echo(
            f"{t.id}  {t.name}  {t.role}  created {when(t.created_at)} by {t.created_by}"
            f"  last used {when(t.last_used_at)}  {state}"
        )
