"""`gxami dev up|down|status`: the local broker and database, no Docker needed."""

from __future__ import annotations

from pathlib import Path

import typer

app = typer.Typer(
    help="Local Kafka-compatible broker (Tansu) and PostgreSQL.", no_args_is_help=True, add_completion=False
)

RootOption = typer.Option(None, "--root", help="state folder (default: .gxami/dev in the project)")


def _print_info(info: object) -> None:
    from gxami_meterlab.devstack import DevStackInfo

    assert isinstance(info, DevStackInfo)
    typer.echo(f"broker   {info.endpoints.kafka_bootstrap}  (pid {info.broker_pid})")
    typer.echo(f"database {info.endpoints.database_url}  (pid {info.database_pid})")
    typer.echo(f"env file {info.root / 'dev.env'}   (source it: set -a; . {info.root / 'dev.env'}; set +a)")


@app.command("up")
def up_command(
    root: Path | None = RootOption, fresh: bool = typer.Option(False, help="wipe the database first")
) -> None:
    """Start the broker and the database in the background (they outlive this command)."""
    from gxami_meterlab.devstack import DevStackError, up

    try:
        info = up(root, fresh=fresh)
    except DevStackError as exc:
        typer.echo(f"gxami dev up: {exc}", err=True)
        raise typer.Exit(2) from None
    _print_info(info)


@app.command("down")
def down_command(root: Path | None = RootOption) -> None:
    """Stop the broker and the database started by `gxami dev up`."""
    from gxami_meterlab.devstack import down

    typer.echo("stopped" if down(root) else "nothing was running")


@app.command("status")
def status_command(root: Path | None = RootOption) -> None:
    """Show whether the local stack is up, and where."""
    from gxami_meterlab.devstack import status

    info = status(root)
    if info is None or not info.running:
        typer.echo("not running")
        raise typer.Exit(1)
    _print_info(info)
