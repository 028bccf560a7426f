"""Image transfer (COSEM class 18, Blue Book 4.4.6) without I/O: parameter encodings, the block plan.

The object (IDIS: 0-0:44.0.0.255) has::

    2 image_block_size                     double-long-unsigned  bytes per block, the meter's choice
    3 image_transferred_blocks_status      bit-string            bit n (MSB first) = block n received
    4 image_first_not_transferred_block_number  double-long-unsigned
    5 image_transfer_enabled               boolean
    6 image_transfer_status                enum (see STATUS)
    7 image_to_activate_info               array of structure {size double-long-unsigned,
                                              identification octet-string, signature octet-string}
    method 1 image_transfer_initiate  structure {image_identifier octet-string,
                                                 image_size double-long-unsigned}
    method 2 image_block_transfer     structure {image_block_number double-long-unsigned,
                                                 image_block_value octet-string}
    method 3 image_verify             integer 0
    method 4 image_activate           integer 0

Initiating resets the meter's bitmap, so a transfer is resumed by *not* initiating again: when
the meter reports status "initiated" for the same identification and size, the blocks still
missing are those the bitmap (attribute 3) lacks, from attribute 4 on (:func:`missing_blocks`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from gxcore.errors import ProtocolError

IMAGE_TRANSFER: Final = "0.0.44.0.0.255"
CLASS_IMAGE_TRANSFER: Final = 18
ACTIVE_FIRMWARE_ID: Final = "1.0.0.2.0.255"  # IDIS active firmware identifier (Data, octet-string)
INITIATE, BLOCK, VERIFY, ACTIVATE = 1, 2, 3, 4
STATUS: Final = {
    0: "not-initiated",
    1: "initiated",
    2: "verification-initiated",
    3: "verification-successful",
    4: "verification-failed",
    5: "activation-initiated",
    6: "activation-successful",
    7: "activation-failed",
}
NOT_INITIATED, INITIATED, VERIFYING, VERIFIED, VERIFY_FAILED, ACTIVATING, ACTIVATED, ACTIVATE_FAILED = range(8)
MAX_IMAGE_BYTES: Final = 64 * 1024 * 1024  # larger than any meter firmware we expect; bounds every allocation
MAX_BLOCKS: Final = 1 << 20


def _length(n: int) -> bytes:
    """A-XDR length: one byte below 0x80, else 0x8N and N big-endian bytes."""
    if n < 0x80:
        return bytes([n])
    body = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(body)]) + body


def octet_string(value: bytes) -> bytes:
    return b"\x09" + _length(len(value)) + value


def double_long_unsigned(value: int) -> bytes:
    if not 0 <= value < 2**32:
        raise ValueError(f"{value} does not fit a double-long-unsigned")
    return b"\x06" + value.to_bytes(4, "big")


def initiate_parameters(identification: bytes, size: int) -> bytes:
    """Method 1's parameter: structure {image_identifier, image_size}."""
    return b"\x02\x02" + octet_string(identification) + double_long_unsigned(size)


def block_parameters(number: int, block: bytes) -> bytes:
    """Method 2's parameter: structure {image_block_number, image_block_value}."""
    return b"\x02\x02" + double_long_unsigned(number) + octet_string(block)


