"""Association parameters from a profile's ``parameters`` and a meter's options and secrets.

Shared by the driver and the field tools, so a profile, a fleet file and a command line
spell them alike. ``authentication``: none, low, high (manufacturer specific), high-md5,
high-sha1, high-sha256 (HLS with the password as secret) or high-gmac (HLS with the keys).
Secrets: ``password`` (LLS and password HLS), ``key`` (block cipher key) and ``auth_key``
(authentication key), 16 bytes or 32 hex digits; keys are never shown in messages.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from gxcore.errors import ConfigurationError, KeyMissingError
from gxcore.profiles.model import OptionValue
from gxcore.protocols.dlms.ciphering import SECURITY_CONTROL, SYSTEM_TITLE_LENGTH
from gxcore.protocols.dlms.parameters import (
    AUTHENTICATIONS,
    CLIENT_SYSTEM_TITLE,
    FRAME_COUNTER_OBIS,
    PASSWORD_HLS,
    DlmsParameters,
    DlmsSecurity,
)
from gxcore.secrets import Secret

PARAMETERS: Final = frozenset(
    {
        "client_address",
        "server_address",
        "physical_address",
        "authentication",
        "max_pdu",
        "interface",
        "timeout",
        "security_policy",
        "system_title",
        "server_system_title",
        "frame_counter_obis",
        "referencing",
        # Clock-sync by shift_time (class 8, method 6) of at most this many seconds, for meters that
        # limit the size of a clock adjustment (IDIS: +/-900 s); unset: the time is set outright.
        "clock_max_shift_s",
    }
)
# Short spellings a fleet file may use for the per-meter addresses.
ALIASES: Final = {
    "client": "client_address",
    "logical": "server_address",
    "server": "server_address",
    "physical": "physical_address",
}


def association_parameters(
    merged: Mapping[str, OptionValue], secrets: Mapping[str, Secret] | None, *, owner: str
) -> DlmsParameters:
    """DlmsParameters from merged parameters; ``secrets`` None validates only (no password, no keys)."""
    auth = str(merged.get("authentication", "none"))
    if auth not in AUTHENTICATIONS:
        raise ConfigurationError(f"{owner}: authentication must be one of {', '.join(AUTHENTICATIONS)}")
    interface = str(merged.get("interface", "wrapper"))
    if interface not in ("wrapper", "hdlc"):
        raise ConfigurationError(f"{owner}: interface must be 'wrapper' or 'hdlc'")
    policy = str(merged.get("security_policy", "authenticated-encrypted" if auth == "high-gmac" else "none"))
    if policy != "none" and policy not in SECURITY_CONTROL:
        raise ConfigurationError(f"{owner}: security_policy must be none or one of {sorted(SECURITY_CONTROL)}")
    if auth == "high-gmac" and policy == "none":
        raise ConfigurationError(f"{owner}: high-gmac needs a security_policy other than none")
    own_title = _system_title(merged.get("system_title"), "system_title") or CLIENT_SYSTEM_TITLE
    peer_title = _system_title(merged.get("server_system_title"), "server_system_title")
    counter_obis = str(merged.get("frame_counter_obis", FRAME_COUNTER_OBIS))
    referencing = str(merged.get("referencing", "ln"))
    if referencing not in ("ln", "sn"):
        raise ConfigurationError(f"{owner}: referencing must be 'ln' (logical names) or 'sn' (short names)")
    physical = merged.get("physical_address")
    password = secrets.get("password") if secrets is not None else None
    security: DlmsSecurity | None = None
    if secrets is None:
        if auth in {"low", "high-gmac"} or auth in PASSWORD_HLS:
            auth = "none"  # validation only: passwords and keys are per-meter secrets
    elif policy != "none":
        security = DlmsSecurity(
            own_title,
            _key(secrets, "key", "block cipher key", owner),
            _key(secrets, "auth_key", "authentication key", owner),
            policy,  # type: ignore[arg-type]  # checked against SECURITY_CONTROL above
            peer_title,
        )
    return DlmsParameters(
        client_address=integer(merged.get("client_address", 16), "client_address"),
        server_address=integer(merged.get("server_address", 1), "server_address"),
        authentication=auth,  # type: ignore[arg-type]  # checked against AUTHENTICATIONS above
        password=password,
        max_pdu=integer(merged.get("max_pdu", 1024), "max_pdu"),
        interface="hdlc" if interface == "hdlc" else "wrapper",
        physical_address=integer(physical, "physical_address") if physical is not None else None,
        security=security,
        frame_counter_obis=None if counter_obis.lower() == "none" else counter_obis,
        logical_name_referencing=referencing == "ln",
        system_title=own_title,
    )


def _system_title(value: object, what: str) -> bytes | None:
    """8 bytes from 16 hex digits or 8 characters."""
    if value is None:
        return None
    text = str(value).strip()
    if len(text) == 2 * SYSTEM_TITLE_LENGTH:
        try:
            return bytes.fromhex(text)
        except ValueError:
            pass
    raw = text.encode()
    if len(raw) == SYSTEM_TITLE_LENGTH:
        return raw
    raise ConfigurationError(f"DLMS {what} must be 16 hex digits or 8 characters, not {text!r}")


def _key(secrets: Mapping[str, Secret], name: str, what: str, owner: str) -> Secret:
    """A 16-byte key from the meter's secrets: raw bytes, or 32 hex digits; never shown."""
    secret = secrets.get(name)
    if secret is None:
        raise KeyMissingError(f"{owner}: DLMS ciphering needs the secret {name!r} ({what})")
    raw = secret.reveal()
    if len(raw) == 16:
        return Secret(raw)
    try:
        key = bytes.fromhex(raw.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        key = b""
    if len(key) != 16:
        raise ConfigurationError(f"{owner}: secret {name!r} is not a 16-byte key (value not shown)")
    return Secret(key)


def integer(value: object, what: str) -> int:
    """An integer option (ints or digit strings); ConfigurationError names it otherwise."""
    if isinstance(value, bool):
        raise ConfigurationError(f"DLMS {what} must be an integer")
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    raise ConfigurationError(f"DLMS {what} must be an integer, not {value!r}")


def meter_key(secrets: Mapping[str, Secret], name: str, what: str, owner: str) -> Secret:
    """A 16-byte key from a meter's secrets (raw or 32 hex digits); KeyMissingError when absent; never shown."""
    return _key(secrets, name, what, owner)
