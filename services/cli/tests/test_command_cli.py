"""`gxami command` without a server: durations, and the one-line refusals before any request is sent."""

from __future__ import annotations

import pytest
import typer
from typer.testing import CliRunner

from gxami_cli.command import parse_duration
from gxami_cli.main import app


@pytest.mark.parametrize(("text", "seconds"), [("30s", 30), ("15m", 900), ("2h", 7200), ("1d", 86400)])
def test_durations(text: str, seconds: int) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["0m", "15", "m", "1w", "-5m", "1.5h"])
def test_a_bad_duration_is_refused(text: str) -> None:
    with pytest.raises(typer.BadParameter, match="is not a duration"):
        parse_duration(text)


def test_no_api_or_no_token_exits_2_with_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GXAMI_API_URL", raising=False)
    monkeypatch.delenv("GXAMI_TOKEN", raising=False)
    runner = CliRunner()
    no_api = runner.invoke(app, ["command", "disconnect", "e1"])
    assert no_api.exit_code == 2
    assert "no API: give --api URL or set GXAMI_API_URL" in no_api.output
    no_token = runner.invoke(app, ["command", "status", "x", "--api", "http://127.0.0.1:9"])
    assert no_token.exit_code == 2
    assert "set the environment variable GXAMI_TOKEN" in no_token.output
    bad = runner.invoke(app, ["command", "disconnect", "e1", "--expires", "soon", "--api", "http://127.0.0.1:9"])
    assert bad.exit_code == 2
    assert "is not a duration like 30s" in bad.output
