"""What a DLMS read needs (association parameters, what to read) and what it gives back."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from gxcore.errors import ConfigurationError
from gxcore.protocols.dlms.ciphering import SECURITY_CONTROL, SYSTEM_TITLE_LENGTH, SecurityPolicy
from gxcore.protocols.dlms.obis import dotted, reduced
from gxcore.readings import MeterValue
from gxcore.secrets import Secret

Authentication = Literal["none", "low", "high", "high-md5", "high-sha1", "high-sha256", "high-gmac"]
Interface = Literal["wrapper", "hdlc"]
AUTHENTICATIONS = ("none", "low", "high", "high-md5", "high-sha1", "high-sha256", "high-gmac")
# HLS whose secret is the password (IEC 62056-5-3 mechanisms 2, 3, 4 and 6), not the keys.
PASSWORD_HLS = frozenset({"high", "high-md5", "high-sha1", "high-sha256"})
# "high" (manufacturer specific; gurux: AES-128 of the challenge under the password) takes one AES key.
MAX_HIGH_PASSWORD = 16
FRAME_COUNTER_OBIS = "0.0.43.1.0.255"
PUBLIC_CLIENT = 16
CLIENT_SYSTEM_TITLE = b"GXC\x00\x00\x00\x00\x01"  # override per deployment with system_title

CLOCK_OBIS = "0.0.1.0.0.255"
CLASS_DATA = 1
CLASS_REGISTER = 3
CLASS_EXTENDED_REGISTER = 4
CLASS_DEMAND_REGISTER = 5
CLASS_PROFILE_GENERIC = 7
CLASS_CLOCK = 8
CLASS_DISCONNECT_CONTROL = 70
_VALUE_CLASSES = frozenset({CLASS_DATA, CLASS_REGISTER, CLASS_EXTENDED_REGISTER, CLASS_DEMAND_REGISTER})
# Where a value class keeps its value, scaler_unit, status and capture time (0: it has none).
VALUE_ATTRIBUTES: dict[int, tuple[int, int, int, int]] = {
    CLASS_DATA: (2, 0, 0, 0),
    CLASS_REGISTER: (2, 3, 0, 0),
    CLASS_EXTENDED_REGISTER: (2, 3, 4, 5),
    CLASS_DEMAND_REGISTER: (3, 4, 5, 6),  # last_average_value, captured at capture_time
}


@dataclass(frozen=True, slots=True)
class DlmsSecurity:
    """Keys and titles for ciphered / HLS-GMAC associations, security suite 0 (AES-GCM-128).

    ``system_title`` is this side's (8 bytes; 3 letters of manufacturer then 5 bytes);
    ``peer_system_title``, when given, is checked against the other side's.
    ``policy`` is what every xDLMS APDU gets: authenticated, encrypted, or both. Keys are
    :class:`~gxcore.secrets.Secret` (hex text or bytes are wrapped) and never shown.
    """

    system_title: bytes
    block_cipher_key: Secret = field(repr=False)
    authentication_key: Secret = field(repr=False)
    policy: SecurityPolicy = "authenticated-encrypted"
    peer_system_title: bytes | None = None

    def __post_init__(self) -> None:
        for name in ("block_cipher_key", "authentication_key"):
            key = getattr(self, name)
            if isinstance(key, str):
                try:
                    key = Secret.from_hex(key)
                except ValueError:
                    raise ConfigurationError(f"DLMS {name.replace('_', ' ')} is not hex (value not shown)") from None
            elif isinstance(key, bytes | bytearray):
                key = Secret(bytes(key))
            if not isinstance(key, Secret) or len(key.reveal()) != 16:
                raise ConfigurationError(f"DLMS {name.replace('_', ' ')} must be 16 bytes (value not shown)")
            object.__setattr__(self, name, key)
        for name in ("system_title", "peer_system_title"):
            title = getattr(self, name)
            if title is not None and (not isinstance(title, bytes | bytearray) or len(title) != SYSTEM_TITLE_LENGTH):
                raise ConfigurationError(f"DLMS {name.replace('_', ' ')} must be {SYSTEM_TITLE_LENGTH} bytes")
        if self.policy not in SECURITY_CONTROL:
            raise ConfigurationError(f"DLMS security policy {self.policy!r} is not one of {sorted(SECURITY_CONTROL)}")

    @property
    def security_control(self) -> int:
        """SC byte of this policy, suite 0."""
        return SECURITY_CONTROL[self.policy]


@dataclass(frozen=True, slots=True)
class DlmsParameters:
    """How to associate with a meter: framing, addresses, authentication, PDU size.

    ``interface`` is the DLMS wrapper (TCP/UDP, IEC 62056-47) or HDLC (IEC 62056-46, e.g.
    through a TCP-to-serial converter). With HDLC, ``physical_address`` (if given) is
    combined with ``server_address`` as the logical device into a two-byte address.
    ``logical_name_referencing`` False speaks short names (ReadRequest/WriteRequest; the
    object list is read after associating). ``password`` is a
    :class:`~gxcore.secrets.Secret` (a plain ``str`` is wrapped on construction) and never
    appears in ``repr``/``str``. ``security`` turns on ciphering of
    every xDLMS APDU; ``high-gmac`` authentication needs it. ``frame_counter_obis`` is the
    Data object the public client reads for the meter's invocation counter when the
    counter store has none for this meter (None: never read it). ``system_title`` is this
    side's title for HLS-SHA256 without ciphering (with ciphering, the security's is used).
    """

    client_address: int = 16
    server_address: int = 1
    authentication: Authentication = "none"
    password: Secret | None = field(default=None, repr=False)
    logical_name_referencing: bool = True
    max_pdu: int = 1024
    interface: Interface = "wrapper"
    physical_address: int | None = None
    security: DlmsSecurity | None = None
    frame_counter_obis: str | None = FRAME_COUNTER_OBIS
    system_title: bytes | None = None

    def __post_init__(self) -> None:
        if isinstance(self.password, str | bytes):
            object.__setattr__(self, "password", Secret(self.password))
        if not 0 <= self.client_address <= 0xFFFF or not 0 <= self.server_address <= 0xFFFF:
            raise ConfigurationError("DLMS wrapper addresses must be in 0..65535")
        if self.authentication not in AUTHENTICATIONS:
            raise ConfigurationError(
                f"DLMS authentication {self.authentication!r} is not one of {', '.join(AUTHENTICATIONS)}"
            )
        if self.authentication == "low" and (self.password is None or not self.password.reveal()):
            raise ConfigurationError("DLMS low-level authentication needs a password")
        if self.authentication in PASSWORD_HLS:
            if self.password is None or not self.password.reveal():
                raise ConfigurationError(f"DLMS {self.authentication} authentication needs a password (the HLS secret)")
            if self.authentication == "high" and len(self.password.reveal()) > MAX_HIGH_PASSWORD:
                raise ConfigurationError(
                    f"DLMS high authentication takes a password of at most {MAX_HIGH_PASSWORD} bytes"
                )
        if self.system_title is not None and len(self.system_title) != SYSTEM_TITLE_LENGTH:
            raise ConfigurationError(f"DLMS system title must be {SYSTEM_TITLE_LENGTH} bytes")
        if self.authentication == "high-gmac" and self.security is None:
            raise ConfigurationError("DLMS high-gmac authentication needs keys and a system title (security)")
        if self.frame_counter_obis is not None:
            object.__setattr__(self, "frame_counter_obis", dotted(self.frame_counter_obis))
        if not 64 <= self.max_pdu <= 0xFFFF:
            raise ConfigurationError("DLMS max_pdu must be in 64..65535")
        if self.interface not in ("wrapper", "hdlc"):
            raise ConfigurationError(f"DLMS interface {self.interface!r} is not one of 'wrapper', 'hdlc'")
        if self.interface == "hdlc" and not (0 <= self.client_address < 0x80 and self.server_address < 0x4000):
            raise ConfigurationError("HDLC client address must be < 128 and server address < 16384")
        if self.physical_address is not None and not (0 <= self.physical_address < 0x4000):
            raise ConfigurationError("HDLC physical address must be in 0..16383")

    @property
    def link_server_address(self) -> int:
        """The server address on the link: logical device, with the physical address under HDLC."""
        if self.interface != "hdlc" or self.physical_address is None:
            return self.server_address
        if self.server_address < 0x80 and self.physical_address < 0x80:
            return self.server_address << 7 | self.physical_address
        return self.server_address << 14 | self.physical_address


@dataclass(frozen=True, slots=True)
class CosemValue:
    """One value object to read: Data (1), Register (3), Extended (4) or Demand register (5) by OBIS.

    ``attribute`` picks the value attribute where a class has two (a demand register's
    current average 2 or last average 3); 0 means the class's usual one.
    """

    obis: str
    class_id: int = CLASS_REGISTER
    attribute: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "obis", dotted(self.obis))
        if self.class_id not in _VALUE_CLASSES:
            raise ConfigurationError(f"COSEM class {self.class_id} of {self.obis} is not a value class (1, 3, 4, 5)")
        if self.attribute and not (self.class_id == CLASS_DEMAND_REGISTER and self.attribute in (2, 3)):
            raise ConfigurationError(f"attribute {self.attribute} of {self.obis} is not a value attribute")

    @property
    def value_attribute(self) -> int:
        return self.attribute or VALUE_ATTRIBUTES[self.class_id][0]

    @property
    def quantity(self) -> str:
        return reduced(self.obis)


@dataclass(frozen=True, slots=True)
class ProfileRange:
    """A load-profile (Profile generic, class 7) and the capture-time window to read, both ends inclusive."""

    obis: str
    start: datetime
    end: datetime

    def __post_init__(self) -> None:
        object.__setattr__(self, "obis", dotted(self.obis))
        if self.start.tzinfo is None or self.end.tzinfo is None:
            raise ConfigurationError("profile range needs timezone-aware datetimes")
        if self.start > self.end:
            raise ConfigurationError("profile range starts after it ends")


@dataclass(frozen=True, slots=True)
class RegisterValue:
    """One value read with what the meter says about it: status and capture time where it keeps them."""

    value: MeterValue
    unit: str
    status: int | None = None
    captured: datetime | None = None


@dataclass(frozen=True, slots=True)
class ProfileEntries:
    """A Profile generic and the entries to read by index (1 = oldest kept); ``last`` 0 = the newest.

    ``newest`` instead reads that many of the newest entries (the meter's entries_in_use is
    read first).
    """

    obis: str
    first: int = 1
    last: int = 0
    newest: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "obis", dotted(self.obis))
        if self.first < 1 or self.last < 0 or self.newest < 0 or (self.last and self.last < self.first):
            raise ConfigurationError("profile entries run from 1 upward, last >= first (0: to the newest)")
        if max(self.first, self.last, self.newest) > 0xFFFFFFFF:
            raise ConfigurationError("profile entry numbers are 32-bit")
