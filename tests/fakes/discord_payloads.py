"""Discord's objects and rules for the fake: ids, users, recorded calls and payload checks."""

from __future__ import annotations

import datetime
import io
import json
import mimetypes
import re
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from PIL import Image

DISCORD_EPOCH_MS = 1420070400000
EPHEMERAL = 1 << 6
LOADING = 1 << 7
MESSAGE_CONTENT_INTENT = 1 << 15
MANAGE_MESSAGES = 1 << 13
MANAGE_GUILD = 1 << 5
MEMBER_PERMISSIONS = (1 << 10) | (1 << 11) | (1 << 14) | (1 << 15) | (1 << 16) | (1 << 31)
ACK_DEADLINE_S = 3.0
JSON_TYPE = "application/json"  # exactly: discord.py treats anything else as text


@dataclass
class UploadedFile:
    """One file part of a multipart request."""

    field: str
    filename: str
    content_type: str
    data: bytes


@dataclass
class Call:
    """One REST request the bot made."""

    method: str
    path: str
    query: dict[str, str]
    json: dict[str, Any] | None
    files: list[UploadedFile]
    status: int = 0


@dataclass
class FakeInteraction:
    """An interaction the fake dispatched, and how the bot answered it."""

    id: str
    token: str
    type: int
    user: dict[str, Any]
    created: float
    payload: dict[str, Any]
    callback_type: int | None = None
    callback_data: dict[str, Any] | None = None
    original_id: str | None = None
    expired: bool = False


@dataclass
class FakeUser:
    """A guild member the tests act as."""

    id: str
    username: str
    permissions: int = MEMBER_PERMISSIONS
    # Role ids besides @everyone (which Discord never lists in a member's roles).
    roles: list[str] = field(default_factory=list)
    nick: str | None = None

    def payload(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "username": self.username,
            "discriminator": "0",
            "global_name": self.username.title(),
            "avatar": None,
        }

    def member(self) -> dict[str, Any]:
        return {
            "user": self.payload(),
            "nick": self.nick,
            "roles": list(self.roles),
            "joined_at": iso(time.time()),
            "deaf": False,
            "mute": False,
            "flags": 0,
            "permissions": str(self.permissions),
        }


def iso(ts: float) -> str:
    """A Unix time as Discord writes timestamps."""
    return datetime.datetime.fromtimestamp(ts, datetime.UTC).isoformat()


def error_response(status: int, code: int, message: str, **extra: Any) -> web.Response:
    """A Discord error body (``code`` is Discord's JSON error code)."""
    body = {"code": code, "message": message, **extra}
    return web.Response(
        status=status, body=json.dumps(body).encode(), headers={"Content-Type": JSON_TYPE}
    )


def ok_response(body: Any, status: int = 200) -> web.Response:
    """A JSON answer with the exact content type discord.py expects."""
    return web.Response(
        status=status, body=json.dumps(body).encode(), headers={"Content-Type": JSON_TYPE}
    )


class Refused(Exception):
    """Raised inside a handler to answer the request with ``response`` instead."""

    def __init__(self, response: web.Response) -> None:
        self.response = response


_NAME = re.compile(r"^[-_a-z0-9]{1,32}$")


def sniff_type(upload: UploadedFile) -> str:
    """Discord decides an attachment's type itself; the client's Content-Type is not trusted."""
    guessed = mimetypes.guess_type(upload.filename)[0]
    return guessed or upload.content_type or "application/octet-stream"


def command_problem(command: dict[str, Any]) -> str | None:
    """What Discord would refuse in an application command, or None."""
    kind = command.get("type", 1)
    name, description = command.get("name", ""), command.get("description", "")
    if kind == 1 and (not _NAME.match(name) or not 1 <= len(description) <= 100):
        return "chat command needs a lower-case name (1-32) and a description (1-100)"
    if kind == 3 and (not 1 <= len(name) <= 32 or description):
        return "message command needs a 1-32 character name and no description"
    options = command.get("options", [])
    if len(options) > 25:
        return "more than 25 options"
    seen_optional = False
    for option in options:
        if (
            not _NAME.match(option.get("name", ""))
            or not 1 <= len(option.get("description", "")) <= 100
        ):
            return f"option {option.get('name')!r} has a bad name or description"
        if option.get("required"):
            if seen_optional:
                return "required options must come before optional ones"
        else:
            seen_optional = True
        if len(option.get("choices", [])) > 25 or (
            option.get("choices") and option.get("autocomplete")
        ):
            return f"option {option['name']!r}: at most 25 choices, and not with autocomplete"
    return None


