"""Sans-IO DLMS/COSEM meter core over gurux-dlms's GXDLMSServer (wrapper or HDLC, LN referencing).

Bytes in (``receive_data(data, now)``), bytes out; the values come from a
:class:`MeterModel` asked at the instant the association was accepted, so one
association sees one consistent meter ("now" is frozen per association, truncated to
whole seconds). Simulators put asyncio around it.

gurux-dlms 1.0.203's server side has bugs; :mod:`gxami_meterlab.dlms.gurux_server` works around
them, and the SET service is answered here (see :meth:`CosemMeterCore.set_request`).
With ``security`` the meter speaks HLS-GMAC and ciphers every xDLMS APDU for its
management clients (see :mod:`gxami_meterlab.dlms.meter_security`). The gurux objects it serves,
their access rights and attribute encodings are in :mod:`gxami_meterlab.dlms.server_objects`.
"""

from __future__ import annotations

import hmac
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Final, cast

from gurux_dlms import GXCiphering
from gurux_dlms.enums import (
    AccessMode,
    Authentication,
    ErrorCode,
    ObjectType,
    SourceDiagnostic,
)
from gurux_dlms.objects import (
    GXDLMSClock,
    GXDLMSData,
    GXDLMSDemandRegister,
    GXDLMSDisconnectControl,
    GXDLMSExtendedRegister,
    GXDLMSProfileGeneric,
    GXDLMSRegister,
)

from gxami_meterlab.dlms.gurux_association import MeterAssociation
from gxami_meterlab.dlms.gurux_server import GuruxMeter, ServerReply
from gxami_meterlab.dlms.meter_objects import (
    DataSpec,
    DemandRegisterSpec,
    ExtendedRegisterSpec,
    MeterModel,
    ObjectSpec,
    ProfileSpec,
    RegisterSpec,
    RicherMeterModel,
    decode_value,
    encode_object_list,
    encode_time,
)
from gxami_meterlab.dlms.meter_security import PUBLIC_OBJECTS, MeterCounters, MeterSecurity
from gxami_meterlab.dlms.password_hls import PasswordHls
from gxami_meterlab.dlms.programmable import ProgrammableObjects
from gxami_meterlab.dlms.server_objects import gurux_objects, listed, richer_attribute, selected_columns
from gxcore.errors import GxError
from gxcore.protocols.dlms import hdlc, wrapper
from gxcore.protocols.dlms.cosem_time import decode_datetime
from gxcore.protocols.dlms.gurux import quiet, translate
from gxcore.protocols.dlms.obis import dotted
from gxcore.protocols.dlms.parameters import PASSWORD_HLS, PUBLIC_CLIENT, DlmsSecurity, Interface
from gxcore.protocols.dlms.parameters import Authentication as AuthName
from gxcore.protocols.dlms.profile import encode_buffer
from gxcore.secrets import Secret

__all__ = [
    "CosemMeterCore",
    "DataSpec",
    "DemandRegisterSpec",
    "ExtendedRegisterSpec",
    "MeterModel",
    "ProfileSpec",
    "RegisterSpec",
]

# gurux's numbers of the password HLS mechanisms (the AARQ's mechanism-name last arc).
_MECHANISM: Final = {
    "high": Authentication.HIGH,
    "high-md5": Authentication.HIGH_MD5,
    "high-sha1": Authentication.HIGH_SHA1,
    "high-sha256": Authentication.HIGH_SHA256,
}
PASSWORD_HLS_TITLE: Final = b"GXS\x00\x00\x00\x00\x01"  # a password-HLS meter's title (HLS-SHA256 binds it)
MAX_ROWS_PER_READ: Final = 31 * 96  # one reply holds at most 31 days of 15-minute rows
DISCONNECT_CONTROL: Final = "0.0.96.3.10.255"


CLOCK_SHIFT_TIME = 6  # Clock (class 8) method 6: shift_time(long seconds)


