"""`gxami tariff check|apply`: tariff calendar files, and applying one to meters as a command.

``check`` lives in :mod:`gxami_scheduler.firmware_cli` beside the firmware commands; this module
adds ``apply`` to the same typer app (the ``tariff`` entry point names this module). ``apply``
follows ``gxami command``'s conventions: the API is ``--api`` (or ``GXAMI_API_URL``), the token is
read from the environment variable ``--token-env`` names (``GXAMI_TOKEN``), never from the command
line; a bad file, a missing token or an unreachable API exits 2, a refusal prints the API's JSON
error and exits 1.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

from gxami_scheduler.firmware_cli import tariff_app

__all__ = ["tariff_app"]

TOKEN_ENV = "GXAMI_TOKEN"  # noqa: S105 - the name of an environment variable, not a token
TIMEOUT_S = 15.0
_DURATION = re.compile(r"^([0-9]+)([smhd])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def _fail(message: str, code: int = 2) -> NoReturn:
    typer.echo(f"gxami tariff apply: {message}", err=True)
    raise typer.Exit(code)


def parse_duration(text: str) -> int:
    """Seconds in ``30s``, ``15m``, ``2h`` or ``1d``."""
    m = _DURATION.fullmatch(text.strip())
    if m is None or int(m.group(1)) == 0:
        raise typer.BadParameter(f"{text!r} is not a duration like 30s, 15m, 2h or 1d", param_hint="--expires")
    return int(m.group(1)) * _UNITS[m.group(2)]


def post_command(api: str, token: str, body: dict[str, Any], timeout: float = TIMEOUT_S) -> dict[str, Any]:
    """POST /commands; the command, or exit 1 with the API's JSON error, or 2 when unreachable."""
    import urllib.error
    import urllib.request

    request = urllib.request.Request(  # noqa: S310 - the operator names the API's URL
        api.rstrip("/") + "/commands",
        data=json.dumps(body).encode(),
        method="POST",
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:  # noqa: S310 - as above
            answer: dict[str, Any] = json.loads(resp.read() or b"{}")
            return answer
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        try:
            refusal = json.loads(raw)
        except ValueError:
            refusal = {"error": raw.decode(errors="replace")[:500]}
        _fail(f"refused ({exc.code}): {json.dumps(refusal)}", 1)
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        _fail(f"cannot reach the API at {api}: {getattr(exc, 'reason', exc)}")


@tariff_app.command("apply")
def apply_command(
    file: Annotated[Path, typer.Argument(help="a tariff calendar YAML file")],
    group: Annotated[str | None, typer.Option("--group", help="every meter of this fleet group")] = None,
    meter: Annotated[list[str] | None, typer.Option("--meter", help="a meter id (repeat; instead of --group)")] = None,
    expires: Annotated[str, typer.Option("--expires", help="how long the command may wait: 30s, 15m, 2h, 1d")] = "1h",
    command_id: Annotated[str | None, typer.Option("--id", help="the command id (default: a new random one)")] = None,
    api: Annotated[str | None, typer.Option("--api", help="the scheduler API (default: GXAMI_API_URL)")] = None,
    token_env: Annotated[str, typer.Option("--token-env", help="environment variable holding the token")] = TOKEN_ENV,
) -> None:
    """Write FILE's calendar to a group's (or the given) meters: one tariff-calendar command (operator token)."""
    import uuid
    from datetime import UTC, datetime, timedelta

    from gxcore.errors import ConfigurationError
    from gxcore.tariffs import calendar_body, load_tariff_file

    if (group is None) == (not meter):
        _fail("give --group G or one or more --meter M (not both)")
    seconds = parse_duration(expires)
    try:
        calendar = load_tariff_file(file)
    except ConfigurationError as exc:
        _fail(f"tariff file refused, nothing sent:\n{exc}")
    base = api or os.environ.get("GXAMI_API_URL")
    if not base:
        _fail("no API: give --api URL or set GXAMI_API_URL")
    token = os.environ.get(token_env, "").strip()
    if not token:
        _fail(f"no token: set the environment variable {token_env} (or name another with --token-env)")
    body: dict[str, Any] = {
        "command_id": command_id or f"tariff-{uuid.uuid4().hex}",
        "kind": "tariff-calendar",
        "expires_at": (datetime.now(UTC) + timedelta(seconds=seconds)).isoformat(),
        "body": calendar_body(calendar),
        **({"group": group} if group is not None else {"meters": list(meter or [])}),
    }
    command = post_command(base, token, body)
    typer.echo(f"{command['command_id']}: {command['state']} ({command['kind']}, expires {command['expires_at']})")
    for m in command.get("meters", []):
        typer.echo(f"  {m['meter_id']}: {m['state']}")
