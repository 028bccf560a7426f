"""The `gxami` command: one CLI for services, the local stack, simulators and field tools.

Service commands come from the entry-point group ``gxami.cli`` so this package never
imports a service; each service registers its own typer app. ``demo``, ``dev`` and
``simulate`` come the same way from the dev-only ``gxami-meterlab`` package.

Start-up is kept short (a field command answers in a fraction of a second): this module
and the command modules it imports hold only typer declarations and light helpers; the
heavy parts (gxcore's drivers and profiles, pydantic, asyncio, asyncpg, aiokafka, YAML)
are imported inside the command bodies. Service plug-ins are loaded only when their
command is invoked or the top-level help lists them, and help is plain text (typer's
rich help would import rich and markdown-it: half a second). ``tests/test_cli_start.py``
(beside this package) checks which modules stay unloaded.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import typer
from typer.core import TyperGroup

from gxami_cli import adhoc, db, dlms_tools, field, token, wmbus_tools

if TYPE_CHECKING:
    from importlib.metadata import EntryPoint

    from typer._click import Command, Context  # typer's vendored click: what TyperGroup is typed with

PLUGIN_GROUP = "gxami.cli"


def _plugin_entry_points() -> dict[str, EntryPoint]:
    from importlib.metadata import entry_points

    return {ep.name: ep for ep in entry_points(group=PLUGIN_GROUP)}


class GxamiGroup(TyperGroup):
    """The top-level group: built-in commands, plus each ``gxami.cli`` plug-in once it is asked for.

    A plug-in module is imported (and turned into a click group, exactly as ``add_typer``
    would) the first time its name is resolved or the command list is shown, never for a
    built-in command such as ``gxami decode``.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._plugins: dict[str, EntryPoint] | None = None

    def _entry_points(self) -> dict[str, EntryPoint]:
        if self._plugins is None:
            self._plugins = {n: ep for n, ep in _plugin_entry_points().items() if n not in self.commands}
        return self._plugins

    def _mount(self, name: str) -> Command | None:
        ep = self._entry_points().pop(name, None)
        if ep is None:
            return None
        holder = typer.Typer(add_completion=False, rich_markup_mode=self.rich_markup_mode)
        holder.add_typer(ep.load(), name=name)
        command = typer.main.get_group(holder).commands[name]
        self.commands[name] = command
        return command

    def get_command(self, ctx: Context, cmd_name: str) -> Command | None:
        found = self.commands.get(cmd_name) or self._mount(cmd_name)
        if found is None:
            self.list_commands(ctx)  # a typo: mount them all, so "Did you mean ...?" knows the plug-ins too
        return found

    def list_commands(self, ctx: Context) -> list[str]:
        for name in list(self._entry_points()):
            self._mount(name)
        return super().list_commands(ctx)


app = typer.Typer(
    cls=GxamiGroup,
    name="gxami",
    help="gxami: an open Advanced Metering Infrastructure platform.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # plain help: rich's renderer alone costs more than the rest of the start-up
)
app.add_typer(db.app, name="db")
app.add_typer(token.app, name="token")
field.profile_app.command("discover")(dlms_tools.profile_discover)
field.decode_app.command("dlms-push")(dlms_tools.decode_dlms_push)
app.add_typer(field.decode_app, name="decode")
app.add_typer(field.profile_app, name="profile")
app.command("read")(field.read_command)
app.add_typer(adhoc.get_app, name="get")
app.add_typer(adhoc.scan_app, name="scan")
app.add_typer(wmbus_tools.app, name="wmbus")


def main() -> None:
    app(prog_name="gxami")


if __name__ == "__main__":
    main()
