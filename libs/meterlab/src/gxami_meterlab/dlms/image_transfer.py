"""A simulated meter's image transfer object (class 18, 0-0:44.0.0.255) and active firmware identifier.

:class:`ImageTransferState` lives in the meter's :class:`~gxami_meterlab.simulators.dlms.MeterState`,
so what the meter received survives a dropped connection (the bitmap is kept, as a real meter's
is). Initiating resets it (Blue Book: a new transfer); blocks are kept by number; verify checks
that every block is there and stores the SHA-256 of the image as its signature; activate makes
the verified image's identification the active firmware identifier (1-0:0.2.0.255, Data).

Faults (:class:`FirmwareFaults`), drawn from a seeded generator so a test run is repeatable:
``block_refusal_rate`` refuses a block (temporary-failure, block not stored),
``verify_failure_rate`` fails image_verify (status verification-failed), ``drop_after_blocks``
drops the connection once after that many blocks of one connection (the last of them stored),
``report_identification`` makes attribute 7 name another identification (a meter that would
activate something else), ``busy_polls`` makes verify and activate answer temporary-failure and
finish only after that many reads of the status (a meter that verifies in the background).
:attr:`ImageTransferState.log` records what was executed.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field
from typing import Final

from gurux_dlms.enums import ErrorCode

from gxcore.errors import ProtocolError
from gxcore.protocols.dlms import axdr
from gxcore.protocols.dlms import image_transfer as it

DEFAULT_FIRMWARE: Final = b"GXSIM-1.0.0"
DEFAULT_BLOCK_SIZE: Final = 96
CALLABLE_METHODS: Final = (it.INITIATE, it.BLOCK, it.VERIFY, it.ACTIVATE)


@dataclass(slots=True)
class FirmwareFaults:
    """How often the meter misbehaves (see the module doc); all off by default."""

    block_refusal_rate: float = 0.0
    verify_failure_rate: float = 0.0
    drop_after_blocks: int | None = None
    report_identification: bytes | None = None
    busy_polls: int = 0  # verify/activate answer temporary-failure; done after this many status reads


@dataclass(slots=True)
class ImageTransferState:
    """What the meter holds of an image transfer; kept across connections."""

    block_size: int = DEFAULT_BLOCK_SIZE
    enabled: bool = True
    status: int = it.NOT_INITIATED
    identification: bytes = b""
    size: int = 0
    blocks: dict[int, bytes] = field(default_factory=dict)
    signature: bytes = b""
    active: bytes = DEFAULT_FIRMWARE
    faults: FirmwareFaults = field(default_factory=FirmwareFaults)
    rng: random.Random = field(default_factory=lambda: random.Random(0))  # noqa: S311 - simulated faults, not secrets
    log: list[tuple[str, object]] = field(default_factory=list)
    blocks_this_connection: int = 0
    drop_now: bool = False
    busy_reads: int = 0  # status reads left before a verification or activation in progress ends
    busy_outcome: int = it.NOT_INITIATED

    # -- attributes ---------------------------------------------------------------------------
    @property
    def total(self) -> int:
        return -(-self.size // self.block_size) if self.size else 0

    def first_missing(self) -> int:
        return next((n for n in range(self.total) if n not in self.blocks), self.total)

    def bitmap(self) -> str:
        return "".join("1" if n in self.blocks else "0" for n in range(self.total))

    def attribute(self, index: int) -> bytes | None:
        """A-XDR of attribute ``index`` (None: not one this object answers)."""
        if index == 2:
            return it.double_long_unsigned(self.block_size)
        if index == 3:
            return encode_bit_string(self.bitmap())
        if index == 4:
            return it.double_long_unsigned(self.first_missing())
        if index == 5:
            return b"\x03" + (b"\x01" if self.enabled else b"\x00")
        if index == 6:
            self._progress()
            return bytes([0x16, self.status])
        if index == 7:
            if not self.identification:
                return b"\x01\x00"
            shown = self.faults.report_identification or self.identification
            entry = it.double_long_unsigned(self.size) + it.octet_string(shown) + it.octet_string(self.signature)
            return b"\x01\x01\x02\x03" + entry
        return None

    def _progress(self) -> None:
        """A verification or activation in progress moves on with each status read the client makes."""
        if self.status not in (it.VERIFYING, it.ACTIVATING):
            return
        self.busy_reads -= 1
        if self.busy_reads > 0:
            return
        if self.busy_outcome == it.ACTIVATED:
            self.active = self.identification
            self.log.append(("activate", self.identification))
        self.status = self.busy_outcome

    def active_firmware(self) -> bytes:
        return it.octet_string(self.active)

    # -- methods ------------------------------------------------------------------------------
    def connection_opened(self) -> None:
        self.blocks_this_connection = 0
        self.drop_now = False

    def invoke(self, method: int, parameters: object) -> int:
        """Run one method; the Action-Result (ErrorCode) it answers."""
        if not self.enabled:
            return int(ErrorCode.READ_WRITE_DENIED)
        if method == it.INITIATE:
            return self._initiate(parameters)
        if method == it.BLOCK:
            return self._block(parameters)
        if method == it.VERIFY:
            return self._verify()
        if method == it.ACTIVATE:
            return self._activate()
        return int(ErrorCode.READ_WRITE_DENIED)

    def _initiate(self, parameters: object) -> int:
        fields = _pair(parameters)
        if fields is None or not isinstance(fields[0], bytes) or not isinstance(fields[1], int):
            return int(ErrorCode.UNMATCHED_TYPE)
        ident, size = fields[0], fields[1]
        if not ident or not 0 < size <= it.MAX_IMAGE_BYTES:
            return int(ErrorCode.OTHER_REASON)
        self.identification, self.size = ident, size
        self.blocks, self.signature, self.status = {}, b"", it.INITIATED
        self.log.append(("initiate", ident))
        return int(ErrorCode.OK)

    def _block(self, parameters: object) -> int:
        fields = _pair(parameters)
        if fields is None or not isinstance(fields[0], int) or not isinstance(fields[1], bytes):
            return int(ErrorCode.UNMATCHED_TYPE)
        number, value = fields[0], fields[1]
        if self.status not in (it.INITIATED, it.VERIFY_FAILED) or not 0 <= number < self.total:
            return int(ErrorCode.OTHER_REASON)
        expected = min(self.block_size, self.size - number * self.block_size)
        if len(value) != expected:
            return int(ErrorCode.OTHER_REASON)
        if self.faults.block_refusal_rate and self.rng.random() < self.faults.block_refusal_rate:
            self.log.append(("refused", number))
            return int(ErrorCode.TEMPORARY_FAILURE)
        self.blocks[number] = value
        self.status = it.INITIATED
        self.log.append(("block", number))
        self.blocks_this_connection += 1
        drop = self.faults.drop_after_blocks
        if drop is not None and self.blocks_this_connection >= drop:
            self.faults.drop_after_blocks = None  # once
            self.drop_now = True
        return int(ErrorCode.OK)

    def _verify(self) -> int:
        if self.status not in (it.INITIATED, it.VERIFY_FAILED, it.VERIFIED) or self.first_missing() < self.total:
            self.status = it.VERIFY_FAILED
            self.log.append(("verify", "incomplete"))
            return int(ErrorCode.OTHER_REASON)
        if self.faults.verify_failure_rate and self.rng.random() < self.faults.verify_failure_rate:
            self.status = it.VERIFY_FAILED
            self.log.append(("verify", "failed"))
            return int(ErrorCode.OTHER_REASON)
        image = b"".join(self.blocks[n] for n in range(self.total))
        self.signature = hashlib.sha256(image).digest()
        self.log.append(("verify", "ok"))
        if self.faults.busy_polls:
            self.status, self.busy_outcome, self.busy_reads = it.VERIFYING, it.VERIFIED, self.faults.busy_polls
            return int(ErrorCode.TEMPORARY_FAILURE)
        self.status = it.VERIFIED
        return int(ErrorCode.OK)

    def _activate(self) -> int:
        if self.status not in (it.VERIFIED, it.ACTIVATED):
            self.log.append(("activate", "refused"))
            return int(ErrorCode.OTHER_REASON)
        if self.faults.busy_polls:
            self.status, self.busy_outcome, self.busy_reads = it.ACTIVATING, it.ACTIVATED, self.faults.busy_polls
            return int(ErrorCode.TEMPORARY_FAILURE)
        self.active = self.identification
        self.status = it.ACTIVATED
        self.log.append(("activate", self.identification))
        return int(ErrorCode.OK)

    @property
    def sent_blocks(self) -> list[int]:
        """Every block number stored, in the order received (a resend shows twice)."""
        return [int(n) for kind, n in self.log if kind == "block" and isinstance(n, int)]


def encode_bit_string(bits: str) -> bytes:
    """A-XDR bit-string: tag 04, the length in bits, the bits MSB first, padded with zeros."""
    padded = bits + "0" * (-len(bits) % 8)
    body = bytes(int(padded[i : i + 8], 2) for i in range(0, len(padded), 8))
    return b"\x04" + _length(len(bits)) + body


def _length(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    body = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(body)]) + body


def _pair(parameters: object) -> tuple[object, object] | None:
    """A method's two-field structure, whether gurux decoded it (a list) or left it as A-XDR bytes."""
    value = parameters
    if isinstance(value, bytes | bytearray):
        try:
            value = axdr.decode_all(bytes(value))
        except ProtocolError:
            return None
    if not isinstance(value, list) or len(value) != 2:
        return None
    first, second = value
    return (bytes(first) if isinstance(first, bytearray) else first), (
        bytes(second) if isinstance(second, bytearray) else second
    )
