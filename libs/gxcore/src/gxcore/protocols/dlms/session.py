"""Sans-IO DLMS/COSEM client core over gurux-dlms's GXDLMSClient (wrapper or HDLC, LN referencing).

The core builds request frames and parses replies; it never does I/O. Each confirmed
service is an :class:`~gxcore.protocols.dlms.exchange.Exchange` (bytes in and out, see there).
Multi-block replies (GET-response-with-datablock) and HDLC segments are followed inside the
exchange with gurux's own ``getData``/``GXReplyData`` loop; the adapter just sees more
bytes to send.

Frames are cut by our own framers (:mod:`gxcore.protocols.dlms.wrapper`, :mod:`gxcore.protocols.dlms.hdlc`), so
gurux only ever sees one whole frame. Input is bounded: one frame at most ``8 + 65535``
bytes, one reassembled reply at most ``max_reply_bytes``. Everything raised is a gxcore error.
An unsolicited notification (a push) inside an exchange never reaches gurux: it is set
aside for ``on_push`` (see :mod:`gxcore.protocols.dlms.unsolicited`) and the exchange goes on.

With ``params.security`` every xDLMS APDU is protected (gurux builds the APDUs, our
`cryptography` AES-GCM ciphers them, see :mod:`gxcore.protocols.dlms.gurux`). Our invocation counter
comes from an :class:`~gxcore.protocols.dlms.invocation.InvocationCounterStore` (required with security:
there is no silent in-memory default): before each APDU is
built the core makes sure the counter it will use lies inside a window already recorded
as spent in the store (:class:`~gxcore.protocols.dlms.invocation.CounterWindow`), so no counter is
ever sent twice, even across a crash. The meter's counters must grow within the session
(a replayed reply is a DecryptionError).
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from datetime import datetime
from typing import Final

from gurux_dlms import GXByteBuffer, GXCiphering, GXDLMSClient, GXReplyData
from gurux_dlms.enums import Authentication, Command, DataType, InterfaceType, ObjectType, Security
from gurux_dlms.objects import GXDLMSClock, GXDLMSObject

from gxcore.errors import AccessDeniedError, ConfigurationError, DecryptionError, GxError, ProtocolError
from gxcore.protocols.dlms.cosem_time import encode_datetime
from gxcore.protocols.dlms.exchange import Exchange, ReplyReader, as_frames
from gxcore.protocols.dlms.gurux import association_refused, quiet, translate
from gxcore.protocols.dlms.invocation import CounterWindow, InvocationCounterStore, counter_key
from gxcore.protocols.dlms.obis import dotted, obis_from_bytes
from gxcore.protocols.dlms.parameters import CLIENT_SYSTEM_TITLE, PASSWORD_HLS, DlmsParameters
from gxcore.protocols.dlms.unsolicited import PushHandler

__all__ = ["MAX_REPLY_BYTES", "SN_ASSOCIATION", "DlmsClientCore", "Exchange"]

MAX_REPLY_BYTES: Final = 4 * 1024 * 1024
_MECHANISMS: Final = {
    "none": Authentication.NONE,
    "low": Authentication.LOW,
    "high": Authentication.HIGH,
    "high-md5": Authentication.HIGH_MD5,
    "high-sha1": Authentication.HIGH_SHA1,
    "high-sha256": Authentication.HIGH_SHA256,
    "high-gmac": Authentication.HIGH_GMAC,
}
_HLS: Final = frozenset({*PASSWORD_HLS, "high-gmac"})
SN_ASSOCIATION: Final = 0xFA00  # base name of the current Association SN (class 12)


class DlmsClientCore(ReplyReader):
    """Association state and request building for one meter; replies are parsed by gurux (see ReplyReader)."""

    def __init__(
        self,
        params: DlmsParameters,
        *,
        max_reply_bytes: int = MAX_REPLY_BYTES,
        counters: InvocationCounterStore | None = None,
        meter_key: str = "meter",
        on_push: PushHandler | None = None,
    ) -> None:
        self.params = params
        self.associated = False
        self.authentication_pending = False
        self.link_open = False
        auth = _MECHANISMS[params.authentication]
        password = params.password.reveal() if params.password is not None else None
        interface = InterfaceType.HDLC if params.interface == "hdlc" else InterfaceType.WRAPPER
        with quiet():
            client = GXDLMSClient(
                params.logical_name_referencing,
                params.client_address,
                params.link_server_address,
                auth,
                password,
                interface,
            )
            client.maxReceivePDUSize = params.max_pdu
        self._client = client
        super().__init__(params, client.settings, max_reply_bytes=max_reply_bytes, on_push=on_push)
        self._invoke_id = 0
        # Short-name referencing: base name and class of every object, from the object list.
        self.short_names: dict[str, tuple[int, int]] = {}
        self._meter_counter = -1
        security = params.security
        self.counter_key = counter_key(meter_key, params.client_address, security) if security is not None else ""
        self._window: CounterWindow | None = None
        if security is not None:
            if counters is None:
                raise ConfigurationError(
                    f"meter {meter_key}: ciphered DLMS needs a durable invocation counter store; none was given"
                )
            cipher = GXCiphering(bytearray(security.system_title))
            cipher.blockCipherKey = bytearray(security.block_cipher_key.reveal())
            cipher.authenticationKey = bytearray(security.authentication_key.reveal())
            cipher.security = Security(security.security_control)
            self._window = CounterWindow(counters, self.counter_key, cipher)
            client.settings.cipher = cipher
            client.settings.gx_counter_check = self._check_meter_counter
            client.settings.gx_decrypt_failed = self._decrypt_failed
        elif params.authentication in PASSWORD_HLS:
            # gurux keeps the HLS titles (and a counter it moves on) in the cipher: give it one that
            # ciphers nothing (security NONE), so password HLS works on an unciphered association.
            title = params.system_title or CLIENT_SYSTEM_TITLE
            client.settings.cipher = GXCiphering(bytearray(title))
        self._cipher_failure: GxError | None = None

    # -- invocation counters ------------------------------------------------------------
    @property
    def needs_meter_counter(self) -> bool:
        """True when ciphering is on and the store has never seen this meter: read its frame counter."""
        return self._window is not None and not self._window.known

    @property
    def counters_due(self) -> bool:
        """True when the next ciphered request needs the counter store first (see :meth:`reserve_counters`)."""
        return self._window is not None and self._window.due

    def load_counters(self) -> None:
        """Read the counter store's mark for this meter (store I/O; see :meth:`reserve_counters`)."""
        if self._window is not None:
            self._window.load()

    def reserve_counters(self) -> None:
        """Load the store's mark and reserve the next window now: the store's I/O, done where the caller
        chooses (a session does it in a worker thread), so building the request touches no file."""
        if self._window is not None:
            self._window.reserve()

    @property
    def invocation_counter(self) -> int | None:
        """The counter the next protected APDU will carry (None without security)."""
        if self._window is None:
            return None
        self._window.load()
        return self._window.next

    def use_meter_counter(self, value: int) -> None:
        """Start above what the meter reported (its frame counter, or the counter it expects).

        At or above our own counter, the start jumps ``METER_COUNTER_MARGIN`` past it (see
        :mod:`gxcore.protocols.dlms.invocation`); nothing is used until the window is reserved.
        """
        if self._window is not None:
            self._window.start_above(value)

    def _decrypt_failed(self, error: GxError) -> None:
        self._cipher_failure = error

    def _check_meter_counter(self, title: bytes, counter: int) -> None:
        """Called by the deciphering hand-over: the meter's counter must grow, its title must fit."""
        security = self.params.security
        expected = security.peer_system_title if security is not None else None
        if expected is not None and bytes(title) != expected:
            raise DecryptionError(f"reply ciphered by system title {bytes(title).hex()}, expected {expected.hex()}")
        if counter <= self._meter_counter:
            raise DecryptionError(f"meter invocation counter {counter} does not grow (last {self._meter_counter})")
        self._meter_counter = counter

    def _built(self, build: Callable[[], object]) -> object:
        """Run one gurux request builder with a reserved counter; it may use exactly that one."""
        window = self._window
        if window is not None:
            window.reserve()
        with quiet():
            frames = build()
        if window is not None:
            window.check_used()
        return frames

    # -- requests -----------------------------------------------------------------------
    def open_link(self) -> Exchange | None:
        """HDLC SNRM (complete it with :meth:`check_link`); None for the wrapper, which has no link layer."""
        if self.params.interface != "hdlc":
            self.link_open = True
            return None
        with quiet():
            frame = self._client.snrmRequest()
        return Exchange(self, as_frames(frame), frozenset({Command.UA}), "SNRM")

    def check_link(self, exchange: Exchange) -> None:
        """Take the UA's negotiated HDLC parameters."""
        try:
            with quiet():
                self._client.parseUAResponse(exchange.reply.data)
        except Exception as exc:  # noqa: BLE001 - gurux raises bare exceptions; translate() narrows them
            raise translate(exc, what="SNRM") from None
        self.link_open = True

    def close_link(self) -> Exchange | None:
        """HDLC DISC; None for the wrapper or a link never opened."""
        if self.params.interface != "hdlc" or not self.link_open:
            self.link_open = False
            return None
        self.link_open = False
        with quiet():
            frame = self._client.disconnectRequest()
        if not frame:
            return None
        return Exchange(self, as_frames(frame), frozenset({Command.UA, Command.DISCONNECT_MODE}), "DISC")

    def associate(self) -> Exchange:
        """AARQ; complete it with :meth:`check_association`."""
        if self.params.authentication in _HLS:
            # gurux draws CtoS from `random`; the challenge must be unpredictable.
            self._client.settings.useCustomChallenge = True
            self._client.settings.ctoSChallenge = bytearray(secrets.token_bytes(16))
        frames = self._built(self._client.aarqRequest)
        return Exchange(self, as_frames(frames), frozenset({Command.AARE}), "association")

    def check_association(self, exchange: Exchange) -> None:
        """Parse the AARE; AccessDeniedError if the meter refused (wrong password, mechanism, keys).

        With HLS (any ``high*`` mechanism) the association is then pending: run :meth:`authenticate`.
        """
        reply = exchange.reply
        self._cipher_failure = None
        try:
            with quiet():
                self._client.parseAareResponse(reply.data)
        except Exception as exc:  # noqa: BLE001 - gurux raises bare Exception subclasses; translate() narrows them
            if self._cipher_failure is not None:
                # gurux turned our failure to decipher the AARE into "rejected, no reason": say what it was.
                failure, self._cipher_failure = self._cipher_failure, None
                raise failure from None
            raise translate(exc, what="association") from None
        expected = self.params.security.peer_system_title if self.params.security is not None else None
        title = bytes(self._client.settings.sourceSystemTitle or b"")
        if expected is not None and title != expected:
            raise AccessDeniedError(f"association: meter system title {title.hex()}, expected {expected.hex()}")
        if self._client.isAuthenticationRequired:
            if self.params.authentication not in _HLS:
                raise association_refused(0, 14, "association")
            self.authentication_pending = True
            return
        if self.params.authentication in _HLS:
            raise ProtocolError(f"association: meter accepted {self.params.authentication} without the HLS pass")
        self.associated = True

    def authenticate(self) -> Exchange:
        """HLS pass: reply_to_HLS_authentication (association method 1) with our f(StoC)."""
        if not self.authentication_pending:
            raise ProtocolError("HLS authentication: no association is pending")
        return self._confirmed(
            self._client.getApplicationAssociationRequest, Command.METHOD_RESPONSE, "HLS authentication"
        )

    def check_authentication(self, exchange: Exchange) -> None:
        """Check the meter's f(CtoS); AccessDeniedError if it refused ours or its own does not check."""
        self.authentication_pending = False
        if exchange.access_result:
            raise AccessDeniedError("HLS authentication: the meter refused our answer (wrong password or keys?)")
        try:
            with quiet():
                self._client.parseApplicationAssociationResponse(exchange.reply.data)
        except Exception:  # noqa: BLE001 - gurux raises a bare Exception when f(CtoS) differs
            raise AccessDeniedError(
                "HLS authentication: the meter's answer does not check (wrong password or keys?)"
            ) from None
        self.associated = True

    def get(self, class_id: int, obis: str, attribute: int, selection: bytes | None = None) -> Exchange:
        """GET one attribute, optionally with selective access (``selection`` = selector + parameters).

        With short-name referencing this is a ReadRequest of the attribute's short name
        (variable-name, or parameterized-access with ``selection``).
        """
        ln = dotted(obis)
        what = f"GET {class_id}/{ln}/{attribute}"
        data = GXByteBuffer(selection) if selection else None
        # _read is the one builder that takes ready-made access parameters; pinned gurux 1.0.203.
        if not self.params.logical_name_referencing:
            base = self._short_name(class_id, ln, what)
            return self._unconfirmed(
                lambda: self._client._read(base, ObjectType(class_id), attribute, data), Command.READ_RESPONSE, what
            )
        return self._confirmed(
            lambda: self._client._read(ln, ObjectType(class_id), attribute, data), Command.GET_RESPONSE, what
        )

    def read_short_names(self) -> Exchange:
        """ReadRequest of the current Association SN's object list (complete with :meth:`take_short_names`)."""
        return self._unconfirmed(
            lambda: self._client._read(SN_ASSOCIATION, ObjectType.ASSOCIATION_SHORT_NAME, 2),
            Command.READ_RESPONSE,
            "READ object list",
        )

    def take_short_names(self, exchange: Exchange) -> None:
        """Learn every object's base name: array of {base_name long, class_id, version, logical_name}."""
        value = exchange.value()
        if not isinstance(value, list):
            raise ProtocolError("short-name object list is not an array")
        names: dict[str, tuple[int, int]] = {}
        for pos, item in enumerate(value):
            if not (isinstance(item, list) and len(item) == 4 and isinstance(item[3], bytes | bytearray)):
                raise ProtocolError(f"short-name object list entry {pos} is not {{base, class, version, name}}")
            base, class_id = item[0], item[1]
            if not (isinstance(base, int) and isinstance(class_id, int)):
                raise ProtocolError(f"short-name object list entry {pos} has no base name or class")
            names[obis_from_bytes(item[3])] = (base & 0xFFFF, class_id)
        self.short_names = names

    def _short_name(self, class_id: int, ln: str, what: str) -> int:
        found = self.short_names.get(ln)
        if found is None:
            raise ProtocolError(f"{what}: not in the meter's short-name object list")
        if found[1] != class_id:
            raise ProtocolError(f"{what}: the meter lists this object as class {found[1]}")
        return found[0]

    def set_clock(self, at: datetime, obis: str = "0.0.1.0.0.255") -> Exchange:
        """SET the clock's time (class 8, attribute 2) to ``at`` as a UTC COSEM date-time."""
        clock = GXDLMSClock(dotted(obis))
        # gurux writes attribute 2 as whatever .time holds; our bytes keep the encoding exact.
        clock.time = encode_datetime(at)
        what = f"SET 8/{clock.logicalName}/2"
        if not self.params.logical_name_referencing:
            clock.shortName = self._short_name(8, clock.logicalName, what)
            return self._unconfirmed(lambda: self._client.write(clock, 2), Command.WRITE_RESPONSE, what)
        return self._confirmed(lambda: self._client.write(clock, 2), Command.SET_RESPONSE, what)

    def set(self, class_id: int, obis: str, attribute: int, value: object, data_type: int) -> Exchange:
        """SET one attribute to ``value`` encoded as A-XDR ``data_type`` (a gurux DataType)."""
        ln = dotted(obis)
        what = f"SET {class_id}/{ln}/{attribute}"
        kind = DataType(data_type)
        # GXDLMSClient.__write is the builder write() ends in, minus its object's value lookup:
        # it takes the name, value and type as given; pinned gurux 1.0.203.
        write = self._client._GXDLMSClient__write
        if not self.params.logical_name_referencing:
            base = self._short_name(class_id, ln, what)
            return self._unconfirmed(
                lambda: write(base, value, kind, ObjectType(class_id), attribute), Command.WRITE_RESPONSE, what
            )
        return self._confirmed(
            lambda: write(ln, value, kind, ObjectType(class_id), attribute), Command.SET_RESPONSE, what
        )

    def action(self, class_id: int, obis: str, method: int) -> Exchange:
        """ACTION ``method`` with the integer parameter 0 (e.g. disconnect control methods 1 and 2)."""
        target = GXDLMSObject(ObjectType(class_id), dotted(obis))
        what = f"ACTION {class_id}/{target.logicalName}/{method}"
        if not self.params.logical_name_referencing:
            target.shortName = self._short_name(class_id, target.logicalName, what)
            return self._unconfirmed(
                lambda: self._client.method(target, method, 0, DataType.INT8), Command.WRITE_RESPONSE, what
            )
        return self._confirmed(
            lambda: self._client.method(target, method, 0, DataType.INT8), Command.METHOD_RESPONSE, what
        )

    def call(self, class_id: int, obis: str, method: int, parameters: bytes) -> Exchange:
        """ACTION ``method`` with ``parameters`` already A-XDR encoded (a structure, e.g. image transfer)."""
        target = GXDLMSObject(ObjectType(class_id), dotted(obis))
        what = f"ACTION {class_id}/{target.logicalName}/{method}"
        # gurux writes ready-made bytes as they are when told the type is a structure.
        raw = GXByteBuffer(parameters)
        if not self.params.logical_name_referencing:
            target.shortName = self._short_name(class_id, target.logicalName, what)
            return self._unconfirmed(
                lambda: self._client.method(target, method, raw, DataType.STRUCTURE), Command.WRITE_RESPONSE, what
            )
        return self._confirmed(
            lambda: self._client.method(target, method, raw, DataType.STRUCTURE), Command.METHOD_RESPONSE, what
        )

    def _unconfirmed(self, build: Callable[[], object], expect: int, what: str) -> Exchange:
        """A short-name request: no invoke-id to match, one request at a time does the matching."""
        return Exchange(self, as_frames(self._built(build)), frozenset({expect}), what)

    def _confirmed(self, build: Callable[[], object], expect: int, what: str) -> Exchange:
        """An xDLMS request under a fresh invoke-id.

        Rotating invoke-ids (1..15) let accept() tell a stale or foreign reply from the awaited
        one. gurux 1.0.203's autoIncreaseInvokeID writes settings.invokeID, a field its encoder
        never reads, so the id is set on settings.invokeId here.
        """
        self._invoke_id = self._invoke_id % 15 + 1
        self._client.settings.invokeId = self._invoke_id
        frames = self._built(build)
        exchange = Exchange(self, as_frames(frames), frozenset({expect}), what)
        exchange.invoke_id = self._invoke_id
        return exchange

    def release(self) -> Exchange | None:
        """RLRQ if associated (the wrapper has no link layer to disconnect)."""
        if not (self.associated or self.authentication_pending):
            return None
        self.associated = self.authentication_pending = False
        frames = self._built(self._client.releaseRequest)
        if not frames:
            return None
        return Exchange(self, as_frames(frames), frozenset({Command.RELEASE_RESPONSE}), "release")

    def next_block_request(self, reply: GXReplyData) -> bytes:
        """The RR (next HDLC segment) or GET-next-block request for a reply with more to come."""
        frame = self._built(lambda: self._client.receiverReady(reply))
        if not isinstance(frame, bytes | bytearray):
            raise ProtocolError("gurux built no request for the rest of the reply")
        return bytes(frame)
