"""`gxami` starts fast: building the CLI, its help and a field command leave the heavy stack unloaded.

Each check runs in a fresh interpreter (``sys.modules`` of the test process is full already) and
asserts module names, not timings, so it cannot flake on a busy machine. Typer itself imports
pydantic to coerce option values as soon as a group or command is invoked (even ``--help``
below the top level), so pydantic is asserted absent only for the top-level help.
"""

from __future__ import annotations

import json
import subprocess
import sys
from importlib.metadata import EntryPoint, entry_points
from typing import get_args

import pytest

from gxami_cli import field
from gxcore.profiles.model import Purpose

# The meter stack, the service stack and the renderers: none is needed to show help or decode a frame.
HEAVY = (
    "aiokafka",
    "asyncpg",
    "aiohttp",
    "gurux_dlms",
    "gxcore.protocols.dlms",
    "gxcore.drivers",
    "gxcore.profiles",
    "gxami_contracts",
    "gxami_runtime",
    "prometheus_client",
    "serial",
    "yaml",
    "rich",
)
NO_COMMAND_RUN = (*HEAVY, "pydantic", "pydantic_core")
OMS_GAS_WIRED = "6820206808FD7278563412931533032A0000000C1427048502046D32371F1502FD1700008916"

PROBE = """
import contextlib, io, json, sys
from gxami_cli.main import app
import typer
command = typer.main.get_command(app)
out = io.StringIO()
with contextlib.redirect_stdout(out):
    try:
        command.main(json.loads(sys.argv[1]), prog_name="gxami", standalone_mode=False)
    except SystemExit:
        pass
print(json.dumps({"out": out.getvalue(), "modules": sorted(sys.modules)}))
"""


def probe(*args: str) -> tuple[str, set[str]]:
    """Run the gxami app in-process in a fresh interpreter: its stdout and the modules it loaded."""
    done = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(list(args))], capture_output=True, text=True, timeout=60, check=True
    )
    result = json.loads(done.stdout.splitlines()[-1])
    return result["out"], set(result["modules"])


def loaded(modules: set[str], names: tuple[str, ...]) -> list[str]:
    return [name for name in names if name in modules]


def test_top_level_help_lists_the_plugins_without_the_heavy_stack() -> None:
    out, modules = probe("--help")
    for command in ("decode", "read", "profile", "fleet", "scheduler", "dlq", "report", "collector", "ingest"):
        assert f"  {command} " in out, command  # service plug-ins are listed: they were loaded, cheaply
    assert loaded(modules, NO_COMMAND_RUN) == []


def test_a_built_in_group_help_loads_no_plugin_and_no_asyncio() -> None:
    out, modules = probe("decode", "--help")
    assert "mbus" in out and "dlms-push" in out
    plugins = ("gxami_scheduler", "gxami_ingest", "gxami_reports", "gxami_collector")
    assert loaded(modules, (*HEAVY, "asyncio", *plugins)) == []


def test_decode_mbus_loads_only_the_mbus_decoder() -> None:
    out, modules = probe("decode", "mbus", OMS_GAS_WIRED)
    document = json.loads(out)
    assert document["id"] == "12345678" and document["manufacturer"] == "ELS"
    assert loaded(modules, (*HEAVY, "gxami_scheduler", "gxami_ingest", "gxami_reports", "gxami_collector")) == []


PLUGINS: dict[str, EntryPoint] = {ep.name: ep for ep in entry_points(group="gxami.cli")}


def test_every_service_registers_its_commands() -> None:
    assert {"collector", "ingest", "dlq", "scheduler", "fleet", "reports", "report"} <= set(PLUGINS)


@pytest.mark.parametrize("name", sorted(PLUGINS))
def test_each_plugin_app_imports_without_its_service(name: str) -> None:
    module, _, attribute = PLUGINS[name].value.partition(":")
    code = (
        f"import json, sys, typer; from {module} import {attribute} as a; assert isinstance(a, typer.Typer);"
        " typer.main.get_command(a); print(json.dumps(sorted(sys.modules)))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    modules = set(json.loads(done.stdout))
    service = module.split(".")[0]
    assert loaded(modules, (*NO_COMMAND_RUN, f"{service}.app", f"{service}.settings", f"{service}.service")) == []


def test_the_purpose_help_names_the_profile_models_purposes() -> None:
    assert get_args(Purpose) == field.PURPOSES  # spelled out in field.py so that its help needs no pydantic


def test_plugins_answer_through_the_lazy_group_and_typos_still_get_a_suggestion() -> None:
    from typer.testing import CliRunner

    from gxami_cli.main import app

    runner = CliRunner()
    fleet = runner.invoke(app, ["fleet", "--help"])
    assert fleet.exit_code == 0 and "import" in fleet.stdout and "list" in fleet.stdout
    typo = runner.invoke(app, ["fleeet"])
    assert typo.exit_code == 2 and "Did you mean 'fleet'?" in typo.stderr
