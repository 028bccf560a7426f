"""`gxami demo`, as a ``gxami.cli`` plug-in: only the typer declaration; the demo itself is imported when it runs."""

from __future__ import annotations

import typer

app = typer.Typer(add_completion=False, help="Bring the stack up, read a simulated fleet, print the report, shut down.")

SCENARIOS = ("read", "control")


@app.callback(invoke_without_command=True)
def demo_command(
    meters: int = typer.Option(50, min=1, help="how many simulated DLMS meters (read scenario; control runs 4)"),
    seed: int = typer.Option(1, help="simulator seed (values are deterministic from it)"),
    keep_running: bool = typer.Option(False, "--keep-running", help="leave the stack up until Ctrl-C (read scenario)"),
    timeout: float = typer.Option(600, help="give up collecting after this many seconds"),
    scenario: str = typer.Option(
        "read",
        help="read: read a fleet and print the report; control: commands, tokens and audit through the API",
    ),
) -> None:
    """Bring the stack up, read a simulated fleet, print the report, shut down."""
    if scenario not in SCENARIOS:
        raise typer.BadParameter(f"{scenario!r} is not one of {', '.join(SCENARIOS)}", param_hint="--scenario")
    if scenario == "control":
        from gxami_meterlab.cli_demo_control import run_control_demo

        raise typer.Exit(run_control_demo(seed=seed, timeout=timeout))
    from gxami_meterlab.cli_demo import run_demo

    raise typer.Exit(run_demo(meters=meters, seed=seed, keep_running=keep_running, timeout=timeout))
