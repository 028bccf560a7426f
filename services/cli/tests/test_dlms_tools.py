"""`gxami profile discover` and `gxami decode dlms-push`, mounted the way the lead mounts them."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import typer
import yaml
from typer.testing import CliRunner, Result

from gxami_cli.dlms_tools import decode_dlms_push, profile_discover
from gxami_meterlab.simulators.dlms import DlmsFleetSimulator, meter_security, push_message
from gxcore.profiles import load_profile

NOW = datetime(2024, 6, 1, 12, 3, 7, tzinfo=UTC)
profile_app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
profile_app.command("discover")(profile_discover)
decode_app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
decode_app.command("dlms-push")(decode_dlms_push)
app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
app.add_typer(profile_app, name="profile")
app.add_typer(decode_app, name="decode")
runner = CliRunner()


async def invoke(*args: str, **kwargs: Any) -> Result:
    return await asyncio.to_thread(runner.invoke, app, list(args), **kwargs)


async def test_discover_prints_a_profile_that_validates(tmp_path: Path) -> None:
    async with DlmsFleetSimulator(1, seed=3, clock=lambda: NOW) as sim:
        url = f"tcp://127.0.0.1:{sim.meters[0].port}"
        shown = await invoke("profile", "discover", url)
        out = tmp_path / "meter.yaml"
        written = await invoke("profile", "discover", url, "--name", "lab-meter", "--output", str(out))
    assert shown.exit_code == 0, shown.stderr
    document = yaml.safe_load(shown.stdout)
    assert document["name"] == "discovered-sim00300000" and document["protocol"] == "dlms"
    sources = {(p["source"], tuple(p.get("purpose", ["billing"]))) for p in document["points"]}
    assert ("3/1.0.1.8.0.255", ("billing",)) in sources
    assert ("4/1.0.1.6.0.255", ("billing",)) in sources
    assert ("5/1.0.1.4.0.255", ("diagnostics",)) in sources
    assert ("3/1.0.1.8.0.255", ("load-profile",)) in sources
    assert ("1/0.0.96.11.0.255", ("events",)) in sources
    assert written.exit_code == 0, written.stderr
    summary = json.loads(written.stdout)
    assert summary["name"] == "lab-meter" and load_profile(out).name == "lab-meter"


async def test_discover_over_hls_gmac_takes_keys_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    keys = meter_security(3, 0)
    monkeypatch.setenv("GX_EK", keys.block_cipher_key.reveal().hex())
    monkeypatch.setenv("GX_AK", keys.authentication_key.reveal().hex())
    async with DlmsFleetSimulator(1, seed=3, clock=lambda: NOW, authentication="high-gmac") as sim:
        url = f"tcp://127.0.0.1:{sim.meters[0].port}"
        common = ("profile", "discover", url, "-o", "client=1", "-o", "authentication=high-gmac")
        result = await invoke(*common, "--key-env", "GX_EK", "--auth-key-env", "GX_AK")
        missing = await invoke(*common, "--key-env", "GX_EK")
    assert result.exit_code == 0, result.stderr
    assert yaml.safe_load(result.stdout)["parameters"]["authentication"] == "high-gmac"
    assert keys.block_cipher_key.reveal().hex() not in result.stdout
    assert missing.exit_code == 2 and "auth_key" in missing.stderr and "Traceback" not in missing.stderr


async def test_discover_reports_a_dead_meter_in_one_line() -> None:
    result = await invoke("profile", "discover", "tcp://127.0.0.1:1", "--timeout", "0.5")
    assert result.exit_code == 1 and len(result.stderr.strip().splitlines()) == 1


def test_decode_a_ciphered_push_with_keys_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    keys = meter_security(4, 2)
    monkeypatch.setenv("GX_EK", keys.block_cipher_key.reveal().hex())
    monkeypatch.setenv("GX_AK", keys.authentication_key.reveal().hex())
    frame = push_message(4, 2, NOW, policy="authenticated-encrypted").hex()
    result = runner.invoke(app, ["decode", "dlms-push", frame, "--key-env", "GX_EK", "--auth-key-env", "GX_AK"])
    assert result.exit_code == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["security"] == "authenticated-encrypted" and document["meter_id"] == "SIM00400002"
    assert {r["quantity"] for r in document["records"]} >= {"1-0:1.8.0", "1-0:32.7.0"}
    assert "readings" not in document and "body" not in document  # the records shape of every decoder
    no_key = runner.invoke(app, ["decode", "dlms-push", frame])
    assert no_key.exit_code == 2 and "key" in no_key.stderr
    monkeypatch.setenv("GX_EK", "00" * 16)
    wrong = runner.invoke(app, ["decode", "dlms-push", frame, "--key-env", "GX_EK", "--auth-key-env", "GX_AK"])
    assert wrong.exit_code == 2 and "tag does not match" in wrong.stderr
    assert keys.authentication_key.reveal().hex() not in wrong.stderr + wrong.stdout
