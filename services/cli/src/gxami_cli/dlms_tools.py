"""DLMS field tools: `gxami profile discover URL` and `gxami decode dlms-push HEX`.

``profile discover`` associates with a meter, reads its association view and the scaler
and unit of every value, and writes a device profile (YAML, validated by
:func:`gxcore.profiles.load_profile` and the DLMS driver before it is shown). Secrets come
only from environment variables named on the command line. ``decode dlms-push`` decodes
one DataNotification (wrapper frame, HDLC frame or bare APDU), deciphering it with the
given keys. Both follow the field tools' rules (see :mod:`gxami_cli.field`): JSON or YAML
on stdout, one line on stderr and exit code 2 (bad input) or 1 (meter, link) on failure.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from gxami_cli.counters import COUNTERS_HELP, counter_store
from gxami_cli.field import (
    InputError,
    emit,
    environment,
    exit_code,
    fail,
    hex_argument,
    parse_key,
    read_secrets,
    run_guarded,
)
from gxcore.errors import GxError, MeterTimeoutError
from gxcore.readings import json_value
from gxcore.secrets import Secret

if TYPE_CHECKING:  # the DLMS stack, profiles (pydantic) and YAML load inside the commands: a fast CLI start
    from gxcore.profiles import DeviceProfile

HEX_PARTS = typer.Argument(..., metavar="HEX", help="the push in hex (spaces allowed), or - for stdin")


def profile_discover(
    url: str = typer.Argument(..., help="tcp://host:port of the meter (DLMS wrapper, or HDLC with --interface)"),
    client: int = typer.Option(16, "--client", help="client address (SAP): 16 public, 1 management, ..."),
    server: int = typer.Option(1, "--server", help="server (logical device) address"),
    physical: int | None = typer.Option(None, "--physical", help="HDLC physical address"),
    interface: str = typer.Option("wrapper", "--interface", help="wrapper or hdlc"),
    authentication: str = typer.Option("none", "--authentication", help="none, low or high-gmac"),
    security_policy: str | None = typer.Option(
        None, "--security-policy", help="none, authenticated, encrypted, authenticated-encrypted"
    ),
    system_title: str | None = typer.Option(None, "--system-title", help="our system title: 16 hex digits"),
    password_env: str | None = typer.Option(None, "--password-env", metavar="VAR", help="variable with the password"),
    key_env: str | None = typer.Option(None, "--key-env", metavar="VAR", help="variable with the block cipher key"),
    auth_key_env: str | None = typer.Option(
        None, "--auth-key-env", metavar="VAR", help="variable with the authentication key"
    ),
    name: str | None = typer.Option(None, "--name", help="profile name (default: from the meter's device name)"),
    output: Path | None = typer.Option(None, "--output", "-o", help="write the YAML here instead of stdout"),
    timeout: float = typer.Option(5.0, "--timeout", min=0.01, help="seconds per exchange"),
    counters_file: Path | None = typer.Option(None, "--counters-file", help=COUNTERS_HELP),
) -> None:
    """Read a meter's association view and print (or write) a device profile for it."""
    import asyncio

    from gxcore.drivers.dlms.discovery import discover_profile
    from gxcore.drivers.dlms.reader import DlmsSession
    from gxcore.media.endpoint import Endpoint
    from gxcore.protocols.dlms.association import association_parameters

    def action() -> None:
        endpoint = Endpoint.parse(url)
        if endpoint.scheme != "tcp" or endpoint.port is None:
            raise InputError(f"DLMS discovery needs tcp://host:port, not {url!r}")
        parameters: dict[str, Any] = {
            "client_address": client,
            "server_address": server,
            "authentication": authentication,
            "interface": interface,
        }
        if physical is not None:
            parameters["physical_address"] = physical
        if security_policy is not None:
            parameters["security_policy"] = security_policy
        if system_title is not None:
            parameters["system_title"] = system_title
        secrets = read_secrets(password_env, None, [])
        if key_env is not None:
            secrets["key"] = Secret(environment(key_env))
        if auth_key_env is not None:
            secrets["auth_key"] = Secret(environment(auth_key_env))
        params = association_parameters(parameters, secrets, owner="command line")
        # Ciphered: counters (and the meter's lock) in the state file `gxami read` uses, under the
        # name `gxami read URL` gives the meter when no --meter-id is given: the URL.
        counters = counter_store(counters_file) if params.security is not None else None

        async def discover() -> Any:
            session = DlmsSession(url, params, timeout=timeout, counters=counters, meter_key=url)
            async with session:
                return await discover_profile(session, name=name, parameters=parameters)

        found = asyncio.run(_bounded(discover(), timeout))
        text = profile_yaml(found.profile, found.notes, url)
        checked = _validated(text)
        if output is None:
            typer.echo(text, nl=False)  # the profile itself is the output
            return
        _write(output, text)
        emit({"file": str(output), "name": checked.name, "points": len(checked.points), "notes": list(found.notes)})

    _guarded("profile discover", action)


