"""`gxami db migrate`: apply the schema migrations."""

from __future__ import annotations

import typer

app = typer.Typer(help="Database schema.", no_args_is_help=True, add_completion=False)


@app.command("migrate")
def migrate_command() -> None:
    """Apply pending migrations to GXAMI_DATABASE_URL (safe to run twice, and from several pods)."""
    import asyncio

    import asyncpg

    from gxami_runtime.service import redact_dsn
    from gxami_runtime.settings import ServiceSettings
    from gxami_store import migrate

    dsn = ServiceSettings().database_url.get_secret_value()

    async def run() -> list[str]:
        conn = await asyncpg.connect(dsn, timeout=10)
        try:
            return await migrate(conn)
        finally:
            await conn.close()

    try:
        applied = asyncio.run(run())
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        typer.echo(f"gxami db migrate: cannot reach the database at {redact_dsn(dsn)}: {exc}", err=True)
        raise typer.Exit(2) from None
    typer.echo(f"applied {len(applied)} migrations" + (f": {', '.join(applied)}" if applied else " (up to date)"))
