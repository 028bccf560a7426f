"""Command line: ``service_app`` runs the scheduler, ``fleet_app`` imports and lists the fleet.

The lead mounts both into the ``gxami`` CLI; settings come from the environment (GXAMI_*).
Exit codes: 0 done, 1 the input was refused (fleet file), 2 a dependency or setting is missing.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer

if TYPE_CHECKING:
    import asyncpg

    from gxami_scheduler.registry import ImportSummary
    from gxami_scheduler.settings import SchedulerSettings
    from gxcore.profiles import ProfileCatalog

# The `gxami` CLI imports this module to list its commands: only typer above; the service,
# pydantic settings, asyncpg and the profiles are imported inside the commands (a fast `gxami --help`).

service_app = typer.Typer(
    help="Run the scheduler service: emits read jobs when meters are due, applies job results"
    " (settings from GXAMI_* environment variables)."
)
fleet_app = typer.Typer(help="The meter fleet: import a fleet file, list meters.", no_args_is_help=True)

_PAGE = 1000


def _fail(code: int, message: str) -> NoReturn:
    typer.echo(message, err=True)
    raise typer.Exit(code)


def load_settings(name: str = "scheduler") -> SchedulerSettings:
    """Settings from the environment, or one line on stderr (naming the variable) and exit code 2."""
    from gxami_runtime.service import load_settings as load_service_settings
    from gxami_scheduler.settings import SchedulerSettings

    return load_service_settings(name, SchedulerSettings)


def run_scheduler() -> int:
    """Run the service until SIGTERM/SIGINT; the process exit code."""
    from gxami_runtime.service import run_service
    from gxami_scheduler.app import serve

    settings = load_settings()
    return run_service("scheduler", settings.log_level, lambda stop: serve(settings, stop))


@service_app.callback(invoke_without_command=True)
def service(ctx: typer.Context) -> None:
    """Run the scheduler service (settings from GXAMI_* environment variables)."""
    if ctx.invoked_subcommand is None:
        raise typer.Exit(run_scheduler())


async def _connect(settings: SchedulerSettings) -> asyncpg.Connection:
    import asyncpg

    from gxami_runtime.service import StartupError, check_database, redact_dsn
    from gxami_store import migrate

    dsn = settings.database_url.get_secret_value()
    await check_database(dsn)
    try:
        conn = await asyncpg.connect(dsn, timeout=10)
        await migrate(conn)
    except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
        raise StartupError(f"cannot use the database at {redact_dsn(dsn)}: {type(exc).__name__}: {exc}") from None
    return conn


async def _import(settings: SchedulerSettings, path: Path, profiles: ProfileCatalog) -> ImportSummary:
    import asyncio

    from gxami_scheduler.app import utc_now
    from gxami_scheduler.fleet import read_fleet_file
    from gxami_scheduler.registry import import_fleet

    # Reading and validating a large fleet file is blocking work: in a thread, not on the event loop.
    meters = await asyncio.to_thread(read_fleet_file, path, profiles)
    conn = await _connect(settings)
    try:
        used = [profiles.get(name) for name in sorted({m.profile for m in meters})]
        return await import_fleet(conn, meters, utc_now(), used)
    finally:
        await conn.close()


@fleet_app.command("import")
def import_command(
    file: Annotated[Path, typer.Argument(help="fleet file: .yaml/.yml with a 'meters:' list, or .csv with a header")],
) -> None:
    """Validate a fleet file and upsert its meters; a bad row refuses the whole file."""
    import asyncio

    from gxami_runtime.service import StartupError
    from gxami_scheduler.fleet import FleetFileError
    from gxcore.errors import ConfigurationError
    from gxcore.profiles import ProfileCatalog

    settings = load_settings("fleet")
    try:
        profiles = ProfileCatalog(*settings.profile_dirs, *([settings.profiles_dir] if settings.profiles_dir else []))
        summary = asyncio.run(_import(settings, file, profiles))
    except FleetFileError as exc:
        _fail(1, f"fleet file refused, nothing imported:\n{exc}")
    except ConfigurationError as exc:
        _fail(2, f"gxami fleet: {exc}")
    except StartupError as exc:
        _fail(2, f"gxami fleet: {exc}")
    typer.echo(str(summary))


async def _all_meters(settings: SchedulerSettings, group: str | None, limit: int | None) -> list[dict[str, Any]]:
    from gxami_scheduler.registry import list_meters

    conn = await _connect(settings)
    out: list[dict[str, Any]] = []
    try:
        after: str | None = None
        while limit is None or len(out) < limit:
            page = await list_meters(conn, limit=_PAGE, after=after, group=group)
            out.extend(page)
            if len(page) < _PAGE:
                break
            after = page[-1]["meter_id"]
    finally:
        await conn.close()
    return out if limit is None else out[:limit]


_COLUMNS = (
    ("meter_id", "METER"),
    ("protocol", "PROTOCOL"),
    ("group", "GROUP"),
    ("interval_s", "EVERY_S"),
    ("enabled", "ENABLED"),
    ("next_due_at", "NEXT_DUE"),
    ("last_success_at", "LAST_OK"),
    ("consecutive_failures", "FAILS"),
    ("last_error_kind", "LAST_ERROR"),
)


def format_table(meters: list[dict[str, Any]]) -> str:
    """Meters as an aligned text table."""
    cells = [[title for _, title in _COLUMNS]]
    cells += [["" if m.get(key) is None else str(m[key]) for key, _ in _COLUMNS] for m in meters]
    widths = [max(len(row[i]) for row in cells) for i in range(len(_COLUMNS))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells)


@fleet_app.command("list")
def list_command(
    as_json: Annotated[bool, typer.Option("--json", help="print a JSON array instead of a table")] = False,
    group: Annotated[str | None, typer.Option(help="only meters of this group")] = None,
    limit: Annotated[int | None, typer.Option(min=1, help="at most this many meters")] = None,
) -> None:
    """List meters with their schedule state."""
    import asyncio

    from gxami_runtime.service import StartupError

    settings = load_settings("fleet")
    try:
        meters = asyncio.run(_all_meters(settings, group, limit))
    except StartupError as exc:
        _fail(2, f"gxami fleet: {exc}")
    if as_json:
        json.dump(meters, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        typer.echo(format_table(meters))


schedule_app = typer.Typer(help="The read schedule: preview the planned work.", no_args_is_help=True)


async def _preview(settings: SchedulerSettings, group: str | None, hours: float) -> str:
    from datetime import timedelta

    from gxami_scheduler.app import utc_now
    from gxami_scheduler.schedule_preview import format_runs, planned_work, registry_entries

    conn = await _connect(settings)
    try:
        entries = await registry_entries(conn, group)
    finally:
        await conn.close()
    now = utc_now()
    return format_runs(planned_work(entries, now, now + timedelta(hours=hours)))


@schedule_app.command("preview")
def preview_command(
    group: Annotated[str | None, typer.Option(help="only meters of this group")] = None,
    hours: Annotated[float, typer.Option(min=0.0, max=24.0 * 31, help="how far ahead to look")] = 24.0,
) -> None:
    """Print the planned runs (time, meter, priority, purposes) from the registry; emits nothing."""
    import asyncio

    from gxami_runtime.service import StartupError

    settings = load_settings("schedule")
    try:
        typer.echo(asyncio.run(_preview(settings, group, hours)))
    except StartupError as exc:
        _fail(2, f"gxami schedule: {exc}")
