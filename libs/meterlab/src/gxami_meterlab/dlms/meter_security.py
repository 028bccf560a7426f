"""The meter side of DLMS security: who may associate how, HLS-GMAC, and invocation counters.

A meter with ``high-gmac`` security has two kinds of client (as most real meters do):

* the public client (SAP 16): no authentication, no ciphering, and only the public
  objects (clock, association, logical device name, the invocation counter 0-0:43.1.0);
* every other client: HLS-GMAC and every xDLMS APDU protected with the meter's policy.

Counters are what keep AES-GCM safe: the meter never reuses its own invocation counter
(:class:`MeterCounters` outlives connections) and refuses a client counter that is not
above the last one it accepted from that system title (a replay), before gurux sees it.

Every authentic (system title, invocation counter) pair a client sends is also recorded in
:class:`MeterCounters` (its ciphered APDUs, the ciphered InitiateRequest of its AARQ, its
HLS-GMAC answer), and a pair seen twice lands in ``repeats``: a reused GCM nonce. The
simulator's tests fail on any (see :mod:`gxami_meterlab.simulators.dlms`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

from gurux_dlms import GXCiphering
from gurux_dlms.enums import Authentication, SourceDiagnostic

from gxcore.errors import DecryptionError, ProtocolError
from gxcore.protocols.dlms import ciphering, hdlc, wrapper
from gxcore.protocols.dlms.parameters import FRAME_COUNTER_OBIS, PUBLIC_CLIENT, DlmsSecurity

PUBLIC_OBJECTS: Final = frozenset({"0.0.1.0.0.255", "0.0.40.0.0.255", "0.0.42.0.0.255", FRAME_COUNTER_OBIS})
_PLAIN_REQUESTS: Final = frozenset({0xC0, 0xC1, 0xC3})  # get-, set-, action-request
_LLC_REQUEST: Final = b"\xe6\xe6\x00"


@dataclass(slots=True)
class MeterCounters:
    """A meter's invocation counters, kept across associations: its own next one, and per
    client system title the last one accepted."""

    next_own: int = 1
    last_accepted: dict[bytes, int] = field(default_factory=dict)
    seen: set[tuple[bytes, int]] = field(default_factory=set)
    repeats: list[tuple[bytes, int]] = field(default_factory=list)

    def record(self, title: bytes, counter: int) -> None:
        """Note one (system title, counter) pair a client used; a second use goes to ``repeats``."""
        pair = (bytes(title), counter)
        if pair in self.seen:
            self.repeats.append(pair)
        else:
            self.seen.add(pair)

    def highest_accepted(self) -> int:
        """The counter 0-0:43.1.0 reports: the highest accepted from any management client."""
        return max(self.last_accepted.values(), default=0)


class MeterSecurity:
    """Association policy, HLS-GMAC and counter checks of one meter connection."""

    def __init__(self, security: DlmsSecurity, counters: MeterCounters, public_client: int = PUBLIC_CLIENT) -> None:
        self.security = security
        self.counters = counters
        self.public_client = public_client
        self.client: int | None = None
        self.client_title: bytes | None = None
        self.ciphered = False
        self._screened: tuple[bytes, int] | None = None  # recorded by screen(), not again by gurux's pass

    def cipher(self) -> GXCiphering:
        """The gurux cipher settings for this meter (its keys and title; gurux calls our AES-GCM)."""
        cipher = GXCiphering(bytearray(self.security.system_title))
        cipher.blockCipherKey = bytearray(self.security.block_cipher_key.reveal())
        cipher.authenticationKey = bytearray(self.security.authentication_key.reveal())
        cipher.invocationCounter = self.counters.next_own
        return cipher

    def decide(self, client: int, authentication: int, security: int, title: bytes | None) -> int:
        """ACSE diagnostic for an AARQ: the public client plain, everyone else HLS-GMAC and the policy."""
        self.client, self.client_title, self.ciphered = client, title, bool(security)
        if client == self.public_client:
            if authentication != Authentication.NONE or security:
                return int(SourceDiagnostic.NOT_SUPPORTED)
            return int(SourceDiagnostic.NONE)
        if authentication == Authentication.NONE:
            return int(SourceDiagnostic.AUTHENTICATION_REQUIRED)
        if authentication != Authentication.HIGH_GMAC:
            return int(SourceDiagnostic.NOT_RECOGNISED)
        if security != self.security.security_control:
            return int(SourceDiagnostic.NOT_SUPPORTED)
        return int(SourceDiagnostic.NONE)

    def is_public(self) -> bool:
        return self.client == self.public_client

    def answer_hls(self, answer: bytes, challenge: bytes, client_challenge: bytes, own_counter: int) -> bytes | None:
        """f(StoC) from the client checked against our challenge; our f(CtoS), or None if it fails."""
        if self.client_title is None:
            return None
        keys = self.security.block_cipher_key.reveal(), self.security.authentication_key.reveal()
        try:
            # Its counter is not checked for growth: gurux (like most clients) takes it just
            # before the counter of the APDU that carries it, and that one is checked.
            counter = ciphering.check_hls_gmac(answer, self.client_title, keys[0], keys[1], challenge)
        except DecryptionError:
            return None
        self.counters.record(self.client_title, counter)  # a GMAC nonce like any other
        return ciphering.hls_gmac(self.security.system_title, own_counter, keys[0], keys[1], client_challenge)

    def accept_counter(self, title: bytes, counter: int) -> None:
        """Take a client's counter (after its tag checked); DecryptionError for a replay."""
        screened, self._screened = self._screened, None
        if screened != (bytes(title), counter):
            self.counters.record(title, counter)
        self.check_counter(title, counter)
        self.counters.last_accepted[bytes(title)] = counter

    def check_counter(self, title: bytes, counter: int) -> None:
        last = self.counters.last_accepted.get(bytes(title), -1)
        if counter <= last:
            raise DecryptionError(f"invocation counter {counter} is not above the last accepted ({last}): a replay")

    def screen(self, frame: wrapper.WrapperFrame | hdlc.HdlcFrame) -> None:
        """Refuse, before gurux sees it, a request that breaks the association's protection.

        A plain GET/SET/ACTION inside a ciphered association, a ciphered request whose tag
        does not check, or a replayed counter: the meter drops the connection (raises).
        """
        if isinstance(frame, wrapper.WrapperFrame):
            apdu = frame.apdu
        elif frame.info.startswith(_LLC_REQUEST) and not frame.segmented:
            apdu = frame.info[len(_LLC_REQUEST) :]
        else:
            return
        if not apdu or not self.ciphered:
            return
        if apdu[0] in _PLAIN_REQUESTS:
            raise ProtocolError("plain request inside a ciphered association", frame=apdu[:16])
        if apdu[0] not in ciphering.CIPHERED_TAGS or self.client_title is None:
            return
        head = ciphering.parse_ciphered_apdu(apdu)
        if head.security_control & 0x30 != self.security.security_control:
            raise ProtocolError("request protected below the meter's security policy")
        title = head.system_title or self.client_title
        ciphering.unseal(
            head.security_control,
            title,
            head.invocation_counter,
            self.security.block_cipher_key.reveal(),
            self.security.authentication_key.reveal(),
            head.payload,
        )
        # Authentic: record it even if it is refused as a replay below (the nonce went out twice).
        self.counters.record(title, head.invocation_counter)
        self._screened = (bytes(title), head.invocation_counter)
        self.check_counter(title, head.invocation_counter)
