"""`gxami command ...`: commands to meters through the scheduler's command API.

The API is ``--api`` (or GXAMI_API_URL); the bearer token is read from the environment variable
that ``--token-env`` names (GXAMI_TOKEN by default), so it never appears on a command line or in
shell history. A refusal prints the API's JSON error and exits 1; a bad option, a missing token
or an unreachable API exits 2.
"""

from __future__ import annotations

import os
import re
from typing import Annotated, Any

import typer

app = typer.Typer(help="Commands to meters (disconnect, reconnect, clock sync) through the scheduler API.")

ApiOption = Annotated[
    str | None, typer.Option("--api", help="the scheduler's API, e.g. http://127.0.0.1:8080 (default: GXAMI_API_URL)")
]
TokenEnvOption = Annotated[str, typer.Option("--token-env", help="the environment variable that holds the API token")]
ExpiresOption = Annotated[str, typer.Option("--expires", help="how long the command may wait: 30s, 15m, 2h, 1d")]
IdOption = Annotated[
    str | None, typer.Option("--id", help="the command id (idempotency key); default: a new random one")
]
TIMEOUT_S = 15.0
TOKEN_ENV = "GXAMI_TOKEN"  # noqa: S105 - the name of an environment variable, not a token
_DURATION = re.compile(r"^([0-9]+)([smhd])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> int:
    """Seconds in ``30s``, ``15m``, ``2h`` or ``1d``; raises typer.BadParameter otherwise."""
    m = _DURATION.fullmatch(text.strip())
    if m is None or int(m.group(1)) == 0:
        raise typer.BadParameter(f"{text!r} is not a duration like 30s, 15m, 2h or 1d", param_hint="--expires")
    return int(m.group(1)) * _UNITS[m.group(2)]


def _fail(what: str, message: str, code: int = 2) -> typer.Exit:
    typer.echo(f"gxami command {what}: {message}", err=True)
    return typer.Exit(code)


def call(what: str, method: str, path: str, api: str | None, token_env: str, body: dict[str, Any] | None = None) -> Any:
    """One request to the API; the decoded JSON answer, or exit 1 (refused) / 2 (no token, unreachable)."""
    import json
    import urllib.error
    import urllib.request

    base = api or os.environ.get("GXAMI_API_URL")
    if not base:
        raise _fail(what, "no API: give --api URL or set GXAMI_API_URL")
    token = os.environ.get(token_env)
    if not token:
        raise _fail(what, f"no token: set the environment variable {token_env} (or name another with --token-env)")
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(  # noqa: S310 - the operator names the API's URL
        base.rstrip("/") + path,
        data=data,
        method=method,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_S) as resp:  # noqa: S310 - as above
            return json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        try:
            answer = json.loads(raw)
        except ValueError:
            answer = {"error": raw.decode(errors="replace")[:500]}
        typer.echo(f"gxami command {what}: refused ({exc.code}): {json.dumps(answer)}", err=True)
        raise typer.Exit(1) from None
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        reason = getattr(exc, "reason", exc)
        raise _fail(what, f"cannot reach the API at {base}: {reason}") from None


def show(command: dict[str, Any]) -> None:
    typer.echo(f"{command['command_id']}: {command['state']} ({command['kind']}, expires {command['expires_at']})")
    for meter in command.get("meters", []):
        extra = meter.get("result_state") or meter.get("error_message") or ""
        typer.echo(f"  {meter['meter_id']}: {meter['state']}" + (f" {extra}" if extra else ""))


def _send(kind: str, meter: str, expires: str, command_id: str | None, api: str | None, token_env: str) -> None:
    import uuid
    from datetime import UTC, datetime, timedelta

    seconds = parse_duration(expires)
    body = {
        "command_id": command_id or f"cli-{uuid.uuid4().hex}",
        "kind": kind,
        "meter": meter,
        "expires_at": (datetime.now(UTC) + timedelta(seconds=seconds)).isoformat(),
    }
    show(call(kind, "POST", "/commands", api, token_env, body))


def _relay_command(kind: str, doc: str) -> None:
    def command(
        meter: Annotated[str, typer.Argument(help="the meter id")],
        expires: ExpiresOption = "15m",
        command_id: IdOption = None,
        api: ApiOption = None,
        token_env: TokenEnvOption = TOKEN_ENV,
    ) -> None:
        _send(kind, meter, expires, command_id, api, token_env)

    command.__doc__ = doc
    app.command(kind)(command)


_relay_command("disconnect", "Open the meter's supply relay (read back by the collector).")
_relay_command("reconnect", "Close the meter's supply relay.")
_relay_command("arm-reconnect", "Make the relay ready for reconnection: the customer presses the meter's button.")
_relay_command("clock-sync", "Set the meter's clock to the collector's.")


@app.command("status")
def status(
    command_id: Annotated[str, typer.Argument(help="the command id")],
    api: ApiOption = None,
    token_env: TokenEnvOption = TOKEN_ENV,
    history: Annotated[bool, typer.Option("--history", help="also print every state change")] = False,
) -> None:
    """A command's state and each meter's."""
    from urllib.parse import quote

    command = call("status", "GET", f"/commands/{quote(command_id, safe='')}", api, token_env)
    show(command)
    if history:
        for h in command.get("history", []):
            typer.echo(f"  {h['at']} {h['meter_id']} {h['state']} by {h['actor']} {h['detail']}".rstrip())


@app.command("list")
def list_(
    state: Annotated[str | None, typer.Option("--state", help="only commands in this state")] = None,
    meter: Annotated[str | None, typer.Option("--meter", help="only commands for this meter")] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, max=1000)] = 50,
    api: ApiOption = None,
    token_env: TokenEnvOption = TOKEN_ENV,
) -> None:
    """The newest commands first."""
    from urllib.parse import urlencode

    query = urlencode({k: v for k, v in (("state", state), ("meter", meter), ("limit", str(limit))) if v})
    page = call("list", "GET", f"/commands?{query}", api, token_env)
    for c in page["commands"]:
        who = c["requested_by"]
        typer.echo(f"{c['command_id']}  {c['state']:<10} {c['kind']:<14} {c['meter_count']:>5} meters  {who}")


@app.command("approve")
def approve(
    command_id: Annotated[str, typer.Argument(help="the command id")],
    api: ApiOption = None,
    token_env: TokenEnvOption = TOKEN_ENV,
) -> None:
    """Approve another operator's command (four eyes)."""
    from urllib.parse import quote

    show(call("approve", "POST", f"/commands/{quote(command_id, safe='')}/approve", api, token_env, {}))


@app.command("cancel")
def cancel(
    command_id: Annotated[str, typer.Argument(help="the command id")],
    api: ApiOption = None,
    token_env: TokenEnvOption = TOKEN_ENV,
) -> None:
    """Cancel a command's meters that are not yet queued for the collector."""
    from urllib.parse import quote

    show(call("cancel", "POST", f"/commands/{quote(command_id, safe='')}/cancel", api, token_env, {}))
