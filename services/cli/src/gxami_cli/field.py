"""Field tools: `gxami decode ...`, `gxami read URL`, `gxami profile ...`.

Every command prints JSON on stdout. Problems go to stderr as one line, never a
traceback, with exit code 2 for bad input or usage (bad hex, a frame that does not
decode, a bad profile, URL or option) and 1 for a meter or link that failed (timeout,
refused connection, a reply that breaks the protocol). Keys and passwords given to
these commands never appear in their output or messages; `read` takes secrets only
from environment variables named on the command line, so they stay out of shell
history and `ps`.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

import typer

from gxami_cli.counters import COUNTERS_HELP, counter_store
from gxcore.errors import ConfigurationError, GxError, KeyMissingError, MeterTimeoutError
from gxcore.readings import Unparsed, json_value
from gxcore.secrets import Secret

if TYPE_CHECKING:
    from gxcore.drivers import ReadResult
    from gxcore.profiles import DeviceProfile
    from gxcore.protocols.dsmr.austria import AustrianP1

# Only light modules above (typer, gxcore.errors, gxcore.secrets): a field command starts fast.
# Drivers, profiles (pydantic, YAML) and asyncio are imported inside the commands that use them;
# tests/test_cli_start.py checks that building the CLI leaves them unloaded.

MAX_INPUT = 1 << 20  # bytes read from a file or stdin: far above any telegram or readout
DEFAULT_PROFILES = {
    "dlms": "generic-dlms",
    "modbus": "eastron-sdm630",
    "mbus": "generic-mbus-heat",
    "wmbus": "generic-wmbus-water",
    "iec62056-21": "generic-iec62056-21",
    "dsmr": "dsmr5",
}
# gxcore.profiles.model.Purpose, spelled out so the option's help needs no pydantic (a test keeps them equal).
PURPOSES: tuple[str, ...] = ("billing", "diagnostics", "load-profile", "events", "instantaneous")
PURPOSE_HELP = f"points to read, repeatable: {', '.join(PURPOSES)}"

decode_app = typer.Typer(
    help="Decode captured frames and telegrams to JSON (no meter needed).",
    no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
)  # fmt: skip
profile_app = typer.Typer(
    help="Device profiles: validate, list, JSON Schema.",
    no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
)  # fmt: skip


class InputError(Exception):
    """Bad command-line input; the message is safe to show."""


# -- plumbing ------------------------------------------------------------------------------


def fail(command: str, message: str, code: int) -> NoReturn:
    """One line on stderr, then exit with ``code``."""
    typer.echo(f"gxami {command}: {' '.join(message.split())}", err=True)
    raise typer.Exit(code)


def emit(document: object) -> None:
    typer.echo(json.dumps(document, indent=2, ensure_ascii=False, default=str))


def exit_code(error: GxError) -> int:
    """2 for local, bad-input faults; 1 for the meter or the link."""
    return 2 if isinstance(error, ConfigurationError | KeyMissingError) else 1


def run_guarded(command: str, action: Callable[[], object], *, decoding: bool = False) -> None:
    """Run ``action`` and print its JSON; map every failure to a message and an exit code."""
    try:
        emit(action())
    except InputError as exc:
        fail(command, str(exc), 2)
    except GxError as exc:
        # Decoding has no meter on the other end: whatever does not decode is bad input.
        fail(command, str(exc), 2 if decoding else exit_code(exc))
    except typer.Exit:
        raise
    except Exception as exc:  # noqa: BLE001 - the CLI's boundary: a bug must not print a traceback or a secret
        fail(command, f"internal error ({type(exc).__name__}); please report it", 1)


def parse_hex(text: str, what: str = "input") -> bytes:
    """Bytes from hex text (spaces, colons and a 0x prefix allowed); InputError names the byte offset."""
    clean = "".join(text.split()).replace(":", "")
    clean = clean[2:] if clean[:2].lower() == "0x" else clean
    if not clean:
        raise InputError(f"{what} is empty")
    for index, char in enumerate(clean):
        if char not in "0123456789abcdefABCDEF":
            raise InputError(f"{what} is not hex at byte offset {index // 2} (character {char!r})")
    if len(clean) % 2:
        raise InputError(f"{what} has an odd number of hex digits: byte offset {len(clean) // 2} is incomplete")
    return bytes.fromhex(clean)


def parse_key(text: str | None, env: str | None) -> bytes | None:
    """An AES-128 key from ``--key`` or the variable named by ``--key-env``; the value is never shown."""
    if text is not None and env is not None:
        raise InputError("give --key or --key-env, not both")
    if env is not None:
        text = environment(env)
    if text is None:
        return None
    clean = "".join(text.split())
    try:
        key = bytes.fromhex(clean)
    except ValueError:
        raise InputError("the key is not hex (value not shown)") from None
    if len(key) != 16:
        raise InputError(f"the key must be 16 bytes (32 hex digits), got {len(key)} (value not shown)")
    return key


def environment(name: str) -> str:
    value = os.environ.get(name)
    if value is None:
        raise InputError(f"environment variable {name} is not set")
    return value


def read_input(source: str) -> bytes:
    """Bytes of a file, or of stdin for ``-``; bounded."""
    try:
        if source == "-":
            data = sys.stdin.buffer.read(MAX_INPUT + 1)
        else:
            with Path(source).open("rb") as handle:
                data = handle.read(MAX_INPUT + 1)
    except OSError as exc:
        raise InputError(f"cannot read {source}: {exc.strerror or type(exc).__name__}") from None
    if len(data) > MAX_INPUT:
        raise InputError(f"{source} is larger than {MAX_INPUT} bytes")
    return data


def hex_argument(parts: list[str]) -> bytes:
    """The HEX argument: one or more words (a pasted frame with spaces), or ``-`` for stdin."""
    if parts == ["-"]:
        return parse_hex(read_input("-").decode("ascii", "replace"))
    return parse_hex(" ".join(parts))


# -- gxami decode ---------------------------------------------------------------------------

HEX_PARTS = typer.Argument(..., metavar="HEX", help="the frame in hex (spaces allowed), or - for stdin")
KEY = typer.Option(None, "--key", help="AES-128 key, 32 hex digits (prefer --key-env)")
KEY_ENV = typer.Option(None, "--key-env", metavar="VAR", help="environment variable holding the key")
STRICT = typer.Option(
    False, "--strict", help="refuse input with anything undecodable (default: decode what can be, report the rest)"
)


ALL_RECORDS = typer.Option(
    False, "--all-records", help="every record with its raw bytes and error, and the full header (no profile)"
)


def warn_unparsed(command: str, unparsed: Sequence[Unparsed]) -> None:
    """One warning line per piece a tolerant decoder could not read (the JSON carries them too)."""
    for piece in unparsed:
        typer.echo(f"gxami {command}: warning: {piece.warning}", err=True)


@decode_app.command("mbus")
def decode_mbus(hex_parts: list[str] = HEX_PARTS, strict: bool = STRICT, all_records: bool = ALL_RECORDS) -> None:
    """A wired M-Bus RSP_UD long frame (68 L L 68 ... 16)."""
    from gxcore.protocols.mbus import decode_mbus_telegram

    def action() -> object:
        telegram = decode_mbus_telegram(hex_argument(hex_parts), strict=strict)
        warn_unparsed("decode mbus", telegram.unparsed)
        return telegram.to_json_dict(full=all_records)

    run_guarded("decode mbus", action, decoding=True)


@decode_app.command("wmbus")
def decode_wmbus(
    hex_parts: list[str] = HEX_PARTS,
    key: str | None = KEY,
    key_env: str | None = KEY_ENV,
    strict: bool = STRICT,
    all_records: bool = ALL_RECORDS,
) -> None:
    """A wireless M-Bus telegram (L field first, data-link CRCs in or out)."""
    from gxcore.protocols.wmbus import decode_wmbus_telegram

    def action() -> object:
        aes = parse_key(key, key_env)
        telegram = decode_wmbus_telegram(hex_argument(hex_parts), aes, strict=strict)
        warn_unparsed("decode wmbus", telegram.unparsed)
        document = telegram.to_json_dict(full=all_records)
        document["security_mode"] = telegram.security_mode
        return document

    run_guarded("decode wmbus", action, decoding=True)


@decode_app.command("dsmr")
def decode_dsmr(
    source: str = typer.Argument(..., metavar="FILE|-", help="a P1 telegram file, or - for stdin"),
    key: str | None = KEY,
    key_env: str | None = KEY_ENV,
    auth_key_env: str | None = typer.Option(
        None, "--auth-key-env", metavar="VAR", help="variable with the authentication key (Austrian SC 0x30)"
    ),
    strict: bool = STRICT,
) -> None:
    """A DSMR P1 telegram ('/' ... '!' CRC); encrypted P1 (Luxembourg Smarty, Austrian M-Bus/DLMS) with --key-env."""
    from gxcore.protocols.dsmr import decode_dsmr_telegram, decrypt_smarty_frame
    from gxcore.protocols.dsmr.austria import decrypt_austrian_p1, is_mbus_wrapped

    def action() -> object:
        data = _binary_or_hex(read_input(source))
        aes, auth = parse_key(key, key_env), parse_key(None, auth_key_env)
        if is_mbus_wrapped(data) or (data[:2] == b"\xdb\x08" and auth is not None):
            # Austria: general-glo-ciphered DLMS in M-Bus frames (or bare), SC 0x20 or 0x30.
            pushed = decrypt_austrian_p1(
                data,
                Secret(aes) if aes is not None else None,
                auth_key=Secret(auth) if auth is not None else None,
                received_at=datetime.now(UTC),
                strict=strict,
            )
            if pushed.telegram is not None:
                warn_unparsed("decode dsmr", pushed.telegram.unparsed)
            return _austrian_json(pushed)
        if data[:2] == b"\xdb\x08":  # general-glo-ciphering: an encrypted Smarty frame
            data = decrypt_smarty_frame(data.strip(b"\r\n"), Secret(aes) if aes is not None else None)
        telegram = decode_dsmr_telegram(data, strict=strict)
        warn_unparsed("decode dsmr", telegram.unparsed)
        for warning in telegram.warnings:
            typer.echo(f"gxami decode dsmr: warning: {warning}", err=True)
        return telegram.to_json_dict()

    run_guarded("decode dsmr", action, decoding=True)


_HEX_TEXT = frozenset(b"0123456789abcdefABCDEF \t\r\n")


def _binary_or_hex(data: bytes) -> bytes:
    """Encrypted P1 as captured: the bytes themselves, or their hex (as HAN readers log them)."""
    head = data.lstrip()[:2].lower()
    if head in (b"68", b"db") and data.strip() and set(data) <= _HEX_TEXT:
        return parse_hex(data.decode("ascii"))
    return data


def _austrian_json(pushed: AustrianP1) -> dict[str, object]:
    """The records shape of the other decoders, with the security header (never a key)."""
    header: dict[str, object] = {
        "id": pushed.meter_id,
        "medium": "electricity",
        "variant": "austria-dlms",
        "system_title": pushed.system_title.hex(),
        "security": pushed.security,
        "invocation_counter": pushed.invocation_counter,
    }
    if pushed.telegram is not None:
        return {**header, **pushed.telegram.to_json_dict(), "variant": "austria-dsmr"}
    push = pushed.push
    if push is None:
        return header
    return {
        **header,
        "timestamp": push.timestamp.isoformat() if push.timestamp else None,
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


@decode_app.command("iec62056-21")
def decode_iec(source: str = typer.Argument(..., metavar="FILE|-", help="a readout file, or - for stdin")) -> None:
    """An IEC 62056-21 readout: [identification] STX data lines ! ETX BCC, or the bare data lines."""
    from gxcore.protocols.iec62056_21 import decode_iec62056_21_readout

    run_guarded(
        "decode iec62056-21", lambda: decode_iec62056_21_readout(read_input(source)).to_json_dict(), decoding=True
    )


# -- gxami read -----------------------------------------------------------------------------


def parse_pairs(pairs: list[str], what: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name.strip():
            raise InputError(f"{what} {pair!r} is not NAME=VALUE")
        out[name.strip()] = value
    return out


def resolve_profile(protocol: str, name_or_file: str | None, folders: list[Path]) -> DeviceProfile:
    """A profile file, else a catalog name, else the protocol's default profile."""
    from gxcore.profiles import ProfileCatalog, load_profile

    if name_or_file is not None and (name_or_file.endswith((".yaml", ".yml")) or Path(name_or_file).is_file()):
        return load_profile(Path(name_or_file))
    name = name_or_file or DEFAULT_PROFILES.get(protocol)
    if name is None:
        raise InputError(f"no default profile for protocol {protocol!r}: give --profile NAME|FILE")
    return ProfileCatalog(*folders).get(name)


