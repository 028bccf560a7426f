"""The DLMS driver's ``firmware-update``: image transfer (class 18) with resume, verify and activation.

``command.body`` holds ``image`` (the bytes, already fetched and checked by hash by the caller),
``identification`` (str or bytes: what the meter must report for the image), optionally
``sha256`` (hex; checked against the bytes here too) and ``activate_at`` (an aware datetime or
ISO 8601 text). ``command.options`` may give ``retries`` (times a refused block is sent again,
default 2), ``poll_interval`` and ``max_polls`` (how often and how long the status is read again
while the meter is still verifying or activating; 1 s, 60 times).

One execute, in one association:

1. If the active firmware identifier (1-0:0.2.0.255, when the meter has it) already equals the
   identification, nothing is sent: the result says so (the command is idempotent).
2. Read image_block_size (2) and image_transfer_enabled (5); a disabled transfer is refused.
3. Resume or start: when the meter reports status *initiated* (6) for this identification and
   size (7), the transfer goes on from the first block it lacks (4, and the bitmap 3), without
   initiating again (initiating resets the meter's bitmap); a transfer already *verified* goes
   straight to activation; anything else initiates (method 1) and starts from block 0.
4. Send the missing blocks (method 2) in the meter's block size.
5. image_verify (method 3), then status must be *verification-successful* and
   image_to_activate_info (7) must name this identification and size (and, for a 32-byte
   signature, this SHA-256): otherwise the command fails and nothing is activated.
6. Activation (method 4) when ``activate_at`` is absent or not after the driver's clock; the
   status must then be *activation-successful* and the active firmware identifier (if the meter
   has it) the new one. A future ``activate_at`` leaves the image verified, not active
   (``state="verified"``): the caller runs the same command again when it is due, and that
   execute finds the image verified and only activates. The single-action schedule
   (0-0:15.0.2.255) is not used: not every meter has it, and a driver-side activation is
   audited like any other command.

Progress is in the result's readings (``firmware-blocks-sent`` this execute,
``firmware-blocks-done``, ``firmware-blocks-total``, ``firmware-first-missing``) and its detail; a
failure raises :class:`FirmwareTransferError`, a ProtocolError carrying the same figures.
"""

from __future__ import annotations

import asyncio
import binascii
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Final

from gxcore.drivers.api import CommandResult, DriverCommand
from gxcore.drivers.dlms.reader import DlmsSession
from gxcore.errors import AccessDeniedError, ConfigurationError, GxError, ProtocolError
from gxcore.protocols.dlms import image_transfer as it
from gxcore.protocols.dlms.parameters import CLASS_DATA
from gxcore.readings import Reading

DEFAULT_RETRIES: Final = 2
DEFAULT_POLL_INTERVAL: Final = 1.0  # seconds between status reads while the meter verifies or activates
DEFAULT_MAX_POLLS: Final = 60
_IMAGE_ATTRS: Final = {"block_size": 2, "bitmap": 3, "first_missing": 4, "enabled": 5, "status": 6, "info": 7}


class FirmwareTransferError(ProtocolError):
    """An image transfer that did not finish; ``blocks_done`` of ``blocks_total`` are on the meter."""

    def __init__(self, message: str, *, blocks_done: int, blocks_total: int, first_missing: int) -> None:
        self.blocks_done = blocks_done
        self.blocks_total = blocks_total
        self.first_missing = first_missing
        super().__init__(f"{message} ({blocks_done}/{blocks_total} blocks on the meter, first missing {first_missing})")


@dataclass(frozen=True, slots=True)
class FirmwareOrder:
    """What a firmware-update command asks for, checked before any I/O."""

    image: it.FirmwareImage
    activate_at: datetime | None
    retries: int
    poll_interval: float = DEFAULT_POLL_INTERVAL
    max_polls: int = DEFAULT_MAX_POLLS


