"""`gxami reports` (the service) and `gxami report ...` (reports on the terminal)."""

from __future__ import annotations

import json

import typer

service_app = typer.Typer(help="Serve the report API.", add_completion=False)
report_app = typer.Typer(help="Print reports from the database.", add_completion=False, no_args_is_help=True)


@service_app.callback(invoke_without_command=True)
def reports() -> None:
    """Run the reports service (settings from GXAMI_* environment variables)."""
    from gxami_reports.__main__ import run

    raise typer.Exit(run())


@report_app.command("daily")
def daily(
    meter: str | None = typer.Option(None, help="only this meter"),
    start: str | None = typer.Option(None, "--from", help="first day, YYYY-MM-DD"),
    end: str | None = typer.Option(None, "--to", help="last day, YYYY-MM-DD"),
    as_json: bool = typer.Option(False, "--json", help="JSON lines instead of a table"),
) -> None:
    """Energy imported per meter and day (kWh), from the daily_consumption view."""
    import asyncio
    from datetime import date

    import asyncpg
    from rich.console import Console
    from rich.table import Table

    from gxami_reports.queries import DailyRow, daily_consumption
    from gxami_reports.settings import ReportsSettings

    settings = ReportsSettings()

    async def fetch() -> list[DailyRow]:
        conn = await asyncpg.connect(settings.database_url.get_secret_value(), timeout=10)
        try:
            return list(
                await daily_consumption(
                    conn,
                    meter_id=meter,
                    start=date.fromisoformat(start) if start else None,
                    end=date.fromisoformat(end) if end else None,
                )
            )
        finally:
            await conn.close()

    try:
        rows = asyncio.run(fetch())
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        typer.echo(f"gxami report: cannot read the database: {type(exc).__name__}: {exc}", err=True)
        raise typer.Exit(2) from None
    if as_json:
        for row in rows:
            typer.echo(json.dumps(row.to_json()))
        return
    table = Table(title="Daily consumption (kWh, UTC days)")
    table.add_column("meter")
    table.add_column("day")
    table.add_column("kWh", justify="right")
    table.add_column("readings", justify="right")
    for row in rows:
        table.add_row(row.meter_id, row.day.isoformat(), f"{row.kwh:,.3f}", str(row.readings))
    Console().print(table)
    typer.echo(f"{len(rows)} report rows")