PASSWORD_ENV = typer.Option(None, "--password-env", metavar="VAR", help="variable with the password")
AUTH_KEY_ENV = typer.Option(None, "--auth-key-env", metavar="VAR", help="variable with the authentication key")


def read_secrets(
    password_env: str | None, key_env: str | None, secret_env: list[str], auth_key_env: str | None = None
) -> dict[str, Secret]:
    names = {"password": password_env, "key": key_env, "auth_key": auth_key_env} | parse_pairs(
        secret_env, "--secret-env"
    )
    return {name: Secret(environment(variable)) for name, variable in names.items() if variable is not None}


def parse_duration(text: str, what: str) -> timedelta:
    """``24h``, ``7d``, ``90m``, ``30s`` (one number and one unit) as a timedelta."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
    number, unit = text[:-1], text[-1:].lower()
    try:
        value = float(number)
    except ValueError:
        value = -1.0
    if unit not in units or not value > 0:
        raise InputError(f"{what} {text!r} is not a duration such as 24h, 7d, 90m or 30s")
    return timedelta(seconds=value * units[unit])


def parse_instant(text: str, what: str) -> datetime:
    """An ISO 8601 time; without an offset it is UTC (a meter's load profile is read in UTC)."""
    try:
        instant = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise InputError(f"{what} {text!r} is not an ISO time such as 2026-12-01T00:00Z") from None
    return instant if instant.tzinfo is not None else instant.replace(tzinfo=UTC)


def time_range(since: str | None, until: str | None, last: str | None) -> tuple[datetime | None, datetime | None]:
    """(--from, --to) as aware instants, or from --last back from --to (default now); both None if none given."""
    if last is not None and since is not None:
        raise InputError("give --from or --last, not both")
    end = parse_instant(until, "--to") if until is not None else None
    if last is not None:
        start = (end or datetime.now(UTC)) - parse_duration(last, "--last")
    elif since is not None:
        start = parse_instant(since, "--from")
    else:
        if end is not None:
            raise InputError("--to needs --from or --last")
        return None, None
    if end is not None and end <= start:
        raise InputError(f"--to {end.isoformat()} is not after the start {start.isoformat()}")
    return start, end


def empty_reason(profile: DeviceProfile, purposes: frozenset[str], profile_from: datetime | None) -> str:
    """Why a read gave nothing, in words an operator can act on."""
    points = profile.points_for(purposes)
    if not points:
        return f"no readings: profile {profile.name} has no points for {', '.join(sorted(purposes))}"
    ranged = [p for p in points if "load-profile" in p.purpose]
    unbounded = not any(p.options.get("last_entries") for p in ranged)
    if ranged and len(ranged) == len(points) and profile_from is None and unbounded:
        return "no readings: load-profile points need a range: give --from/--to or --last (e.g. --last 24h)"
    return f"no readings: the meter returned no values for the {len(points)} selected point(s)"


def read_hint(
    protocol: str, profile: DeviceProfile, options: dict[str, str], secrets: dict[str, Secret], exc: GxError
) -> str | None:
    """Where a failed read's likely cause is the framing or missing authentication, say so."""
    from gxcore.errors import AccessDeniedError, FramingError, MediaError

    if protocol != "dlms":
        return None
    interface = str(options.get("interface") or profile.parameters.get("interface") or "wrapper")
    # A meter that does not answer, answers garbage or hangs up on our first frame: often the framing.
    framing = isinstance(exc, MeterTimeoutError | FramingError) or (
        isinstance(exc, MediaError) and "closed by peer" in exc.reason
    )
    if framing and interface == "wrapper":
        return "a meter behind a serial converter may speak HDLC: try -o interface=hdlc"
    if framing and interface == "hdlc":
        return "a meter on TCP may speak the DLMS wrapper: try -o interface=wrapper"
    if isinstance(exc, AccessDeniedError):
        authentication = str(options.get("authentication") or profile.parameters.get("authentication") or "none")
        if authentication == "none":
            return "the meter may need authentication: -o authentication=low --password-env VAR, or another client"
        if "password" not in secrets and authentication == "low":
            return "authentication=low needs --password-env VAR"
    return None


def read_command(
    url: str = typer.Argument(..., help="tcp://host:port, serial:///dev/ttyUSB0?baud=2400, ..."),
    protocol: str = typer.Option(..., "--protocol", "-p", help="dlms, modbus, mbus, wmbus, iec62056-21, dsmr, ..."),
    profile: str | None = typer.Option(None, "--profile", help="profile name or YAML file (default per protocol)"),
    option: list[str] = typer.Option([], "--option", "-o", metavar="K=V", help="per-meter option, repeatable"),
    password_env: str | None = PASSWORD_ENV,
    key_env: str | None = typer.Option(None, "--key-env", metavar="VAR", help="variable with the key (hex)"),
    auth_key_env: str | None = AUTH_KEY_ENV,
    secret_env: list[str] = typer.Option([], "--secret-env", metavar="NAME=VAR", help="any other secret, repeatable"),
    purpose: list[str] = typer.Option(["billing"], "--purpose", help=PURPOSE_HELP),
    since: str | None = typer.Option(
        None, "--from", metavar="TIME", help="load profile from (ISO time, e.g. 2026-12-01T00:00Z)"
    ),
    until: str | None = typer.Option(None, "--to", metavar="TIME", help="load profile up to (ISO time; default: now)"),
    last: str | None = typer.Option(
        None, "--last", metavar="DURATION", help="load profile of the last 24h, 7d, 90m ..."
    ),
    timeout: float = typer.Option(5.0, "--timeout", min=0.01, help="seconds per exchange"),
    meter_id: str | None = typer.Option(None, "--meter-id", help="name of the meter in the output"),
    profile_dir: list[Path] = typer.Option([], "--profile-dir", help="extra profile folder, repeatable"),
    counters_file: Path | None = typer.Option(None, "--counters-file", help=COUNTERS_HELP),
) -> None:
    """Read one meter once through its protocol driver and print the readings.

    With --from/--to/--last the load-profile points are read over that range (and
    --purpose load-profile is implied).
    """
    import asyncio

    from gxcore.drivers import MeterTarget, ReadRequest, load_driver
    from gxcore.drivers.api import unknown_meter_options

    meter = meter_id or url

    def action() -> object:
        profile_from, profile_to = time_range(since, until, last)
        purposes = set(purpose) | ({"load-profile"} if profile_from is not None else set())
        unknown = sorted(purposes - set(PURPOSES))
        if unknown:
            raise InputError(f"unknown purpose {', '.join(unknown)} (use {', '.join(PURPOSES)})")
        chosen = resolve_profile(protocol, profile, profile_dir)
        if chosen.protocol != protocol:
            raise InputError(f"profile {chosen.name} is for protocol {chosen.protocol!r}, not {protocol!r}")
        driver = load_driver(protocol)
        options = parse_pairs(option, "--option")
        refusal = unknown_meter_options(driver, options)
        if refusal is not None:
            raise InputError(refusal)
        driver.validate_profile(chosen)
        if "load-profile" in purposes and not any("load-profile" in p.purpose for p in chosen.points):
            raise InputError(f"profile {chosen.name} has no load-profile points to read")
        if hasattr(driver, "counters"):  # ciphered protocols: counters survive this process
            driver.counters = counter_store(counters_file)
        secrets = read_secrets(password_env, key_env, secret_env, auth_key_env)
        target = MeterTarget(meter, url, options, secrets)
        target.endpoint()  # a bad URL is bad input, reported before any connection
        request = ReadRequest(purposes=frozenset(purposes), profile_from=profile_from, profile_to=profile_to)
        try:
            result = asyncio.run(_bounded(driver.read(target, chosen, request, timeout=timeout), timeout))
        except GxError as exc:
            hint = read_hint(protocol, chosen, options, secrets, exc)
            if hint is not None:
                exc.reason = f"{exc.reason} (hint: {hint})"
            raise
        if not result.readings and not result.events:
            typer.echo(f"gxami read: warning: {empty_reason(chosen, frozenset(purposes), profile_from)}", err=True)
        for problem in result.problems:  # one bad point never hides the good ones; it is said, not dropped
            typer.echo(f"gxami read: warning: {problem.describe()}", err=True)
        return {
            "meter": meter,
            "protocol": protocol,
            "profile": chosen.name,
            "meter_time": result.meter_time.isoformat() if result.meter_time else None,
            "readings": [
                {"quantity": r.quantity, "value": json_value(r.value), "unit": r.unit, "timestamp": r.ts.isoformat()}
                for r in result.readings
            ],
            "events": [
                {
                    "timestamp": e.timestamp.isoformat(),
                    "kind": e.kind,
                    "severity": e.severity,
                    "code": e.code,
                    "source": e.source,
                    "event_id": e.event_id,
                }
                for e in result.events
            ],
            "problems": [{"quantity": p.quantity, "source": p.source, "reason": p.reason} for p in result.problems],
        }

    run_guarded("read", action)


async def _bounded(read: Awaitable[ReadResult], timeout: float) -> ReadResult:
    """The whole session bounded too: a driver that keeps a trickling meter talking still ends."""
    import asyncio

    limit = max(30.0, 20 * timeout)
    try:
        async with asyncio.timeout(limit):
            return await read
    except TimeoutError:
        raise MeterTimeoutError(f"the read did not finish within {limit:g} s") from None


# -- gxami profile --------------------------------------------------------------------------


@profile_app.command("validate")
def profile_validate(file: Path = typer.Argument(..., help="the profile YAML file")) -> None:
    """Check a profile file against the model and, when installed, its protocol's driver."""
    from gxcore.drivers import load_driver
    from gxcore.profiles import load_profile

    def action() -> object:
        checked = load_profile(file)
        try:
            driver = load_driver(checked.protocol)
        except ConfigurationError:
            driver = None
        if driver is not None:
            driver.validate_profile(checked)
        return {
            "file": str(file),
            "name": checked.name,
            "protocol": checked.protocol,
            "points": len(checked.points),
            "driver_checked": driver is not None,
            "valid": True,
        }

    run_guarded("profile validate", action, decoding=True)


@profile_app.command("schema")
def profile_schema() -> None:
    """Print the JSON Schema of profile files (for editors)."""
    from gxcore.profiles import json_schema

    typer.echo(json_schema())


@profile_app.command("list")
def profile_list(
    profile_dir: list[Path] = typer.Option([], "--profile-dir", help="extra profile folder, repeatable"),
) -> None:
    """List the known profiles (built in, then extra folders)."""
    from gxcore.profiles import ProfileCatalog

    def action() -> object:
        catalog = ProfileCatalog(*profile_dir)
        profiles = [catalog.get(name) for name in catalog.names()]
        return [
            {"name": p.name, "protocol": p.protocol, "description": p.description, "points": len(p.points)}
            for p in profiles
        ]

    run_guarded("profile list", action, decoding=True)
