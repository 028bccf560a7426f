"""The `gxami` command: one CLI for services, the local stack, simulators and field tools.

Service commands come from the entry-point group ``gxami.cli`` so this package never
imports a service; each service registers its own typer app.
"""

from __future__ import annotations

from importlib.metadata import entry_points

import typer

from gxami_cli import db, dev, dlms_tools, field, simulate

app = typer.Typer(
    name="gxami",
    help="gxami: an open Advanced Metering Infrastructure platform.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.add_typer(dev.app, name="dev")
app.add_typer(simulate.app, name="simulate")
app.add_typer(db.app, name="db")
field.profile_app.command("discover")(dlms_tools.profile_discover)
field.decode_app.command("dlms-push")(dlms_tools.decode_dlms_push)
app.add_typer(field.decode_app, name="decode")
app.add_typer(field.profile_app, name="profile")
app.command("read")(field.read_command)


@app.command("demo")
def demo_command(
    meters: int = typer.Option(50, min=1, help="how many simulated DLMS meters"),
    seed: int = typer.Option(1, help="simulator seed (values are deterministic from it)"),
    keep_running: bool = typer.Option(False, "--keep-running", help="leave the stack up until Ctrl-C"),
    timeout: float = typer.Option(600, help="give up collecting after this many seconds"),
) -> None:
    """Bring the stack up, read a simulated fleet, print the report, shut down."""
    from gxami_cli.demo import run_demo

    raise typer.Exit(run_demo(meters=meters, seed=seed, keep_running=keep_running, timeout=timeout))


def _mount_plugins() -> None:
    for ep in entry_points(group="gxami.cli"):
        app.add_typer(ep.load(), name=ep.name)


def main() -> None:
    _mount_plugins()
    app(prog_name="gxami")


if __name__ == "__main__":
    main()
