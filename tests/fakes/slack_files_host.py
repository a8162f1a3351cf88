"""The fake Slack's file side: user files on a ``url_private`` host and upload URLs."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from tests.fakes.slack_workspace import BOT_TOKEN, Download, SlackWorkspace

_SIGN_IN = b"<!DOCTYPE html><html><head><title>Slack</title></head><body>Sign in"
# Slack's sign-in page carries its inline scripts, so it is far larger than a small size cap.
_LOGIN_PAGE = _SIGN_IN + b"<script>" + b"/* sign-in app */" * 6000 + b"</script></body></html>"
_SHORT_LOGIN_PAGE = _SIGN_IN + b"</body></html>"


class SlackFilesHost(SlackWorkspace):
    """Hosts files behind the bot token and takes the bytes of ``files_upload_v2``."""

    def add_file(self, data: bytes, name: str, mimetype: str = "image/png") -> dict[str, Any]:
        """Host a file as a user upload and return the file object a message event carries."""
        file_id = f"F{next(self._ids):08d}"
        obj = {
            "id": file_id,
            "name": name,
            "title": name,
            "mimetype": mimetype,
            "filetype": name.rsplit(".", 1)[-1],
            "size": len(data),
            "user": "UALICE",
            "url_private": f"{self.base_url}/files-pri/{file_id}/{name}",
            "url_private_download": f"{self.base_url}/files-pri/{file_id}/{name}",
        }
        self.files[file_id] = obj
        self.file_bytes[file_id] = (data, mimetype)
        return dict(obj)

    async def _upload(self, request: web.Request) -> web.Response:
        upload = self.uploads.get(request.match_info["file_id"])
        data = await request.read()
        if upload is None or len(data) != upload.length:
            return web.Response(status=400, text="bad upload")
        if self.failing_uploads > 0:
            self.failing_uploads -= 1
            return web.Response(status=500, text="Internal Server Error")
        upload.data = data
        await self._notify()
        return web.Response(text=f"OK - {len(data)}")

    async def _file(self, request: web.Request) -> web.StreamResponse:
        file_id = request.match_info["file_id"]
        authorized = request.headers.get("Authorization") == f"Bearer {BOT_TOKEN}"
        self.downloads.append(Download(file_id, authorized))
        if not authorized or file_id in self.login_page_files:
            # Real Slack answers an unauthorised url_private fetch with its sign-in page.
            return web.Response(body=_LOGIN_PAGE, content_type="text/html")
        if file_id not in self.file_bytes:
            return web.Response(status=404, text="file not found")
        data, mime = self.file_bytes[file_id]
        if file_id in self.mislabelled_login_page_files:
            data = _SHORT_LOGIN_PAGE
        if file_id not in self.chunked_files:
            return web.Response(body=data, content_type=mime)
        response = web.StreamResponse(headers={"Content-Type": mime})
        response.enable_chunked_encoding()
        await response.prepare(request)
        for start in range(0, len(data), 16 * 1024):
            await response.write(data[start : start + 16 * 1024])
        await response.write_eof()
        return response
