"""The `gxami ingest` command."""

from __future__ import annotations

import typer

service_app = typer.Typer(help="Store reading batches from Kafka in the database.", add_completion=False)


@service_app.callback(invoke_without_command=True)
def ingest() -> None:
    """Run the ingest service (settings from GXAMI_* environment variables)."""
    from gxami_ingest.__main__ import run

    raise typer.Exit(run())
