"""`gxami firmware upload|rollout|status` over the scheduler's HTTP API, and `gxami tariff check`.

The API is ``--api`` (or ``GXAMI_API_URL``); the token is read from the environment variable that
``--token-env`` names (``GXAMI_TOKEN`` by default), never from the command line, so it stays
out of shell history and process lists. Every request is bounded by ``--timeout``. Output is JSON
on stdout; errors are one line on stderr and exit 1 (refused by the API) or 2 (bad input, no
token, API unreachable).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

firmware_app = typer.Typer(help="Firmware images and rollouts.", no_args_is_help=True, add_completion=False)
tariff_app = typer.Typer(help="Tariff calendar files.", no_args_is_help=True, add_completion=False)

Api = Annotated[str, typer.Option("--api", envvar="GXAMI_API_URL", help="the scheduler API, e.g. http://host:8080")]
TokenEnv = Annotated[str, typer.Option("--token-env", help="environment variable holding the API token")]
TOKEN_ENV = "GXAMI_TOKEN"  # noqa: S105 - the name of the variable that holds the token, not a token
Timeout = Annotated[float, typer.Option("--timeout", min=0.1, max=600, help="seconds for each request")]


def _fail(code: int, message: str) -> NoReturn:
    typer.echo(f"gxami: {message}", err=True)
    raise typer.Exit(code)


def _token(name: str) -> str:
    token = os.environ.get(name, "").strip()
    if not token:
        _fail(2, f"no API token: set the environment variable {name} (or name another with --token-env)")
    return token


def _call(method: str, url: str, token: str, timeout: float, **kwargs: Any) -> Any:
    """One request; the JSON answer, or exit 1 with the API's error, or 2 when it cannot be reached."""
    import asyncio

    import aiohttp

    async def run() -> tuple[int, Any]:
        limits = aiohttp.ClientTimeout(total=timeout, sock_connect=timeout, sock_read=timeout)
        headers = {"Authorization": f"Bearer {token}", **kwargs.pop("headers", {})}
        async with (
            aiohttp.ClientSession(timeout=limits) as http,
            http.request(method, url, headers=headers, allow_redirects=False, **kwargs) as resp,
        ):
            try:
                return resp.status, await resp.json(content_type=None)
            except ValueError:
                return resp.status, {"error": f"answer {resp.status} is not JSON"}

    try:
        status, body = asyncio.run(run())
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        _fail(2, f"cannot reach the API at {url.split('?', maxsplit=1)[0]}: {type(exc).__name__}")
    if status >= 400:
        error = body.get("error") if isinstance(body, dict) else None
        _fail(1, f"{method} {url.split('?', maxsplit=1)[0]}: {status} {error or ''}".rstrip())
    return body


def _echo(body: object) -> None:
    typer.echo(json.dumps(body, indent=2, sort_keys=True))


@firmware_app.command("upload")
def upload_command(
    image: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="the image file")],
    identification: Annotated[str, typer.Option(help="what the meter reports once it runs the image")],
    api: Api,
    token_env: TokenEnv = TOKEN_ENV,
    timeout: Timeout = 60.0,
) -> None:
    """Store an image once by its SHA-256 (admin token); prints the hash to roll out."""
    from urllib.parse import quote

    data = image.read_bytes()
    url = f"{api.rstrip('/')}/firmware/images?identification={quote(identification)}"
    _echo(_call("POST", url, _token(token_env), timeout, data=data))


@firmware_app.command("rollout")
def rollout_command(
    image: Annotated[str, typer.Argument(help="SHA-256 of an uploaded image")],
    group: Annotated[str, typer.Option(help="the meter group to update")],
    api: Api,
    waves: Annotated[str, typer.Option(help="cumulative percentages of the group per wave")] = "1,10,100",
    threshold: Annotated[float, typer.Option(min=0, max=1, help="failure rate of a wave that halts it")] = 0.05,
    activate_at: Annotated[str | None, typer.Option(help="ISO 8601 time to activate at (default: at once)")] = None,
    token_env: TokenEnv = TOKEN_ENV,
    timeout: Timeout = 30.0,
) -> None:
    """Plan a rollout of IMAGE to a group in waves (operator token); prints the rollout and its waves."""
    from gxami_scheduler.rollout import RolloutPlanError, parse_waves

    try:
        parse_waves(waves)
    except RolloutPlanError as exc:
        _fail(2, str(exc))
    order: dict[str, Any] = {"image": image.lower(), "group": group, "waves": waves, "threshold": threshold}
    if activate_at is not None:
        order["activate_at"] = activate_at
    _echo(_call("POST", f"{api.rstrip('/')}/firmware/rollouts", _token(token_env), timeout, json=order))


@firmware_app.command("status")
def status_command(
    rollout: Annotated[int, typer.Argument(min=1, help="the rollout's number")],
    api: Api,
    token_env: TokenEnv = TOKEN_ENV,
    timeout: Timeout = 30.0,
) -> None:
    """A rollout's state and each meter's progress (viewer token)."""
    _echo(_call("GET", f"{api.rstrip('/')}/firmware/rollouts/{rollout}", _token(token_env), timeout))


@tariff_app.command("check")
def check_command(
    file: Annotated[Path, typer.Argument(help="a tariff calendar YAML file")],
    body: Annotated[bool, typer.Option("--body", help="print the tariff-calendar command body")] = False,
) -> None:
    """Check a tariff file against its schema; every problem with its line, exit 2 if any."""
    from gxcore.errors import ConfigurationError
    from gxcore.tariffs import calendar_body, load_tariff_file

    try:
        calendar = load_tariff_file(file)
    except ConfigurationError as exc:
        _fail(2, str(exc))
    if body:
        _echo(calendar_body(calendar))
    else:
        typer.echo(
            f"{file}: calendar {calendar.name}: {len(calendar.seasons)} seasons, {len(calendar.weeks)} weeks,"
            f" {len(calendar.days)} day profiles, {len(calendar.special_days)} special days"
        )
