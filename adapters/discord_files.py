"""Attachments in (Discord's CDN only, size-capped) and result files out (fitted to the limit)."""

from __future__ import annotations

import asyncio
import io
from collections.abc import Iterable, Sequence
from urllib.parse import urlsplit

import aiohttp
import discord

from bot import images
from bot.errors import AttachmentRejected, format_duration
from bot.models import SourceImage, StoredImage

CDN_HOSTS = frozenset({"cdn.discordapp.com", "media.discordapp.net"})
DEFAULT_UPLOAD_LIMIT = 10 * 1024 * 1024
# Room for payload_json and the multipart framing: Discord counts the whole request.
REQUEST_OVERHEAD = 64 * 1024
DOWNLOAD_TIMEOUT = 60.0


def _mb(size: int) -> str:
    return f"{size / (1024 * 1024):.1f} MB"


class AttachmentFetcher:
    """Downloads user attachments, but only from Discord's own file hosts."""

    def __init__(self, api_base_url: str, max_bytes: int) -> None:
        api = urlsplit(api_base_url)
        # A REST proxy (or a test fake) serves the CDN paths itself, so its host is trusted too.
        self._extra_origin = (api.scheme, api.netloc)
        self.max_bytes = max_bytes
        self._session: aiohttp.ClientSession | None = None

    def allowed(self, url: str) -> bool:
        """True when ``url`` points at Discord's CDN (or the configured API host)."""
        parts = urlsplit(url)
        if parts.scheme == "https" and parts.hostname in CDN_HOSTS:
            return True
        return (parts.scheme, parts.netloc) == self._extra_origin

    async def fetch(self, url: str, filename: str, declared_size: int) -> SourceImage:
        """The file's bytes as a raw SourceImage; AttachmentRejected when it can't be used."""
        if declared_size > self.max_bytes:
            raise AttachmentRejected(
                filename, f"it is {_mb(declared_size)}; the limit is {_mb(self.max_bytes)}"
            )
        if not self.allowed(url):
            raise AttachmentRejected(filename, "it is not stored on Discord")
        if self._session is None or self._session.closed:
            timeout = aiohttp.ClientTimeout(total=DOWNLOAD_TIMEOUT)
            self._session = aiohttp.ClientSession(timeout=timeout)
        try:
            async with self._session.get(url, allow_redirects=False) as response:
                if response.status != 200:
                    raise AttachmentRejected(filename, "Discord would not hand it over; try again")
                chunks: list[bytes] = []
                total = 0
                async for chunk in response.content.iter_chunked(64 * 1024):
                    total += len(chunk)
                    if total > self.max_bytes:
                        raise AttachmentRejected(
                            filename, f"it is over the {_mb(self.max_bytes)} limit"
                        )
                    chunks.append(chunk)
        except (aiohttp.ClientError, TimeoutError):
            raise AttachmentRejected(
                filename,
                f"downloading it failed or took over {format_duration(DOWNLOAD_TIMEOUT)}",
            ) from None
        return SourceImage(data=b"".join(chunks), filename=filename, mime="")

    async def fetch_attachment(self, attachment: discord.Attachment) -> SourceImage:
        """Download one discord.py Attachment."""
        return await self.fetch(attachment.url, attachment.filename, attachment.size)

    async def fetch_all(self, attachments: Iterable[discord.Attachment]) -> list[SourceImage]:
        """Download several attachments at once, keeping their order."""
        return list(await asyncio.gather(*(self.fetch_attachment(a) for a in attachments)))

    async def aclose(self) -> None:
        """Close the download session."""
        if self._session is not None:
            await self._session.close()


def is_image(attachment: discord.Attachment) -> bool:
    """True for attachments that look like images (by type, else by file name)."""
    if attachment.content_type:
        return attachment.content_type.startswith("image/")
    name = attachment.filename.lower()
    return name.endswith((".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp"))


def split_mask(
    attachments: Sequence[discord.Attachment],
) -> tuple[list[discord.Attachment], discord.Attachment | None]:
    """Image attachments, and the one whose name starts with ``mask`` (if any)."""
    sources: list[discord.Attachment] = []
    mask: discord.Attachment | None = None
    for attachment in attachments:
        if not is_image(attachment):
            continue
        if mask is None and attachment.filename.lower().startswith("mask"):
            mask = attachment
        else:
            sources.append(attachment)
    return sources, mask


Upload = tuple[str, bytes]


def to_files(uploads: Sequence[Upload]) -> list[discord.File]:
    """Fresh discord.File objects (discord.py closes them after each request)."""
    return [discord.File(io.BytesIO(data), filename=name) for name, data in uploads]


async def result_files(
    stored: Sequence[StoredImage], job_id: str, limit_bytes: int
) -> list[Upload]:
    """The job's images as Discord files whose total fits under the upload limit."""
    budget = max(256 * 1024, (limit_bytes - REQUEST_OVERHEAD) // max(1, len(stored)))

    def prepare(image: StoredImage) -> tuple[bytes, str, str]:
        ext = image.path.suffix or ".png"
        name = f"imagine-{job_id}-{image.index + 1}{ext}"
        return images.fit_for_upload(image.read_bytes(), name, budget)

    fitted = await asyncio.gather(*(asyncio.to_thread(prepare, image) for image in stored))
    return [(name, data) for data, name, _mime in fitted]


async def preview_file(data: bytes) -> Upload:
    """A small JPEG of a partial image."""
    return "preview.jpg", await asyncio.to_thread(images.preview_jpeg, data)