def firmware_order(command: DriverCommand, meter_id: str) -> FirmwareOrder:
    """The command's body checked: ConfigurationError names the field that is wrong."""
    where = f"meter {meter_id}: firmware-update"
    body: Mapping[str, object] = command.body or {}
    data = body.get("image")
    if not isinstance(data, bytes | bytearray) or not data:
        raise ConfigurationError(f"{where}: body.image must be the image bytes")
    ident = body.get("identification")
    if isinstance(ident, str):
        ident = ident.encode()
    if not isinstance(ident, bytes | bytearray) or not ident:
        raise ConfigurationError(f"{where}: body.identification must be a non-empty string")
    try:
        image = it.FirmwareImage(bytes(data), bytes(ident))
    except ValueError as exc:
        raise ConfigurationError(f"{where}: {exc}") from None
    digest = body.get("sha256")
    if digest is not None:
        try:
            wanted = binascii.unhexlify(str(digest))
        except (binascii.Error, ValueError):
            raise ConfigurationError(f"{where}: body.sha256 is not hex") from None
        if wanted != image.sha256:
            raise ConfigurationError(f"{where}: the image bytes do not have the SHA-256 body.sha256 names")
    at = body.get("activate_at")
    if isinstance(at, str):
        try:
            at = datetime.fromisoformat(at)
        except ValueError:
            raise ConfigurationError(f"{where}: body.activate_at {at!r} is not an ISO 8601 time") from None
    if at is not None and (not isinstance(at, datetime) or at.tzinfo is None):
        raise ConfigurationError(f"{where}: body.activate_at must be an aware time")
    try:
        retries = int(command.options.get("retries", DEFAULT_RETRIES))
    except ValueError:
        raise ConfigurationError(f"{where}: option retries must be an integer") from None
    if not 0 <= retries <= 10:
        raise ConfigurationError(f"{where}: option retries must be in 0..10")
    try:
        interval = float(command.options.get("poll_interval", DEFAULT_POLL_INTERVAL))
        polls = int(command.options.get("max_polls", DEFAULT_MAX_POLLS))
    except ValueError:
        raise ConfigurationError(f"{where}: options poll_interval and max_polls must be numbers") from None
    if not (0 <= interval <= 60 and 0 <= polls <= 1000):
        raise ConfigurationError(f"{where}: poll_interval must be in 0..60 s and max_polls in 0..1000")
    return FirmwareOrder(image, at, retries, interval, polls)


async def active_firmware(session: DlmsSession) -> bytes | None:
    """The active firmware identifier (1-0:0.2.0.255), or None if the meter has no such object."""
    try:
        value = await session.get(CLASS_DATA, it.ACTIVE_FIRMWARE_ID, 2)
    except (AccessDeniedError, ProtocolError):
        if session.broken:
            raise
        return None
    if isinstance(value, str):
        return value.encode()
    return bytes(value) if isinstance(value, bytes | bytearray) else None


async def _attr(session: DlmsSession, name: str) -> object:
    return await session.get(it.CLASS_IMAGE_TRANSFER, it.IMAGE_TRANSFER, _IMAGE_ATTRS[name])


@dataclass(frozen=True, slots=True)
class FirmwareProgress:
    """How far a transfer is: ``blocks_done`` of ``blocks_total`` on the meter, ``sent`` by this execute."""

    meter_id: str
    identification: str
    blocks_done: int
    blocks_total: int
    sent: int
    first_missing: int | None = None  # the next block this execute sends (``blocks_total`` when none is left)


ProgressHook = Callable[[FirmwareProgress], None]