class CosemMeterCore:
    """One meter connection: wrapper frames in, wrapper frames out, values frozen per association."""

    def __init__(
        self,
        model: MeterModel,
        registers: Sequence[RegisterSpec],
        profiles: Sequence[ProfileSpec] = (),
        *,
        authentication: AuthName = "none",
        password: Secret | None = None,
        server_address: int = 1,
        max_pdu: int = 1024,
        interface: Interface = "wrapper",
        disconnect_control: str | None = DISCONNECT_CONTROL,
        security: DlmsSecurity | None = None,
        counters: MeterCounters | None = None,
        public_client: int = PUBLIC_CLIENT,
        objects: Sequence[ObjectSpec] = (),
        programs: ProgrammableObjects | None = None,
        system_title: bytes = PASSWORD_HLS_TITLE,
    ) -> None:
        if authentication == "high-gmac" and security is None:
            raise ValueError("a high-gmac meter needs its keys and system title")
        # Password HLS (high, -md5, -sha1, -sha256): the meter checks f(StoC) itself (password_hls).
        self._hls = (
            PasswordHls(authentication, password or Secret(b""), system_title)
            if authentication in PASSWORD_HLS and security is None
            else None
        )
        self.model = model
        self.interface = interface
        self.disconnect_control = dotted(disconnect_control) if disconnect_control else None
        self.authentication = authentication
        self.server_address = server_address
        self.max_pdu = max_pdu
        self.session_now: datetime | None = None
        self._password = password
        self._frame_now: datetime | None = None
        self._buffer = bytearray()
        self._registers = {dotted(r.obis): r for r in registers}
        self._profiles = {dotted(p.obis): p for p in profiles}
        self._specs: dict[str, ObjectSpec] = {dotted(o.obis): o for o in (*registers, *objects)}
        richer = all(hasattr(model, n) for n in ("extended", "demand", "data_value", "profile_entries"))
        if objects and not richer:
            raise ValueError("extended/demand registers and data objects need a RicherMeterModel")
        self._by_entry = richer  # profiles answer by entry (selector 2) and report entries in use
        self._guard = (
            MeterSecurity(security, counters or MeterCounters(), public_client) if security is not None else None
        )
        self._opened = False
        self._programs = programs  # image transfer and calendars, when the meter has them
        with quiet():
            self._server = self._build()

    def _build(self) -> GuruxMeter:
        server = GuruxMeter(self)
        objects = gurux_objects(
            self._specs.values(),
            self._profiles.values(),
            self.disconnect_control,
            frame_counter=self._guard is not None,
        )
        if self._programs is not None:
            objects += self._programs.gurux_objects()
        if self._guard is not None:
            server.settings.cipher = self._guard.cipher()
            server.settings.gx_counter_check = self._guard.accept_counter
        elif self._hls is not None:
            # gurux keeps the titles of an HLS exchange in its cipher; this one ciphers nothing.
            server.settings.cipher = GXCiphering(bytearray(self._hls.system_title))
        # gurux 1.0.203: initialize() appends the whole collection as one object when no
        # association exists, then fails; give it one with its object list filled.
        association = MeterAssociation()
        association.core = self
        for obj in (*objects, association):
            server.items.append(obj)
            association.objectList.append(obj)
        server.initialize()
        programs = self._programs
        self._listed = [
            (programs.listing(obj) if programs is not None else None) or listed(obj) for obj in (*objects, association)
        ]
        return server

    def receive_data(self, data: bytes, now: datetime) -> bytes:
        """Feed bytes from the client at ``now``; returns the bytes to send back (maybe none).

        Raises FramingError on a header that puts the stream out of step (drop the link).
        """
        self._buffer += data
        self._frame_now = now
        out = bytearray()
        while True:
            consumed, frame = hdlc.decode(self._buffer) if self.interface == "hdlc" else wrapper.decode(self._buffer)
            if not consumed:
                return bytes(out)
            del self._buffer[:consumed]
            if frame is None:
                continue  # garbage between HDLC frames, dropped by the framer's resync rule
            if self._guard is not None:
                self._guard.screen(frame)
            reply = ServerReply(frame.raw)
            try:
                with quiet():
                    self._server.handleRequest(reply)
            except Exception as exc:  # noqa: BLE001 - gurux's own error paths can raise; one request must not kill the core
                raise translate(exc, what="meter request", frame=frame.raw) from None
            finally:
                self._keep_counter()
            if isinstance(reply.reply, bytes | bytearray):
                out += reply.reply

    def _keep_counter(self) -> None:
        cipher = self._server.settings.cipher
        if self._guard is not None and cipher is not None:
            self._guard.counters.next_own = max(self._guard.counters.next_own, int(cipher.invocationCounter))

    # -- callbacks from the gurux server ------------------------------------------------------
    def association_decision(self, authentication: int, password: bytes, ciphered: bool) -> int:
        """ACSE diagnostic for a parsed AARQ: the meter's security rules, else its password rule."""
        self._opened = False
        settings = self._server.settings
        if self._guard is not None:
            security = int(settings.cipher.security) if ciphered else 0
            title = bytes(settings.sourceSystemTitle) if settings.sourceSystemTitle else None
            return self._guard.decide(int(settings.clientAddress), authentication, security, title)
        if self._hls is not None:
            if authentication == Authentication.NONE:
                return int(SourceDiagnostic.AUTHENTICATION_REQUIRED)
            if authentication != _MECHANISM[self._hls.mechanism]:
                return int(SourceDiagnostic.NOT_RECOGNISED)
            return int(SourceDiagnostic.NONE)  # the HLS pass decides (answer_hls)
        if authentication > Authentication.LOW:
            return int(SourceDiagnostic.NOT_RECOGNISED)  # no keys: no HLS
        return self.validate(authentication, password)

    def answer_hls(self, answer: bytes, challenge: bytes) -> bytes | None:
        """Check the client's f(StoC); our f(CtoS) under a fresh counter of ours, or None."""
        cipher = self._server.settings.cipher
        client_challenge = self._server.settings.ctoSChallenge
        if self._hls is not None and client_challenge:
            source = self._server.settings.sourceSystemTitle
            return self._hls.answer(answer, challenge, bytes(client_challenge), bytes(source) if source else None)
        if self._guard is None or cipher is None or not client_challenge:
            return None
        own = int(cipher.invocationCounter)
        reply = self._guard.answer_hls(answer, challenge, bytes(client_challenge), own)
        if reply is not None:
            cipher.invocationCounter = own + 1
        return reply

    def association_opened(self) -> None:
        self._opened = True

    def association_closed(self) -> None:
        self._opened = False

    def restore_counter(self) -> None:
        cipher = self._server.settings.cipher
        if self._guard is not None and cipher is not None:
            cipher.invocationCounter = max(int(cipher.invocationCounter), self._guard.counters.next_own)

    def allowed(self, target: object) -> bool:
        """Only an opened association gets values; the public client of a secured meter only public ones."""
        if not self._opened:
            return False
        if self._guard is not None and self._guard.is_public():
            return getattr(target, "logicalName", None) in PUBLIC_OBJECTS
        return True

    def validate(self, authentication: int, password: bytes) -> int:
        """ACSE diagnostic for an AARQ: the configured mechanism and password, compared in constant time."""
        if self.authentication == "none":
            return int(SourceDiagnostic.NONE)
        if authentication != Authentication.LOW:
            return int(SourceDiagnostic.AUTHENTICATION_REQUIRED)
        expected = self._password.reveal() if self._password is not None else b""
        if hmac.compare_digest(password, expected):
            return int(SourceDiagnostic.NONE)
        return int(SourceDiagnostic.AUTHENTICATION_FAILURE)

    def freeze(self) -> None:
        """Take this association's "now" (meter clock) from the frame that carried the accepted AARQ."""
        now = self._frame_now
        self.session_now = self.model.meter_time(now).replace(microsecond=0) if now is not None else None
        if self._programs is not None and self.session_now is not None:
            self._programs.association_started(self.session_now)

    def attribute_access(self, arg: object) -> int:
        """Read access to one attribute, with its value made ready for gurux to encode."""
        self.prepare(arg)
        return int(AccessMode.READ)

    def set_request(self, request: bytes) -> tuple[int, int]:
        """A SET-Request-Normal body after its tag: ``(invoke-id byte, DataAccessResult)``.

        The clock's time (class 8, attribute 2) is writable, the new time holding from now on,
        and the value of a Data object whose spec is ``writable`` (same A-XDR type, kept by the model).
        """
        if len(request) < 11:
            return (request[1] if len(request) > 1 else 0x81), int(ErrorCode.OTHER_REASON)
        kind, invoke, attribute = request[0], request[1], request[10]
        class_id, obis = int.from_bytes(request[2:4], "big"), ".".join(map(str, request[4:10]))
        selection, value = request[11:12], request[12:]
        if kind != 1 or selection != b"\x00":
            return invoke, int(ErrorCode.OTHER_REASON)  # no block transfer, no selective access
        if self._guard is not None and (not self._opened or self._guard.is_public()):
            return invoke, int(ErrorCode.READ_WRITE_DENIED)  # HLS still pending, or the public client
        if self._programs is not None and (done := self._programs.set(class_id, obis, attribute, value)) is not None:
            return invoke, done
        spec = self._specs.get(obis)
        if class_id == 1 and isinstance(spec, DataSpec) and spec.writable:
            return invoke, self._set_data(spec, attribute, value)
        if class_id != 8 or obis != "0.0.1.0.0.255":
            return invoke, int(
                ErrorCode.READ_WRITE_DENIED if self._knows(class_id, obis) else ErrorCode.UNDEFINED_OBJECT
            )
        if attribute != 2:
            return invoke, int(ErrorCode.READ_WRITE_DENIED)
        if len(value) != 14 or value[:2] != b"\x09\x0c":
            return invoke, int(ErrorCode.UNMATCHED_TYPE)
        try:
            meter_time = decode_datetime(value[2:])
        except GxError:
            return invoke, int(ErrorCode.UNMATCHED_TYPE)
        if self._frame_now is not None:
            self.model.set_clock(meter_time, self._frame_now)
        self.session_now = meter_time.replace(microsecond=0)
        return invoke, int(ErrorCode.OK)

    def _set_data(self, spec: DataSpec, attribute: int, value: bytes) -> int:
        """SET of a writable Data object's value: the same A-XDR type, whole, kept by the model."""
        if attribute != 2:
            return int(ErrorCode.READ_WRITE_DENIED)
        if not value or value[0] != spec.data_type:
            return int(ErrorCode.UNMATCHED_TYPE)
        try:
            decoded = decode_value(value)
        except ValueError:
            return int(ErrorCode.UNMATCHED_TYPE)
        setter = getattr(self.model, "set_data_value", None)
        if setter is None:
            return int(ErrorCode.READ_WRITE_DENIED)
        setter(spec.obis, decoded)
        return int(ErrorCode.OK)

    def _knows(self, class_id: int, obis: str) -> bool:
        try:
            kind = ObjectType(class_id)
        except ValueError:
            return False
        return self._server.items.findByLN(kind, obis) is not None

    def callable_method(self, target: object, index: int) -> bool:
        """Methods of the programmable objects (image transfer, calendars) this meter lets clients call,
        and the clock's shift_time where the model can shift its clock."""
        if isinstance(target, GXDLMSClock) and index == CLOCK_SHIFT_TIME:
            return hasattr(self.model, "shift_clock")
        return self._programs is not None and self._programs.callable_method(target, index)

    def act(self, arg: object) -> None:
        """ACTION on the disconnect control: 1 remote_disconnect, 2 remote_reconnect; or a programmable object's."""
        if self._programs is not None:
            target, index = getattr(arg, "target", None), getattr(arg, "index", 0)
            result = self._programs.invoke(target, index, getattr(arg, "parameters", None))
            if result is not None:
                if result:
                    arg.error = ErrorCode(result)  # type: ignore[attr-defined]  # gurux ValueEventArgs
                arg.handled = True  # type: ignore[attr-defined]
                arg.value = 0  # type: ignore[attr-defined]  # no return parameters
                return
        if isinstance(getattr(arg, "target", None), GXDLMSClock) and getattr(arg, "index", 0) == CLOCK_SHIFT_TIME:
            self._shift_clock(arg)
            return
        if not isinstance(getattr(arg, "target", None), GXDLMSDisconnectControl):
            return  # the association's HLS method is answered by MeterAssociation
        self.model.switch_supply(getattr(arg, "index", 0) == 2)
        arg.handled = True  # type: ignore[attr-defined]
        arg.value = 0  # type: ignore[attr-defined]  # no return parameters

    def _shift_clock(self, arg: object) -> None:
        """shift_time (class 8, method 6): a long of -900..900 seconds; anything else is refused."""
        seconds = getattr(arg, "parameters", None)
        shift = getattr(self.model, "shift_clock", None)
        now = self._frame_now
        if shift is None or now is None or type(seconds) is not int or not -900 <= seconds <= 900:
            arg.error = ErrorCode.OTHER_REASON  # type: ignore[attr-defined]  # gurux ValueEventArgs
        else:
            shift(timedelta(seconds=seconds), now)
            if self.session_now is not None:  # the session's meter time moves with the clock, as on a set
                self.session_now += timedelta(seconds=seconds)
        arg.handled = True  # type: ignore[attr-defined]
        arg.value = 0  # type: ignore[attr-defined]  # no return parameters

    def prepare(self, arg: object) -> None:
        """Set the value gurux is about to encode for a GET (called before every attribute read)."""
        target = getattr(arg, "target", None)
        index = getattr(arg, "index", 0)
        now = self.session_now or self._frame_now
        if now is None:
            return  # gurux refuses GETs outside an association, so this is never reached
        now = now.replace(microsecond=0)
        if self._programs is not None and (encoded := self._programs.answer(target, index)) is not None:
            _answer_bytes(arg, encoded)
            return
        if isinstance(target, GXDLMSClock) and index == 2:
            _answer_bytes(arg, encode_time(now))
        elif isinstance(target, GXDLMSExtendedRegister | GXDLMSDemandRegister | GXDLMSData):
            obis = target.logicalName
            spec = self._specs.get(obis)
            encoded = richer_attribute(spec, self._richer_model(), obis, index, now, self._frame_counter)
            if encoded is not None:
                _answer_bytes(arg, encoded)
        elif isinstance(target, GXDLMSRegister) and index == 2:
            target.value = self.model.register_raw(target.logicalName, now)
        elif isinstance(target, GXDLMSProfileGeneric) and index == 2:
            self._prepare_profile(arg, target.logicalName, now)
        elif isinstance(target, GXDLMSProfileGeneric) and index == 7 and self._by_entry:
            target.entriesInUse = self._richer_model().profile_entries(target.logicalName, 1, 1, now)[1]
        elif isinstance(target, MeterAssociation) and index == 2:
            _answer_bytes(arg, encode_object_list(o for o in self._listed if self._lists(o.obis)))
        elif isinstance(target, GXDLMSDisconnectControl):
            target.outputState, target.controlState = self.model.supply()
            # Mode 1 (default): remote disconnect and reconnect; 2: remote reconnect arms, the button closes.
            target.controlMode = getattr(self.model, "control_mode", lambda: 1)()

    def _lists(self, obis: str) -> bool:
        """The association view: the public client of a secured meter sees only the public objects."""
        return self._guard is None or not self._guard.is_public() or obis in PUBLIC_OBJECTS

    def _richer_model(self) -> RicherMeterModel:
        return cast(RicherMeterModel, self.model)

    def _frame_counter(self) -> int:
        """The highest invocation counter this meter accepted from a client (0 without security)."""
        return self._guard.counters.highest_accepted() if self._guard is not None else 0

    def _prepare_profile(self, arg: object, obis: str, now: datetime) -> None:
        spec = self._profiles[obis]
        selector = getattr(arg, "selector", 0)
        params = getattr(arg, "parameters", None)
        columns = list(range(1 + len(spec.registers)))
        rows: Sequence[tuple[datetime, Sequence[int]]]
        if selector == 0:
            rows = self.model.profile_rows(obis, now - timedelta(days=1), now, now)
        elif selector == 1 and isinstance(params, list) and len(params) == 4:
            try:
                start, end = decode_datetime(params[1]), decode_datetime(params[2])
            except (GxError, TypeError):
                arg.error = ErrorCode.OTHER_REASON  # type: ignore[attr-defined]  # gurux ValueEventArgs
                return
            columns = selected_columns(spec, params[3]) or columns
            rows = self.model.profile_rows(obis, start, end, now)
        elif (
            selector == 2 and isinstance(params, list) and len(params) == 4 and all(isinstance(p, int) for p in params)
        ):
            first, last, first_column, last_column = params
            rows = self._richer_model().profile_entries(obis, max(first, 1), last, now)[0]
            chosen = columns[first_column - 1 if first_column else 0 : last_column or None]
            columns = chosen or columns
        else:
            arg.error = ErrorCode.OTHER_REASON  # type: ignore[attr-defined]  # gurux ValueEventArgs
            return
        types = [self._specs[dotted(o)].data_type for o in spec.registers]
        _answer_bytes(arg, encode_buffer(rows[:MAX_ROWS_PER_READ], columns, types))


def _answer_bytes(arg: object, encoded: bytes) -> None:
    """Hand gurux a ready A-XDR encoding for this attribute instead of letting it encode."""
    arg.value = encoded  # type: ignore[attr-defined]  # gurux ValueEventArgs
    arg.byteArray = True  # type: ignore[attr-defined]
    arg.handled = True  # type: ignore[attr-defined]
