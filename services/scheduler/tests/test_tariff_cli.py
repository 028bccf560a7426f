"""`gxami tariff apply` refuses a bad file, a missing target and a missing token before any request."""

from __future__ import annotations

from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from gxami_scheduler.tariff_cli import tariff_app

EXAMPLE = Path(__file__).resolve().parents[3] / "docs" / "examples" / "tariff-day-night.yaml"


def _mounted() -> typer.Typer:
    holder = typer.Typer()
    holder.add_typer(tariff_app, name="tariff")
    return holder


def test_apply_refuses_before_sending_anything(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GXAMI_TOKEN", raising=False)
    unreachable = "http://127.0.0.1:9"  # discard port: a request would fail with "cannot reach"
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: X\nactivate_now: true\nseasons: []\nweeks: []\ndays: []\n")
    cli = _mounted()
    refused = CliRunner().invoke(cli, ["tariff", "apply", str(bad), "--group", "g", "--api", unreachable])
    assert refused.exit_code == 2
    assert f"{bad}:3: seasons:" in refused.output and "nothing sent" in refused.output
    no_target = CliRunner().invoke(cli, ["tariff", "apply", str(EXAMPLE), "--api", unreachable])
    assert no_target.exit_code == 2 and "--group G or one or more --meter M" in no_target.output
    both = CliRunner().invoke(cli, ["tariff", "apply", str(EXAMPLE), "--group", "g", "--meter", "m"])
    assert both.exit_code == 2
    no_token = CliRunner().invoke(cli, ["tariff", "apply", str(EXAMPLE), "--group", "g", "--api", unreachable])
    assert no_token.exit_code == 2 and "set the environment variable GXAMI_TOKEN" in no_token.output
    monkeypatch.setenv("OPS", "gxa_0000_secret")
    down = CliRunner().invoke(
        cli, ["tariff", "apply", str(EXAMPLE), "--group", "g", "--api", unreachable, "--token-env", "OPS"]
    )
    assert down.exit_code == 2 and "cannot reach the API" in down.output
    assert "gxa_0000_secret" not in down.output
    bad_expiry = CliRunner().invoke(cli, ["tariff", "apply", str(EXAMPLE), "--group", "g", "--expires", "soon"])
    assert bad_expiry.exit_code == 2 and "not a duration" in bad_expiry.output
