"""Download images people share in Slack: only from Slack's file hosts, with the bot token."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

import httpx
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.errors import AttachmentRejected
from bot.models import SourceImage

logger = logging.getLogger("adapters.slack")

_SLACK_FILE_HOSTS = frozenset({"files.slack.com", "files-edu.slack.com", "files.slack-gov.com"})
_HTML_STARTS = (b"<!doctype html", b"<html")


def allowed_hosts(api_url: str) -> frozenset[str]:
    """Slack's file hosts plus the configured API host (GovSlack, a proxy, a local fake)."""
    host = (urlsplit(api_url).hostname or "").lower()
    extra = {host, "files." + host.removeprefix("api.").removeprefix("www.")} if host else set()
    return _SLACK_FILE_HOSTS | extra


def is_image_file(file: Mapping[str, Any]) -> bool:
    """True for a file Slack says is an image (or does not type at all)."""
    mimetype = str(file.get("mimetype") or "")
    return not mimetype or mimetype.startswith("image/")


def is_mask(file: Mapping[str, Any]) -> bool:
    """A file named ``mask…`` marks what an edit should change."""
    return str(file.get("name") or file.get("title") or "").lower().startswith("mask")


class SlackFiles:
    """Fetches ``url_private`` files with a size cap, refusing any host that is not Slack's."""

    def __init__(self, client: AsyncWebClient, *, token: str, api_url: str, max_bytes: int) -> None:
        self._client = client
        self._token = token
        self._api_scheme = urlsplit(api_url).scheme
        self._hosts = allowed_hosts(api_url)
        self.max_bytes = max_bytes
        # Redirects stay off: following one could hand the bot token to another host.
        self._http = httpx.AsyncClient(follow_redirects=False, timeout=60.0)

    async def aclose(self) -> None:
        """Close the HTTP connections."""
        await self._http.aclose()

    async def sources(
        self, files: Sequence[Mapping[str, Any]]
    ) -> tuple[tuple[SourceImage, ...], SourceImage | None]:
        """Download a message's files as edit inputs; a file named ``mask…`` is the mask."""
        images: list[SourceImage] = []
        mask: SourceImage | None = None
        for file in files:
            fetched = await self.fetch(file)
            if is_mask(file) and mask is None:
                mask = fetched
            else:
                images.append(fetched)
        return tuple(images), mask

    async def fetch(self, file: Mapping[str, Any]) -> SourceImage:
        """One file's bytes, raw (the service validates and normalises them)."""
        name = str(file.get("name") or file.get("title") or "image")
        if not is_image_file(file):
            kind = str(file.get("pretty_type") or file.get("filetype") or "file")
            raise AttachmentRejected(name, f"it isn't an image (it's a {kind} file)")
        size = file.get("size")
        if isinstance(size, int) and size > self.max_bytes:
            raise AttachmentRejected(name, self._too_big(size))
        url = file.get("url_private_download") or file.get("url_private")
        if not url and file.get("id"):
            url = await self._lookup_url(str(file["id"]), name)
        if not isinstance(url, str) or not url:
            raise AttachmentRejected(name, "Slack didn't give me a link to download it")
        self._check_url(url, name)
        data = await self._download(url, name)
        return SourceImage(data=data, filename=name, mime="")

    async def _lookup_url(self, file_id: str, name: str) -> str | None:
        # Events for files shared from elsewhere may carry only the id ("check_file_info").
        try:
            info = await self._client.files_info(file=file_id)
        except SlackApiError as exc:
            raise AttachmentRejected(
                name, f"Slack wouldn't tell me where it is ({exc.response.get('error')})"
            ) from None
        found = info.get("file") or {}
        url = found.get("url_private_download") or found.get("url_private")
        return str(url) if url else None

    def _check_url(self, url: str, name: str) -> None:
        parts = urlsplit(url)
        host = (parts.hostname or "").lower()
        secure = parts.scheme == "https" or (parts.scheme == self._api_scheme == "http")
        if host not in self._hosts or not secure:
            logger.warning("refused to download %s from %s", name, host or url)
            raise AttachmentRejected(name, "it isn't stored on Slack, so I won't download it")

    async def _download(self, url: str, name: str) -> bytes:
        headers = {"Authorization": f"Bearer {self._token}"}
        try:
            async with self._http.stream("GET", url, headers=headers) as response:
                if response.status_code != 200:
                    raise AttachmentRejected(
                        name, f"Slack wouldn't let me download it (HTTP {response.status_code})"
                    )
                if "text/html" in response.headers.get("content-type", "").lower():
                    raise AttachmentRejected(name, _LOGIN_PAGE_REASON)
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
        except httpx.HTTPError as exc:
            raise AttachmentRejected(
                name, f"downloading it from Slack failed ({type(exc).__name__})"
            ) from None
        data = b"".join(chunks)
        # Slack has answered file links with a sign-in page labelled as something else.
        if data[:64].lstrip().lower().startswith(_HTML_STARTS):
            raise AttachmentRejected(name, _LOGIN_PAGE_REASON)
        return data

    def _too_big(self, size: int, *, at_least: bool = False) -> str:
        mb = size / 1024 / 1024
        limit = self.max_bytes / 1024 / 1024
        more = "more than " if at_least else ""
        return f"it is {more}{mb:.1f} MB and the limit is {limit:.3g} MB"


_LOGIN_PAGE_REASON = (
    "Slack sent a sign-in page instead of the file, so the bot can't read files here. "
    "Ask the bot's operator to check that the app has the files:read permission and "
    "reinstall it from the manifest."
)
