"""Attachments in (Discord's CDN only, size-capped) and result files out (fitted to the limit)."""

from __future__ import annotations

import asyncio
import io
from collections.abc import Iterable, Sequence

import discord

from bot import images
from bot.commands import RemoteFile
from bot.config import Settings
from bot.downloads import Downloader, FileHost, origin_of
from bot.models import StoredImage

CDN_HOSTS = frozenset({"cdn.discordapp.com", "media.discordapp.net"})
DEFAULT_UPLOAD_LIMIT = 10 * 1024 * 1024
# Room for payload_json and the multipart framing: Discord counts the whole request.
REQUEST_OVERHEAD = 64 * 1024


def downloader(settings: Settings) -> Downloader:
    """Downloads from Discord's CDN, and from the configured API (a proxy or a test fake)."""
    host = FileHost(
        name="Discord",
        hosts=CDN_HOSTS,
        origins=frozenset({origin_of(settings.discord_api_base_url)}),
    )
    return Downloader(host, settings.max_attachment_bytes)


def remote(attachment: discord.Attachment) -> RemoteFile:
    """The core's view of an attachment (not downloaded yet)."""
    return RemoteFile(
        url=attachment.url,
        filename=attachment.filename,
        size=attachment.size,
        content_type=attachment.content_type,
    )


def remote_all(attachments: Iterable[discord.Attachment]) -> tuple[RemoteFile, ...]:
    """Several attachments, in their order."""
    return tuple(remote(a) for a in attachments)


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