@dataclass(frozen=True, slots=True)
class FirmwareImage:
    """An image to transfer: its bytes, the identification the meter will report, its SHA-256."""

    data: bytes
    identification: bytes

    def __post_init__(self) -> None:
        if not self.data:
            raise ValueError("a firmware image has at least one byte")
        if len(self.data) > MAX_IMAGE_BYTES:
            raise ValueError(f"a firmware image of {len(self.data)} bytes is larger than {MAX_IMAGE_BYTES}")
        if not 0 < len(self.identification) <= 255:
            raise ValueError("a firmware identification has 1..255 bytes")

    @property
    def sha256(self) -> bytes:
        return hashlib.sha256(self.data).digest()

    def block_count(self, block_size: int) -> int:
        return -(-len(self.data) // block_size)

    def block(self, number: int, block_size: int) -> bytes:
        return self.data[number * block_size : (number + 1) * block_size]


@dataclass(frozen=True, slots=True)
class ImageToActivate:
    """One entry of attribute 7: what the meter holds and would activate."""

    size: int
    identification: bytes
    signature: bytes


def check_block_size(value: object, image: FirmwareImage) -> int:
    """Attribute 2 as a usable block size; ProtocolError for a size that cannot carry the image."""
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ProtocolError(f"image transfer: image_block_size {value!r} is not a positive integer")
    if image.block_count(value) > MAX_BLOCKS:
        raise ProtocolError(f"image transfer: block size {value} makes more than {MAX_BLOCKS} blocks")
    return value


def bitmap_bits(value: object) -> str:
    """Attribute 3 as a string of "0"/"1" (block 0 first); gurux gives a GXBitString or a str."""
    text = value if isinstance(value, str) else str(value) if value is not None else ""
    if any(c not in "01" for c in text):
        raise ProtocolError("image transfer: image_transferred_blocks_status is not a bit-string")
    return text


def missing_blocks(bits: str, first_missing: int, total: int) -> list[int]:
    """Blocks still to send: from ``first_missing`` (attribute 4) on, those the bitmap lacks.

    A bitmap shorter than the image (some meters send only the bits up to the last block received)
    counts the rest as missing; blocks below ``first_missing`` are taken as received, as the meter says.
    """
    start = max(0, min(first_missing, total))
    return [n for n in range(start, total) if n >= len(bits) or bits[n] != "1"]


def activate_info(value: object) -> list[ImageToActivate]:
    """Attribute 7 decoded; ProtocolError for any other shape."""
    if value is None:
        return []
    if not isinstance(value, Sequence) or isinstance(value, str | bytes | bytearray):
        raise ProtocolError("image transfer: image_to_activate_info is not an array")
    out: list[ImageToActivate] = []
    for pos, item in enumerate(value):
        if not (isinstance(item, Sequence) and not isinstance(item, str | bytes | bytearray) and len(item) == 3):
            raise ProtocolError(f"image transfer: image_to_activate_info entry {pos} is not a 3-element structure")
        size, ident, signature = item[0], item[1], item[2]
        if isinstance(size, bool) or not isinstance(size, int):
            raise ProtocolError(f"image transfer: image_to_activate_info entry {pos} has no size")
        out.append(ImageToActivate(size, _octets(ident, pos), _octets(signature, pos)))
    return out


def _octets(value: object, pos: int) -> bytes:
    if value is None:
        return b""
    if isinstance(value, bytes | bytearray):
        return bytes(value)
    if isinstance(value, str):
        return value.encode()
    raise ProtocolError(f"image transfer: image_to_activate_info entry {pos} has a non-octet-string field")


def status_name(value: object) -> str:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ProtocolError(f"image transfer: image_transfer_status {value!r} is not an enum")
    return STATUS.get(value, f"status-{value}")


def image_matches(info: Sequence[ImageToActivate], image: FirmwareImage) -> str | None:
    """Why the meter's image to activate is not ``image`` (None when it is).

    The identification and size must match; a 32-byte signature must be the image's SHA-256
    (what a meter reports that hashes what it received); another non-empty signature is a
    vendor signature this check cannot verify and is left to the meter's own image_verify.
    """
    if not info:
        return "the meter reports no image to activate"
    mine = [i for i in info if i.identification == image.identification]
    if not mine:
        shown = ", ".join(repr(i.identification) for i in info)
        return f"the meter would activate {shown}, not {image.identification!r}"
    entry = mine[0]
    if entry.size != len(image.data):
        return f"the meter holds {entry.size} bytes for {image.identification!r}, the image has {len(image.data)}"
    if len(entry.signature) == 32 and entry.signature != image.sha256:
        return f"the meter's hash of {image.identification!r} differs from the image's SHA-256"
    return None
