"""DLMS field tools: `gxami profile discover URL` and `gxami decode dlms-push HEX`.

``profile discover`` associates with a meter, reads its association view and the scaler
and unit of every value, and writes a device profile (YAML, validated by
:func:`gxcore.profiles.load_profile` and the DLMS driver before it is shown). Secrets come
only from environment variables named on the command line. ``decode dlms-push`` decodes
one DataNotification (wrapper frame, HDLC frame, bare LLC PDU or bare APDU), deciphering it
with the given keys; its readings come out as ``records`` like every other decoder's (the raw
body only with ``--all-records``), HAN lists recognised without ``--profile``. Both follow
the field tools' rules (see :mod:`gxami_cli.field`): JSON or YAML on stdout, one line on
stderr and exit code 2 (bad input) or 1 (meter, link) on failure.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from gxami_cli.counters import COUNTERS_HELP, counter_store
from gxami_cli.field import (
    ALL_RECORDS,
    AUTH_KEY_ENV,
    PASSWORD_ENV,
    InputError,
    emit,
    exit_code,
    fail,
    hex_argument,
    parse_key,
    parse_pairs,
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
    url: str = typer.Argument(..., help="tcp://host:port of the meter (DLMS wrapper, or HDLC with -o interface=hdlc)"),
    option: list[str] = typer.Option(
        [],
        "--option",
        "-o",
        metavar="K=V",
        help="association option as for gxami read: client, server, physical, interface, authentication, "
        "security_policy, system_title, ...",
    ),
    client: int | None = typer.Option(None, "--client", hidden=True),  # before -o client=; kept for scripts
    server: int | None = typer.Option(None, "--server", hidden=True),
    physical: int | None = typer.Option(None, "--physical", hidden=True),
    interface: str | None = typer.Option(None, "--interface", hidden=True),
    authentication: str | None = typer.Option(None, "--authentication", hidden=True),
    security_policy: str | None = typer.Option(None, "--security-policy", hidden=True),
    system_title: str | None = typer.Option(None, "--system-title", hidden=True),
    password_env: str | None = PASSWORD_ENV,
    key_env: str | None = typer.Option(None, "--key-env", metavar="VAR", help="variable with the block cipher key"),
    auth_key_env: str | None = AUTH_KEY_ENV,
    name: str | None = typer.Option(None, "--name", help="profile name (default: from the meter's device name)"),
    output: Path | None = typer.Option(None, "--output", help="write the YAML here instead of stdout"),
    timeout: float = typer.Option(5.0, "--timeout", min=0.01, help="seconds per exchange"),
    counters_file: Path | None = typer.Option(None, "--counters-file", help=COUNTERS_HELP),
) -> None:
    """Read a meter's association view and print (or write) a device profile for it."""
    import asyncio

    from gxcore.drivers.api import unknown_meter_options
    from gxcore.drivers.dlms.discovery import discover_profile
    from gxcore.drivers.dlms.driver import DlmsDriver
    from gxcore.drivers.dlms.reader import DlmsSession
    from gxcore.media.endpoint import Endpoint
    from gxcore.protocols.dlms.association import ALIASES, association_parameters

    def action() -> None:
        endpoint = Endpoint.parse(url)
        if endpoint.scheme != "tcp" or endpoint.port is None:
            raise InputError(f"DLMS discovery needs tcp://host:port, not {url!r}")
        options = parse_pairs(option, "--option")
        refusal = unknown_meter_options(DlmsDriver(), options)
        if refusal is not None:
            raise InputError(refusal)
        parameters: dict[str, Any] = {
            "client_address": 16, "server_address": 1, "authentication": "none", "interface": "wrapper",
        }  # fmt: skip
        legacy = {
            "client_address": client, "server_address": server, "physical_address": physical,
            "interface": interface, "authentication": authentication, "security_policy": security_policy,
            "system_title": system_title,
        }  # fmt: skip
        parameters |= {k: v for k, v in legacy.items() if v is not None}
        for key, value in options.items():
            name_ = ALIASES.get(key, key)
            parameters[name_] = _number(value, name_) if name_ in _INTEGER_PARAMETERS else value
        secrets = read_secrets(password_env, key_env, [], auth_key_env)
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


_INTEGER_PARAMETERS = frozenset({"client_address", "server_address", "physical_address", "max_pdu"})


def _number(value: str, name: str) -> int:
    """An address option as the profile's YAML gives it: a number (16, 0x10)."""
    try:
        return int(value, 0)
    except ValueError:
        raise InputError(f"option {name}={value!r} is not a number") from None


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
    profile: str | None = typer.Option(
        None, "--profile", help="device profile whose push_objects name the elements (default: recognise HAN lists)"
    ),
    all_records: bool = ALL_RECORDS,
) -> None:
    """A DLMS DataNotification (push): HDLC, wrapper, bare LLC (E6 E7 00) or APDU; plain or ciphered."""
    from gxcore.protocols.dlms.push import NAMES
    from gxcore.protocols.dlms.push import decode_dlms_push as decode

    def action() -> object:
        ek, ak = parse_key(key, key_env), parse_key(auth_key, auth_key_env)
        columns: list[Any] | None = None
        names: tuple[str, ...] = NAMES
        if profile is not None:
            columns, names = _push_layout(profile)
        push = decode(
            hex_argument(hex_parts),
            key=Secret(ek) if ek is not None else None,
            auth_key=Secret(ak) if ak is not None else None,
            columns=columns,
            names=names,
            received_at=datetime.now(UTC),
        )
        document: dict[str, object] = {
            "system_title": push.system_title.hex() if push.system_title is not None else None,
            "meter_id": push.meter_id,
            "timestamp": push.timestamp.isoformat() if push.timestamp else None,
            "security": push.security,
            "invocation_counter": push.invocation_counter,
            "long_invoke_id": push.long_invoke_id,
            "han_list": push.han_list,
            "time_source": push.time_source,
            "records": [
                {
                    "quantity": r.quantity,
                    "value": json_value(r.value),
                    "unit": r.unit,
                    "timestamp": r.ts.isoformat(),
                    **r.extra,
                }
                for r in push.readings
            ],
        }
        if all_records:
            document["body"] = _json(push.body)
        return document

    run_guarded("decode dlms-push", action, decoding=True)


def _push_layout(name: str) -> tuple[list[Any], tuple[str, ...]]:
    """The named profile's push objects as columns, and the names that name the meter."""
    from gxcore.drivers.dlms.pushes import push_layout
    from gxcore.errors import ConfigurationError
    from gxcore.profiles import ProfileCatalog

    try:
        found = ProfileCatalog().get(name)
    except ConfigurationError as exc:
        raise InputError(f"--profile: {exc}") from None
    columns, names = push_layout(found)
    return list(columns), names


def _json(value: object) -> object:
    """A decoded A-XDR value as JSON: octet strings as hex, structures as lists."""
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, list):
        return [_json(v) for v in value]
    return value