def _guarded(command: str, action: Callable[[], None]) -> None:
    """Like field.run_guarded, for a command that prints its own output (YAML here)."""
    try:
        action()
    except InputError as exc:
        fail(command, str(exc), 2)
    except GxError as exc:
        fail(command, str(exc), exit_code(exc))
    except typer.Exit:
        raise
    except Exception as exc:  # noqa: BLE001 - the CLI's boundary: a bug must not print a traceback or a secret
        fail(command, f"internal error ({type(exc).__name__}); please report it", 1)


def profile_yaml(profile: DeviceProfile, notes: tuple[str, ...], url: str) -> str:
    """The profile as YAML, with the discovery's notes as comments at the top."""
    import yaml

    head = [f"# Discovered from {url} on {datetime.now().astimezone().isoformat(timespec='seconds')}."]
    head += [f"# left out: {note}" for note in notes]
    body = yaml.safe_dump(profile.model_dump(mode="json", exclude_defaults=True), sort_keys=False, allow_unicode=True)
    return "\n".join(head) + "\n" + body


def _validated(text: str) -> DeviceProfile:
    """Load the YAML back as a file (the way an operator will) and let the DLMS driver check it."""
    import tempfile

    from gxcore.drivers.dlms.driver import DlmsDriver
    from gxcore.profiles import load_profile

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "profile.yaml"
        path.write_text(text, encoding="utf-8")
        profile = load_profile(path)
    DlmsDriver().validate_profile(profile)
    return profile


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(path)
    except OSError as exc:
        raise InputError(f"cannot write {path}: {exc.strerror or type(exc).__name__}") from None


async def _bounded(work: Coroutine[Any, Any, Any], timeout: float) -> Any:
    import asyncio

    limit = max(30.0, 40 * timeout)
    try:
        async with asyncio.timeout(limit):
            return await work
    except TimeoutError:
        raise MeterTimeoutError(f"discovery did not finish within {limit:g} s") from None


def decode_dlms_push(
    hex_parts: list[str] = HEX_PARTS,
    key: str | None = typer.Option(None, "--key", help="block cipher key, 32 hex digits (prefer --key-env)"),
    key_env: str | None = typer.Option(None, "--key-env", metavar="VAR", help="variable with the block cipher key"),
    auth_key: str | None = typer.Option(None, "--auth-key", help="authentication key, 32 hex digits"),
    auth_key_env: str | None = typer.Option(
        None, "--auth-key-env", metavar="VAR", help="variable with the authentication key"
    ),
) -> None:
    """A DLMS DataNotification (push): plain, or general-glo/ded-ciphered with the given keys."""
    from gxcore.protocols.dlms.push import decode_dlms_push as decode

    def action() -> object:
        ek, ak = parse_key(key, key_env), parse_key(auth_key, auth_key_env)
        push = decode(
            hex_argument(hex_parts),
            key=Secret(ek) if ek is not None else None,
            auth_key=Secret(ak) if ak is not None else None,
        )
        return {
            "system_title": push.system_title.hex() if push.system_title is not None else None,
            "meter_id": push.meter_id,
            "timestamp": push.timestamp.isoformat() if push.timestamp else None,
            "security": push.security,
            "invocation_counter": push.invocation_counter,
            "long_invoke_id": push.long_invoke_id,
            "readings": [
                {"quantity": r.quantity, "value": json_value(r.value), "unit": r.unit, "timestamp": r.ts.isoformat()}
                for r in push.readings
            ],
            "body": _json(push.body),
        }

    run_guarded("decode dlms-push", action, decoding=True)


def _json(value: object) -> object:
    """A decoded A-XDR value as JSON: octet strings as hex, structures as lists."""
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, list):
        return [_json(v) for v in value]
    return value