def modal_problem(data: dict[str, Any]) -> str | None:
    """What Discord would refuse in a modal, or None."""
    if not 1 <= len(data.get("title", "")) <= 45:
        return "title must be 1-45 characters"
    if not 1 <= len(data.get("custom_id", "")) <= 100:
        return "custom_id must be 1-100 characters"
    if not 1 <= len(data.get("components", [])) <= 5:
        return "a modal has 1-5 rows"
    return None


def embed_problem(embed: dict[str, Any]) -> str | None:
    """What Discord would refuse in an embed, or None."""
    # Discord docs (Message resource, Embed Limits,
    # https://discord.com/developers/docs/resources/message#embed-object-embed-limits): title 256,
    # description 4096, up to 25 fields of name 256 and value 1024, footer 2048, author name 256,
    # and at most 6000 characters across all of them.
    limits = {"title": 256, "description": 4096}
    author = (embed.get("author") or {}).get("name", "")
    if len(author) > 256:
        return "embed author name over 256 characters"
    total = len(author)
    for key, limit in limits.items():
        total += len(embed.get(key) or "")
        if len(embed.get(key) or "") > limit:
            return f"embed {key} over {limit} characters"
    fields = embed.get("fields", [])
    if len(fields) > 25:
        return "more than 25 embed fields"
    for f in fields:
        if not 1 <= len(f.get("name", "")) <= 256 or not 1 <= len(f.get("value", "")) <= 1024:
            return f"embed field {f.get('name')!r} is empty or too long"
        total += len(f["name"]) + len(f["value"])
    footer = (embed.get("footer") or {}).get("text", "")
    total += len(footer)
    if len(footer) > 2048 or total > 6000:
        return "embed footer or total text too long"
    return None


def payload_problem(body: dict[str, Any], files: list[UploadedFile]) -> str | None:
    """What Discord would refuse in a message payload, or None."""
    # Discord docs (Message resource, Create Message): content is at most 2000 characters.
    if len(body.get("content") or "") > 2000:
        return "content over 2000 characters"
    embeds = body.get("embeds") or []
    if len(embeds) > 10:
        return "more than 10 embeds"
    for embed in embeds:
        if problem := embed_problem(embed):
            return problem
    rows = body.get("components") or []
    custom_ids: list[str] = []
    # Discord docs (Components reference, Action Row): a message has up to 5 action rows, and a
    # row up to 5 buttons (https://discord.com/developers/docs/components/reference#action-row).
    if len(rows) > 5:
        return "more than 5 component rows"
    for row in rows:
        buttons = row.get("components", [])
        if row.get("type") != 1 or not 1 <= len(buttons) <= 5:
            return "an action row holds 1-5 buttons"
        for button in buttons:
            if button.get("style") == 5:
                continue
            custom_ids.append(button.get("custom_id", ""))
            if not 1 <= len(custom_ids[-1]) <= 100 or len(button.get("label") or "") > 80:
                return "button custom_id must be 1-100 characters, label up to 80"
    if len(set(custom_ids)) != len(custom_ids):
        return "duplicate custom_id in one message"
    if len(files) > 10:
        return "more than 10 files"
    if body.get("flags", 0) & ~(EPHEMERAL | 4 | 4096):
        return f"unexpected message flags {body['flags']}"
    return None


def png(size: tuple[int, int] = (64, 64), colour: tuple[int, ...] = (30, 160, 90)) -> bytes:
    """A plain PNG to attach (RGBA when ``colour`` has an alpha value)."""
    buffer = io.BytesIO()
    Image.new("RGBA" if len(colour) == 4 else "RGB", size, colour).save(buffer, "PNG")
    return buffer.getvalue()


def job_of(message: dict[str, Any]) -> str:
    """The job id a result message's embed shows."""
    fields = {f["name"]: f["value"] for f in message["embeds"][0]["fields"]}
    return str(fields["Job"]).strip("`")


def edit_inputs(sent: Any) -> list[bytes]:
    """The input images (``image`` or ``image[]`` parts) of an edit the fake OpenAI received."""
    assert sent.path == "/v1/images/edits", f"not an edit: {sent.path}"
    return [f.data for f in sent.files if f.field in ("image", "image[]")]
