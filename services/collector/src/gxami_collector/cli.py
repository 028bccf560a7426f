"""The `gxami collector` command."""

from __future__ import annotations

import typer

service_app = typer.Typer(help="Read meters for jobs from Kafka and publish readings.", add_completion=False)


@service_app.callback(invoke_without_command=True)
def collector() -> None:
    """Run the collector service (settings from GXAMI_* environment variables)."""
    from gxami_collector.__main__ import run

    raise typer.Exit(run())
