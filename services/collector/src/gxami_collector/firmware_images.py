"""Firmware images for the collector: fetched by SHA-256 from the scheduler's API, checked, cached on disk.

The command executor calls :meth:`FirmwareImages.get` with the hash a ``firmware-update`` command
names, then hands the bytes to the driver. An image is trusted only by its hash: a cached file is
hashed again before every use (and fetched again when it no longer matches), a fetched one before
it is cached. The API call carries a viewer token (``Authorization: Bearer``; from
``GXAMI_SCHEDULER_API_TOKEN_FILE`` or ``GXAMI_SCHEDULER_API_TOKEN``) and is bounded: connecting,
each read, and the whole fetch by ``firmware_fetch_timeout_s``; the body by ``max_bytes``. The
token never appears in an error or a log line.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import aiohttp

from gxami_collector.settings import CollectorSettings

log = logging.getLogger(__name__)

MAX_IMAGE_BYTES: Final = 64 * 1024 * 1024
_SHA256: Final = re.compile(r"^[0-9a-f]{64}$")


class FirmwareFetchError(Exception):
    """An image that could not be had: names the image and why (never the token)."""


@dataclass(frozen=True, slots=True)
class FirmwareImage:
    sha256: str
    data: bytes = field(repr=False)
    identification: str


@dataclass(frozen=True, slots=True)
class FirmwareImages:
    """Where images come from and where they are kept (see the module doc)."""

    base_url: str
    token: str = field(repr=False)
    cache_dir: Path
    timeout_s: float = 30.0
    max_bytes: int = MAX_IMAGE_BYTES
    # One fetch per image at a time: a wave's meters start together and need the same bytes once.
    _fetching: dict[str, asyncio.Lock] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_settings(cls, settings: CollectorSettings) -> FirmwareImages:
        """From the collector's settings; FirmwareFetchError when the API or its token is not configured."""
        if not settings.scheduler_api_url:
            raise FirmwareFetchError("GXAMI_SCHEDULER_API_URL is not set: no firmware images can be fetched")
        token = settings.scheduler_api_token.get_secret_value() if settings.scheduler_api_token else None
        if settings.scheduler_api_token_file is not None:
            try:
                token = settings.scheduler_api_token_file.read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise FirmwareFetchError(
                    f"cannot read the scheduler API token file {settings.scheduler_api_token_file}: {exc.strerror}"
                ) from None
        if not token:
            raise FirmwareFetchError("no scheduler API token (GXAMI_SCHEDULER_API_TOKEN_FILE or _TOKEN)")
        return cls(
            settings.scheduler_api_url.rstrip("/"),
            token,
            settings.firmware_cache_dir,
            settings.firmware_fetch_timeout_s,
        )

    async def get(self, sha256: str) -> FirmwareImage:
        """The image with this SHA-256: from the cache if it still hashes right, else from the API."""
        digest = sha256.lower()
        if not _SHA256.match(digest):
            raise FirmwareFetchError(f"{sha256!r} is not a SHA-256 (64 hex digits)")
        async with self._fetching.setdefault(digest, asyncio.Lock()):
            cached = await asyncio.to_thread(self._cached, digest)
            if cached is not None:
                return cached
            image = await self._fetch(digest)
            try:
                await asyncio.to_thread(self._keep, image)
            except OSError as exc:  # the bytes are checked; without a cache they are only fetched again
                log.warning(
                    "cannot cache a firmware image; using it uncached",
                    extra={"sha256": digest, "path": str(self.cache_dir), "error": exc.strerror},
                )
            return image

    async def driver_body(self, body: Mapping[str, object] | None) -> dict[str, object]:
        """A firmware-update command's body (image by ``sha256``) as the driver takes it (image bytes).

        ``identification`` must be the one the image was stored under; ``activate_at`` passes through.
        """
        given = body or {}
        digest, ident = given.get("sha256"), given.get("identification")
        if not isinstance(digest, str):
            raise FirmwareFetchError("firmware-update body: sha256 must name the image")
        image = await self.get(digest)
        if ident is not None and ident != image.identification:
            raise FirmwareFetchError(
                f"firmware-update body: identification {ident!r} is not the image's ({image.identification!r})"
            )
        out: dict[str, object] = {"image": image.data, "identification": image.identification, "sha256": image.sha256}
        if given.get("activate_at") is not None:
            out["activate_at"] = given["activate_at"]
        return out

    def _paths(self, digest: str) -> tuple[Path, Path]:
        return self.cache_dir / f"{digest}.bin", self.cache_dir / f"{digest}.id"

    def _cached(self, digest: str) -> FirmwareImage | None:
        data_path, id_path = self._paths(digest)
        try:
            data = data_path.read_bytes()
            ident = id_path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            return None
        if hashlib.sha256(data).hexdigest() != digest:
            log.warning("cached firmware image no longer matches its hash; fetching it again", extra={"sha256": digest})
            for path in (data_path, id_path):
                with contextlib.suppress(OSError):
                    path.unlink()
            return None
        return FirmwareImage(digest, data, ident)

    def _keep(self, image: FirmwareImage) -> None:
        """Write the image and its identification atomically (a crash leaves no half file under the name)."""
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        data_path, id_path = self._paths(image.sha256)
        for path, content in ((id_path, image.identification.encode()), (data_path, image.data)):
            tmp = path.with_suffix(path.suffix + f".{os.getpid()}.{secrets.token_hex(4)}.tmp")
            with open(tmp, "wb") as out:
                out.write(content)
                out.flush()
                os.fsync(out.fileno())
            tmp.replace(path)

    async def _fetch(self, digest: str) -> FirmwareImage:
        url = f"{self.base_url}/firmware/images/{digest}"
        timeout = aiohttp.ClientTimeout(
            total=self.timeout_s, sock_connect=self.timeout_s, sock_read=min(self.timeout_s, 10.0)
        )
        headers = {"Authorization": f"Bearer {self.token}", "Accept": "application/octet-stream"}
        try:
            async with (
                aiohttp.ClientSession(timeout=timeout) as http,
                http.get(url, headers=headers, allow_redirects=False) as resp,
            ):
                if resp.status != 200:
                    raise FirmwareFetchError(f"image {digest}: the scheduler API answered {resp.status}")
                if (resp.content_length or 0) > self.max_bytes:
                    raise FirmwareFetchError(f"image {digest}: larger than {self.max_bytes} bytes")
                data = bytearray()
                async for chunk in resp.content.iter_chunked(1 << 16):
                    data += chunk
                    if len(data) > self.max_bytes:
                        raise FirmwareFetchError(f"image {digest}: larger than {self.max_bytes} bytes")
                ident = resp.headers.get("X-Firmware-Identification", "")
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise FirmwareFetchError(f"image {digest}: fetching it failed ({type(exc).__name__})") from None
        if hashlib.sha256(data).hexdigest() != digest:
            raise FirmwareFetchError(f"image {digest}: the bytes fetched have another SHA-256; not used")
        if not ident:
            raise FirmwareFetchError(f"image {digest}: the API gave no identification")
        return FirmwareImage(digest, bytes(data), ident)
