"""Files people share in Slack, as the core's RemoteFile, fetched only from Slack's hosts."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.commands import RemoteFile, is_image
from bot.downloads import Downloader, FileHost, origin_of
from bot.errors import AttachmentRejected

_SLACK_FILE_HOSTS = frozenset({"files.slack.com", "files-edu.slack.com", "files.slack-gov.com"})

SIGN_IN_PAGE = (
    "Slack sent a sign-in page instead of the file, so the bot can't read files here. "
    "Ask the bot's operator to check that the app has the files:read permission and "
    "reinstall it from the manifest."
)


def allowed_hosts(api_url: str) -> frozenset[str]:
    """Slack's file hosts plus the configured API host (GovSlack, a proxy, a local fake)."""
    host = (urlsplit(api_url).hostname or "").lower()
    extra = {host, "files." + host.removeprefix("api.").removeprefix("www.")} if host else set()
    return _SLACK_FILE_HOSTS | extra


def slack_downloader(api_url: str, token: str, max_bytes: int) -> Downloader:
    """The one downloader of the Slack bot: Slack's hosts (or the configured API's), its token."""
    host = FileHost(
        name="Slack",
        hosts=allowed_hosts(api_url),
        origins=frozenset({origin_of(api_url)}),
        headers={"Authorization": f"Bearer {token}"},
        html_reason=SIGN_IN_PAGE,
    )
    return Downloader(host, max_bytes)


def _name(file: Mapping[str, Any]) -> str:
    return str(file.get("name") or file.get("title") or "image")


def _url(file: Mapping[str, Any]) -> str:
    return str(file.get("url_private_download") or file.get("url_private") or "")


def remote_file(file: Mapping[str, Any]) -> RemoteFile:
    """A Slack file object as the core's RemoteFile (not downloaded yet)."""
    size = file.get("size")
    return RemoteFile(
        url=_url(file),
        filename=_name(file),
        size=size if isinstance(size, int) else None,
        content_type=str(file.get("mimetype") or "") or None,
    )


def is_image_file(file: Mapping[str, Any]) -> bool:
    """True for a Slack file object that looks like an image."""
    return is_image(remote_file(file))


class SlackFiles:
    """Turns the file objects of events and modals into RemoteFiles, asking Slack where needed."""

    def __init__(self, client: AsyncWebClient) -> None:
        self._client = client

    async def remote(self, files: Sequence[Mapping[str, Any]]) -> list[RemoteFile]:
        """A message's files; those given only by id are looked up (files.info)."""
        found: list[RemoteFile] = []
        for file in files:
            if not _url(file) and file.get("id"):
                file = {**file, **await self._info(str(file["id"]), _name(file))}
            if not _url(file) and is_image_file(file):
                raise AttachmentRejected(_name(file), "Slack didn't give me a link to download it")
            found.append(remote_file(file))
        return found

    async def _info(self, file_id: str, name: str) -> Mapping[str, Any]:
        # Events for files shared from elsewhere may carry only the id ("check_file_info").
        try:
            info = await self._client.files_info(file=file_id)
        except SlackApiError as exc:
            raise AttachmentRejected(
                name, f"Slack wouldn't tell me where it is ({exc.response.get('error')})"
            ) from None
        return dict(info.get("file") or {})

    async def shared(self, refs: Sequence[object]) -> list[RemoteFile]:
        """The files Slack has now for the ids an edit modal carried."""
        found: list[Mapping[str, Any]] = []
        for ref in refs:
            # A modal opened by an older version carried file objects, not ids.
            file_id = str(ref.get("id") if isinstance(ref, Mapping) else ref)
            try:
                info = await self._client.files_info(file=file_id)
            except SlackApiError as exc:
                raise AttachmentRejected(
                    "an image of that message",
                    f"Slack can't find it any more ({exc.response.get('error')}); it may have "
                    "been deleted. Share it again and use Edit image once more.",
                ) from None
            found.append(dict(info.get("file") or {"id": file_id}))
        return await self.remote(found)
