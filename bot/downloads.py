"""Downloading the files users share: only from the platform's own hosts, capped in size."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import httpx

from bot.commands import RemoteFile, is_image
from bot.errors import AttachmentRejected, format_duration
from bot.models import SourceImage

logger = logging.getLogger("bot.downloads")

DOWNLOAD_TIMEOUT = 60.0
_HTML_STARTS = (b"<!doctype html", b"<html")


@dataclass(frozen=True)
class FileHost:
    """Where one platform keeps its users' files, and how the bot may fetch them.

    ``hosts`` are trusted over HTTPS; ``origins`` (scheme, host:port) exactly as given (the
    configured API of a proxy or a local test server). ``headers`` go with every request,
    e.g. Slack's bot token; redirects are never followed, so they can't reach another host.
    """

    name: str
    hosts: frozenset[str]
    origins: frozenset[tuple[str, str]] = frozenset()
    headers: Mapping[str, str] = field(default_factory=dict)
    # What a file that is an HTML page (a sign-in page) means on this platform.
    html_reason: str = "the platform sent a web page instead of the file"

    def allows(self, url: str) -> bool:
        """True when ``url`` is on one of this platform's file hosts."""
        parts = urlsplit(url)
        host = (parts.hostname or "").lower()
        if parts.scheme == "https" and host in self.hosts:
            return True
        return (parts.scheme, parts.netloc.lower()) in self.origins


def origin_of(url: str) -> tuple[str, str]:
    """``(scheme, host:port)`` of a configured base URL."""
    parts = urlsplit(url)
    return parts.scheme, parts.netloc.lower()


def megabytes(size: int, digits: str = ".1f") -> str:
    """``0.1 MB``."""
    return f"{size / 1024 / 1024:{digits}} MB"


class Downloader:
    """Fetches shared files for edits: one HTTP client, a size cap, the platform's hosts only."""

    def __init__(self, host: FileHost, max_bytes: int, *, timeout: float = DOWNLOAD_TIMEOUT):
        self.host = host
        self.max_bytes = max_bytes
        self.timeout = timeout
        self._http: httpx.AsyncClient | None = None

    async def aclose(self) -> None:
        """Close the connections."""
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    async def fetch_all(self, files: Sequence[RemoteFile]) -> tuple[SourceImage, ...]:
        """Several files at once, in their order."""
        return tuple(await asyncio.gather(*(self.fetch(file) for file in files)))

    async def fetch(self, file: RemoteFile) -> SourceImage:
        """One file's bytes, raw (the service checks and normalises them)."""
        name = file.filename or "image"
        if not is_image(file):
            kind = (file.content_type or "").split("/")[-1].split(";")[0] or "other"
            raise AttachmentRejected(name, f"it isn't an image (it's a {kind} file)")
        if file.size is not None and file.size > self.max_bytes:
            raise AttachmentRejected(name, self._too_big(file.size))
        if not self.host.allows(file.url):
            parts = urlsplit(file.url)
            logger.warning("refused to download %s from %s", name, parts.hostname or file.url)
            raise AttachmentRejected(
                name, f"it isn't stored on {self.host.name}, so I won't download it"
            )
        data = await self._download(file.url, name)
        # Some platforms answer a file link with a sign-in page labelled as something else.
        if data[:64].lstrip().lower().startswith(_HTML_STARTS):
            raise AttachmentRejected(name, self.host.html_reason)
        return SourceImage(data=data, filename=name, mime="")

    def _client(self) -> httpx.AsyncClient:
        if self._http is None:
            self._http = httpx.AsyncClient(
                follow_redirects=False,
                timeout=httpx.Timeout(self.timeout),
                headers=dict(self.host.headers),
            )
        return self._http

    async def _download(self, url: str, name: str) -> bytes:
        try:
            async with asyncio.timeout(self.timeout):
                async with self._client().stream("GET", url) as response:
                    return await self._read(response, name)
        except (httpx.HTTPError, TimeoutError) as exc:
            took = isinstance(exc, TimeoutError | httpx.TimeoutException)
            why = f"took over {format_duration(self.timeout)}" if took else type(exc).__name__
            raise AttachmentRejected(
                name, f"downloading it from {self.host.name} failed ({why}); try again"
            ) from None

    async def _read(self, response: httpx.Response, name: str) -> bytes:
        if response.status_code != 200:
            raise AttachmentRejected(
                name,
                f"{self.host.name} wouldn't let me download it (HTTP {response.status_code})",
            )
        if "text/html" in response.headers.get("content-type", "").lower():
            raise AttachmentRejected(name, self.host.html_reason)
        declared = response.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_bytes:
            raise AttachmentRejected(name, self._too_big(int(declared)))
        chunks: list[bytes] = []
        total = 0
        async for chunk in response.aiter_bytes():
            total += len(chunk)
            if total > self.max_bytes:
                raise AttachmentRejected(name, self._too_big(total, at_least=True))
            chunks.append(chunk)
        return b"".join(chunks)

    def _too_big(self, size: int, *, at_least: bool = False) -> str:
        more = "more than " if at_least else ""
        return f"it is {more}{megabytes(size)} and the limit is {megabytes(self.max_bytes, '.3g')}"
