"""`gxami demo`, as a ``gxami.cli`` plug-in: only the typer declaration; the demo itself is imported when it runs."""

from __future__ import annotations

import typer

app = typer.Typer(add_completion=False, help="Bring the stack up, read a simulated fleet, print the report, shut down.")

SCENARIOS = ("read", "control", "edge")


@app.callback(invoke_without_command=True)
def demo_command(
    meters: int = typer.Option(50, min=1, help="how many simulated DLMS meters (read scenario; control runs 4)"),
    seed: int = typer.Option(1, help="simulator seed (values are deterministic from it)"),
    keep_running: bool = typer.Option(False, "--keep-running", help="leave the stack up until Ctrl-C (read scenario)"),
    timeout: float = typer.Option(600, help="give up collecting after this many seconds"),
    scenario: str = typer.Option(
        "read",
        help="read: read a fleet and print the report; control: commands, tokens and audit through the API;"
        " edge: push, dial-in, wM-Bus and an edge site cut off from the broker",
    ),
) -> None:
    """Bring the stack up, read a simulated fleet, print the report, shut down."""
    if scenario not in SCENARIOS:
        typer.echo(f"gxami demo: --scenario {scenario!r}: use one of {', '.join(SCENARIOS)}", err=True)
        raise typer.Exit(2)
    if scenario == "control":
        from gxami_meterlab.cli_demo_control import run_control_demo

        raise typer.Exit(run_control_demo(seed=seed, timeout=timeout))
    if scenario == "edge":
        from gxami_meterlab.cli_demo_edge import run_edge_demo

        raise typer.Exit(run_edge_demo(timeout=timeout))
    from gxami_meterlab.cli_demo import run_demo

    raise typer.Exit(run_demo(meters=meters, seed=seed, keep_running=keep_running, timeout=timeout))