async def execute_firmware(
    session: DlmsSession,
    command: DriverCommand,
    *,
    meter_id: str,
    clock: Callable[[], datetime],
    on_progress: ProgressHook | None = None,
) -> CommandResult:
    """Run a firmware-update over the unopened ``session`` (see the module doc).

    ``on_progress`` hears once the blocks still missing are known, then about every 5 % of the
    image, then when the last block is on the meter (the collector publishes these as ``sent``).
    """
    order = firmware_order(command, meter_id)
    image = order.image
    async with session:
        if await active_firmware(session) == image.identification:
            return _result(command, clock(), "activated", 0, 0, 0, f"{_name(image)} is already the active firmware")
        if await _attr(session, "enabled") is not True:
            raise ProtocolError(f"meter {meter_id}: image transfer is not enabled (0-0:44.0.0 attribute 5)")
        size = it.check_block_size(await _attr(session, "block_size"), image)
        total = image.block_count(size)
        status = await _attr(session, "status")
        it.status_name(status)
        info = it.activate_info(await _attr(session, "info"))
        ours = it.image_matches(info, image) is None
        sent = 0
        if ours and status in (it.VERIFIED, it.ACTIVATE_FAILED):
            missing: list[int] = []
        elif ours and status == it.INITIATED:
            bits = it.bitmap_bits(await _attr(session, "bitmap"))
            first = await _attr(session, "first_missing")
            if isinstance(first, bool) or not isinstance(first, int):
                raise ProtocolError(f"meter {meter_id}: image_first_not_transferred_block_number is not an integer")
            missing = it.missing_blocks(bits, first, total)
        else:
            await session.call(
                it.CLASS_IMAGE_TRANSFER,
                it.IMAGE_TRANSFER,
                it.INITIATE,
                it.initiate_parameters(image.identification, len(image.data)),
            )
            missing = list(range(total))
        resumed_at = missing[0] if missing else total
        name = image.identification.decode(errors="replace")
        every = max(1, total // 20)

        def report() -> None:
            if on_progress is not None:
                upcoming = missing[sent] if sent < len(missing) else total
                on_progress(FirmwareProgress(meter_id, name, total - len(missing) + sent, total, sent, upcoming))

        report()
        for pos, number in enumerate(missing):
            await _send_block(session, image, number, size, order.retries, total - len(missing) + pos, total)
            sent += 1
            if sent % every == 0 or sent == len(missing):
                report()
        if missing or status != it.VERIFIED:
            await _verify(session, order, meter_id, total)
        if order.activate_at is not None and order.activate_at > clock():
            detail = (
                f"{_name(image)}: {sent} blocks sent from block {resumed_at}, {total} in all; verified,"
                f" activation due at {order.activate_at.isoformat()}"
            )
            return _result(command, clock(), "verified", sent, total, total, detail)
        try:
            await session.action(it.CLASS_IMAGE_TRANSFER, it.IMAGE_TRANSFER, it.ACTIVATE)
        except ProtocolError:
            if session.broken:
                raise
        after = await _settled(session, order, it.ACTIVATING)
        if after != it.ACTIVATED:
            raise ProtocolError(f"meter {meter_id}: after image_activate the status is {it.status_name(after)}")
        active = await active_firmware(session)
        if active is not None and active != image.identification:
            raise ProtocolError(f"meter {meter_id}: after activation the active firmware is {active!r}")
    detail = f"{_name(image)}: {sent} blocks sent from block {resumed_at}, {total} in all; activated"
    return _result(command, clock(), "activated", sent, total, total, detail)


async def _send_block(
    session: DlmsSession, image: it.FirmwareImage, number: int, size: int, retries: int, done: int, total: int
) -> None:
    """image_block_transfer of one block, sent again up to ``retries`` times when the meter refuses it."""
    for attempt in range(retries + 1):
        try:
            await session.call(
                it.CLASS_IMAGE_TRANSFER,
                it.IMAGE_TRANSFER,
                it.BLOCK,
                it.block_parameters(number, image.block(number, size)),
            )
            return
        except GxError as exc:  # a refusal (ProtocolError) or a lost link (media, timeout)
            if session.broken or not isinstance(exc, ProtocolError):
                raise FirmwareTransferError(
                    f"link lost sending block {number}: {exc.reason}",
                    blocks_done=done,
                    blocks_total=total,
                    first_missing=number,
                ) from None
            if attempt == retries:
                raise FirmwareTransferError(
                    f"the meter refused block {number} {retries + 1} times: {exc.reason}",
                    blocks_done=done,
                    blocks_total=total,
                    first_missing=number,
                ) from None


async def _settled(session: DlmsSession, order: FirmwareOrder, busy: int) -> object:
    """image_transfer_status, read again while the meter reports ``busy`` (verifying, activating).

    A meter that cannot verify or activate at once answers the method with a refusal (IDIS:
    temporary-failure) and moves the status on by itself; the status is polled every
    ``poll_interval`` seconds, at most ``max_polls`` times.
    """
    status = await _attr(session, "status")
    for _ in range(order.max_polls):
        if status != busy:
            break
        await asyncio.sleep(order.poll_interval)
        status = await _attr(session, "status")
    return status


async def _verify(session: DlmsSession, order: FirmwareOrder, meter_id: str, total: int) -> None:
    """image_verify, then the status and what the meter would activate must be this image."""
    image = order.image
    refusal = ""
    try:
        await session.action(it.CLASS_IMAGE_TRANSFER, it.IMAGE_TRANSFER, it.VERIFY)
    except ProtocolError as exc:
        if session.broken:
            raise
        refusal = exc.reason
    status = await _settled(session, order, it.VERIFYING)
    if status != it.VERIFIED:
        why = f"image_verify refused ({refusal}); " if refusal else "after image_verify "
        raise FirmwareTransferError(
            f"{why}status {it.status_name(status)}",
            blocks_done=total,
            blocks_total=total,
            first_missing=total,
        )
    mismatch = it.image_matches(it.activate_info(await _attr(session, "info")), image)
    if mismatch is not None:
        raise ProtocolError(f"meter {meter_id}: not activating: {mismatch}")


def _name(image: it.FirmwareImage) -> str:
    return f"image {image.identification.decode(errors='replace')!r}"


def _result(
    command: DriverCommand, at: datetime, state: str, sent: int, done: int, total: int, detail: str
) -> CommandResult:
    tags: dict[str, str | int] = {"source": it.IMAGE_TRANSFER}
    figures = {
        "firmware-blocks-sent": sent,
        "firmware-blocks-done": done,
        "firmware-blocks-total": total,
        "firmware-first-missing": done,
    }
    readings = [Reading(name, float(value), "", at, extra=tags) for name, value in figures.items()]
    return CommandResult(command, state=state, readings=readings, detail=detail)
