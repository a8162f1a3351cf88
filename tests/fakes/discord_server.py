"""A fake Discord for the real discord.py: REST, gateway websocket and CDN on 127.0.0.1 (aiohttp).

It keeps the state a user would see (messages, their attachments, embeds and buttons, which
interaction responses are ephemeral) and enforces the rules the real service enforces and a bot can
break: answer an interaction once and within 3 s, message and embed limits, the upload size limit,
no message content without the privileged intent unless the bot is mentioned, expired tokens.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime
import itertools
import json
import mimetypes
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest_asyncio
from aiohttp import WSMsgType, web
from discord.gateway import DiscordWebSocket
from discord.http import Route

from adapters.discord_bot import ImagineDiscordBot
from bot.app import App
from bot.models import ImageRequest, PartialCallback, ProviderResult
from bot.provider import ImageProvider

DISCORD_EPOCH_MS = 1420070400000
EPHEMERAL = 1 << 6
LOADING = 1 << 7
MESSAGE_CONTENT_INTENT = 1 << 15
MANAGE_MESSAGES = 1 << 13
MEMBER_PERMISSIONS = (1 << 10) | (1 << 11) | (1 << 14) | (1 << 15) | (1 << 16) | (1 << 31)
ACK_DEADLINE_S = 3.0
_JSON = "application/json"  # exactly: discord.py treats anything else as text


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
            "roles": [],
            "joined_at": _iso(time.time()),
            "deaf": False,
            "mute": False,
            "flags": 0,
            "permissions": str(self.permissions),
        }


def _iso(ts: float) -> str:
    return datetime.datetime.fromtimestamp(ts, datetime.UTC).isoformat()


def _error(status: int, code: int, message: str, **extra: Any) -> web.Response:
    body = {"code": code, "message": message, **extra}
    return web.Response(
        status=status, body=json.dumps(body).encode(), headers={"Content-Type": _JSON}
    )


def _ok(body: Any, status: int = 200) -> web.Response:
    return web.Response(
        status=status, body=json.dumps(body).encode(), headers={"Content-Type": _JSON}
    )


class FakeDiscord:
    """Discord for one test: start(), drive with slash()/send_message()/click(), inspect."""

    def __init__(self) -> None:
        self._ids = itertools.count(1)
        self.app_id = self.snowflake()
        self.token = base64.b64encode(self.app_id.encode()).decode().rstrip("=") + ".fake.token"
        self.bot = FakeUser(self.snowflake(), "imagine")
        self.bot.id = self.app_id  # a bot's user id is its application id
        self.guild_id = self.snowflake()
        self.channel_id = self.snowflake()
        self.alice = FakeUser(self.snowflake(), "alice")
        self.bob = FakeUser(self.snowflake(), "bob")
        self.mod = FakeUser(self.snowflake(), "mod", MEMBER_PERMISSIONS | MANAGE_MESSAGES)
        self.channel_name = "art"
        self.attachment_size_limit = 10 * 1024 * 1024
        self.allow_message_content = True
        self.calls: list[Call] = []
        self.messages: dict[str, dict[str, Any]] = {}
        self.interactions: dict[str, FakeInteraction] = {}
        self.commands: dict[str, list[dict[str, Any]]] = {}
        self.identify: dict[str, Any] | None = None
        self.problems: list[str] = []
        self.deleted: list[dict[str, Any]] = []
        self.cdn_requests: list[str] = []
        self._rejections: list[tuple[Callable[[Call], bool], web.Response]] = []
        self.api_url = self.gateway_url = self.base = ""
        self._cdn: dict[str, tuple[bytes, str]] = {}
        self._ws: web.WebSocketResponse | None = None
        self._seq = 0
        self._changed = asyncio.Condition()
        self._runner: web.AppRunner | None = None

    # --- lifecycle ---------------------------------------------------------------------------
    async def start(self) -> None:
        """Listen on a free 127.0.0.1 port."""
        app = web.Application(client_max_size=100 * 1024 * 1024)
        app.router.add_get("/gateway", self._gateway)
        app.router.add_get("/attachments/{path:.*}", self._serve_cdn)
        app.router.add_route("*", "/api/v10/{path:.*}", self._rest)
        self._runner = web.AppRunner(app, shutdown_timeout=0.5, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.base = f"http://127.0.0.1:{port}"
        self.api_url = f"{self.base}/api/v10"
        self.gateway_url = f"ws://127.0.0.1:{port}/gateway"

    async def close(self) -> None:
        """Drop the gateway connection and stop the server."""
        if self._ws is not None:
            await self._ws.close()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # --- helpers for tests -------------------------------------------------------------------
    def snowflake(self) -> str:
        """A fresh id whose timestamp is now, like Discord's."""
        ms = int(time.time() * 1000) - DISCORD_EPOCH_MS
        return str((ms << 22) | (next(self._ids) & 0x3FFFFF))

    def upload(self, data: bytes, filename: str, content_type: str = "image/png") -> dict[str, Any]:
        """Put a file on the CDN and return its attachment object."""
        att_id = self.snowflake()
        path = f"{self.channel_id}/{att_id}/{filename}"
        self._cdn[path] = (data, content_type)
        url = f"{self.base}/attachments/{path}"
        return {
            "id": att_id,
            "filename": filename,
            "size": len(data),
            "url": url,
            "proxy_url": url,
            "content_type": content_type,
        }

    def cdn_bytes(self, attachment: dict[str, Any]) -> bytes:
        """The stored bytes behind an attachment object."""
        return self._cdn[attachment["url"].split("/attachments/", 1)[1]][0]

    async def dispatch(self, event: str, data: dict[str, Any]) -> None:
        """Send a gateway DISPATCH to the connected bot."""
        if self._ws is None:
            raise RuntimeError("no bot is connected to the fake gateway")
        self._seq += 1
        await self._ws.send_str(json.dumps({"op": 0, "t": event, "s": self._seq, "d": data}))

    async def slash(self, user: FakeUser, name: str = "imagine", **options: Any) -> FakeInteraction:
        """Run a slash command; attachment options are attachment objects from upload()."""
        opts, resolved = [], {}
        for key, value in options.items():
            if isinstance(value, dict):
                opts.append({"name": key, "type": 11, "value": value["id"]})
                resolved[value["id"]] = value
            elif isinstance(value, int):
                opts.append({"name": key, "type": 4, "value": value})
            else:
                opts.append({"name": key, "type": 3, "value": value})
        data: dict[str, Any] = {
            "id": self._command_id(name),
            "name": name,
            "type": 1,
            "options": opts,
        }
        if resolved:
            data["resolved"] = {"attachments": resolved}
        return await self._interact(user, 2, data)

    async def autocomplete(self, user: FakeUser, focused: str, value: str) -> FakeInteraction:
        """Type into an /imagine option that has autocomplete."""
        data = {
            "id": self._command_id("imagine"),
            "name": "imagine",
            "type": 1,
            "options": [
                {"name": "prompt", "type": 3, "value": "x"},
                {"name": focused, "type": 3, "value": value, "focused": True},
            ],
        }
        return await self._interact(user, 4, data)

    async def context_menu(self, user: FakeUser, name: str, message_id: str) -> FakeInteraction:
        """Use a message context-menu command on a message."""
        data = {
            "id": self._command_id(name),
            "name": name,
            "type": 3,
            "target_id": message_id,
            "resolved": {"messages": {message_id: self.messages[message_id]}},
        }
        return await self._interact(user, 2, data)

    async def click(self, user: FakeUser, message_id: str, custom_id: str) -> FakeInteraction:
        """Press a button on a message."""
        message = self.messages[message_id]
        ids = [c["custom_id"] for row in message["components"] for c in row["components"]]
        if custom_id not in ids:
            raise AssertionError(f"no button {custom_id!r} on the message; it has {ids}")
        data = {"custom_id": custom_id, "component_type": 2}
        return await self._interact(user, 3, data, message=message)

    async def submit_modal(
        self, user: FakeUser, opened_by: FakeInteraction, values: dict[str, str]
    ) -> FakeInteraction:
        """Fill in and submit the modal the bot opened in answer to ``opened_by``."""
        modal = opened_by.callback_data
        if opened_by.callback_type != 9 or modal is None:
            raise AssertionError("the bot did not answer with a modal")
        rows = []
        for row in modal["components"]:
            inner = row["components"] if row["type"] == 1 else [row["component"]]
            for comp in inner:
                rows.append(
                    {
                        "type": 1,
                        "components": [
                            {
                                "type": 4,
                                "custom_id": comp["custom_id"],
                                "value": values.get(comp["custom_id"], ""),
                            }
                        ],
                    }
                )
        data = {"custom_id": modal["custom_id"], "components": rows}
        extra = opened_by.payload.get("message")
        return await self._interact(user, 5, data, message=extra)

    async def send_message(
        self,
        user: FakeUser,
        content: str,
        *,
        attachments: tuple[dict[str, Any], ...] = (),
        reply_to: str | None = None,
        ping: bool = True,
    ) -> dict[str, Any]:
        """A user posts a message; a reply (``reply_to``) pings the author unless ``ping=False``."""
        mentions = []
        msg_type = 0
        extra: dict[str, Any] = {}
        if reply_to is not None:
            target = self.messages[reply_to]
            msg_type = 19
            extra["message_reference"] = {
                "message_id": reply_to,
                "channel_id": self.channel_id,
                "guild_id": self.guild_id,
            }
            extra["referenced_message"] = target
            if ping:
                mentions.append(target["author"])
        if f"<@{self.bot.id}>" in content:
            mentions.append(self.bot.payload())
        message = self._message(
            user.payload(),
            content=content,
            attachments=list(attachments),
            type=msg_type,
            mentions=mentions,
            **extra,
        )
        message["member"] = {k: v for k, v in user.member().items() if k != "user"}
        self.messages[message["id"]] = message
        event = self.as_bot_sees(message)
        if "referenced_message" in event:
            event["referenced_message"] = self.as_bot_sees(event["referenced_message"])
        await self.dispatch("MESSAGE_CREATE", event)
        return message

    def as_bot_sees(self, message: dict[str, Any]) -> dict[str, Any]:
        """The message as the gateway and REST show it to the bot (interactions show it all).

        Without the privileged intent, content, attachments and embeds are blank unless the bot
        wrote the message or is mentioned in it.
        """
        seen = self.public(message)
        intents = (self.identify or {}).get("intents", 0)
        if not (
            intents & MESSAGE_CONTENT_INTENT
            or message["author"]["id"] == self.bot.id
            or any(m["id"] == self.bot.id for m in message["mentions"])
        ):
            seen.update(content="", attachments=[], embeds=[], components=[])
        return seen

    def original(self, interaction: FakeInteraction) -> dict[str, Any]:
        """The interaction's response message as users see it now."""
        if interaction.original_id is None:
            raise AssertionError("the interaction has no response message")
        return self.messages[interaction.original_id]

    async def result_of(self, interaction: FakeInteraction) -> dict[str, Any]:
        """Wait for the interaction's response to show a finished result (the embed)."""

        def done() -> dict[str, Any] | None:
            message = self.messages.get(interaction.original_id or "")
            return message if message is not None and message["embeds"] else None

        found: dict[str, Any] = await self.wait_until(done)
        return found

    async def private_reply(self, interaction: FakeInteraction) -> dict[str, Any]:
        """Wait for an ephemeral message for the interaction; return the newest."""
        found: list[dict[str, Any]] = await self.wait_until(
            lambda: self.ephemeral_followups(interaction)
        )
        return found[-1]

    def channel_messages(self, *, by_bot: bool = True) -> list[dict[str, Any]]:
        """Visible messages in the test channel, oldest first."""
        return [
            m
            for m in self.messages.values()
            if m["channel_id"] == self.channel_id
            and (m["author"]["id"] == self.bot.id) == by_bot
            and not m["flags"] & EPHEMERAL
        ]

    def ephemeral_followups(self, interaction: FakeInteraction) -> list[dict[str, Any]]:
        """Ephemeral messages the bot sent for an interaction (including an ephemeral answer)."""
        return [
            m
            for m in self.messages.values()
            if m.get("_token") == interaction.token and m["flags"] & EPHEMERAL
        ]

    def calls_to(self, method: str, fragment: str) -> list[Call]:
        """Recorded requests with ``method`` whose path contains ``fragment``."""
        return [c for c in self.calls if c.method == method and fragment in c.path]

    async def wait_until(self, condition: Callable[[], Any], timeout: float = 10.0) -> Any:  # noqa: ASYNC109
        """Wait until ``condition()`` is truthy (re-checked whenever the fake's state changes)."""

        async def check() -> Any:
            async with self._changed:
                while not (result := condition()):
                    await self._changed.wait()
                return result

        try:
            return await asyncio.wait_for(check(), timeout)
        except TimeoutError:
            recent = "\n".join(
                f"  {c.method} {c.path} -> {c.status}: {str(c.json)[:200]}" for c in self.calls[-8:]
            )
            raise AssertionError(
                f"timed out; problems seen: {self.problems}; last requests:\n{recent}"
            ) from None

    async def wait_connected(self, timeout: float = 5.0) -> None:  # noqa: ASYNC109
        """Wait until a bot has identified on the gateway."""
        await self.wait_until(lambda: self._ws is not None and self.identify is not None, timeout)

    def reject_next(
        self, matches: Callable[[Call], bool], status: int, code: int, message: str
    ) -> None:
        """Answer the next request that ``matches`` with a Discord error."""
        self._rejections.append((matches, _error(status, code, message)))

    def rate_limit_next(self, matches: Callable[[Call], bool], retry_after: float) -> None:
        """Answer the next matching request with a 429 as Discord's edge sends it."""
        body = {
            "message": "You are being rate limited.",
            "retry_after": retry_after,
            "global": False,
            "code": 0,
        }
        headers = {
            "Content-Type": _JSON,
            "Via": "1.1 google",
            "Retry-After": "1",
            "X-RateLimit-Scope": "user",
            "X-RateLimit-Remaining": "0",
        }
        response = web.Response(status=429, body=json.dumps(body).encode(), headers=headers)
        self._rejections.append((matches, response))

    def expire(self, interaction: FakeInteraction) -> None:
        """Make an interaction token invalid, as after 15 minutes."""
        interaction.expired = True

    def seed_interaction(self, user: FakeUser, *, deferred: bool = True) -> FakeInteraction:
        """An interaction a previous bot process answered (for restart tests)."""
        it = FakeInteraction(
            self.snowflake(),
            "tok-" + self.snowflake(),
            2,
            user.payload(),
            asyncio.get_running_loop().time(),
            {},
        )
        self.interactions[it.token] = it
        if deferred:
            it.callback_type = 5
            msg = self._message(self.bot.payload(), flags=LOADING, type=20, _token=it.token)
            self.messages[msg["id"]] = msg
            it.original_id = msg["id"]
        return it

    def seed_bot_message(self, content: str) -> dict[str, Any]:
        """A message the bot posted earlier (for restart tests)."""
        message = self._message(self.bot.payload(), content=content)
        self.messages[message["id"]] = message
        return message

    @property
    def connected(self) -> bool:
        """True while a bot holds an identified gateway connection."""
        return self._ws is not None and not self._ws.closed

    # --- internals -------------------------------------------------------------------------------
    def _command_id(self, name: str) -> str:
        for commands in self.commands.values():
            for command in commands:
                if command["name"] == name:
                    return str(command["id"])
        raise AssertionError(f"the bot never registered a command named {name!r}")

    async def _interact(
        self, user: FakeUser, kind: int, data: dict[str, Any], message: dict[str, Any] | None = None
    ) -> FakeInteraction:
        token = "tok-" + self.snowflake()
        payload: dict[str, Any] = {
            "id": self.snowflake(),
            "application_id": self.app_id,
            "type": kind,
            "token": token,
            "version": 1,
            "guild_id": self.guild_id,
            "data": data,
            "locale": "en-US",
            "channel_id": self.channel_id,
            "channel": self._channel(),
            "member": user.member(),
            "app_permissions": str(MEMBER_PERMISSIONS),
            "attachment_size_limit": self.attachment_size_limit,
            "entitlements": [],
            "authorizing_integration_owners": {"0": self.guild_id},
            "context": 0,
        }
        if message is not None:
            payload["message"] = message
        it = FakeInteraction(
            payload["id"], token, kind, user.payload(), asyncio.get_running_loop().time(), payload
        )
        self.interactions[token] = it
        await self.dispatch("INTERACTION_CREATE", payload)
        return it

    def _channel(self) -> dict[str, Any]:
        return {
            "id": self.channel_id,
            "type": 0,
            "name": self.channel_name,
            "position": 0,
            "guild_id": self.guild_id,
            "permission_overwrites": [],
            "nsfw": False,
            "parent_id": None,
            "topic": None,
            "last_message_id": None,
            "rate_limit_per_user": 0,
            "flags": 0,
        }

    def _guild(self) -> dict[str, Any]:
        everyone = {
            "id": self.guild_id,
            "name": "@everyone",
            "permissions": str(MEMBER_PERMISSIONS),
            "position": 0,
            "color": 0,
            "hoist": False,
            "managed": False,
            "mentionable": False,
            "flags": 0,
        }
        return {
            "id": self.guild_id,
            "name": "Test Guild",
            "icon": None,
            "owner_id": self.mod.id,
            "roles": [everyone],
            "channels": [self._channel()],
            "threads": [],
            "members": [self.bot.member()],
            "member_count": 4,
            "features": [],
            "emojis": [],
            "stickers": [],
            "unavailable": False,
            "large": False,
            "joined_at": _iso(time.time()),
            "voice_states": [],
            "presences": [],
            "stage_instances": [],
            "guild_scheduled_events": [],
            "soundboard_sounds": [],
            "verification_level": 0,
            "default_message_notifications": 0,
            "explicit_content_filter": 0,
            "mfa_level": 0,
            "nsfw_level": 0,
            "premium_tier": 0,
            "preferred_locale": "en-US",
            "system_channel_flags": 0,
        }

    def _message(self, author: dict[str, Any], **fields: Any) -> dict[str, Any]:
        message = {
            "id": self.snowflake(),
            "channel_id": self.channel_id,
            "guild_id": self.guild_id,
            "author": author,
            "content": "",
            "timestamp": _iso(time.time()),
            "edited_timestamp": None,
            "tts": False,
            "mention_everyone": False,
            "mentions": [],
            "mention_roles": [],
            "attachments": [],
            "embeds": [],
            "components": [],
            "pinned": False,
            "type": 0,
            "flags": 0,
        }
        message.update(fields)
        return message

    @staticmethod
    def public(message: dict[str, Any]) -> dict[str, Any]:
        """A message object without the fake's private bookkeeping keys."""
        return {k: v for k, v in message.items() if not k.startswith("_")}

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    # --- gateway -----------------------------------------------------------------------------
    async def _gateway(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(max_msg_size=0)
        await ws.prepare(request)
        await ws.send_str(json.dumps({"op": 10, "d": {"heartbeat_interval": 45000}}))
        async for msg in ws:
            if msg.type != WSMsgType.TEXT:
                continue
            frame = json.loads(msg.data)
            if frame["op"] == 1:
                await ws.send_str(json.dumps({"op": 11}))
            elif frame["op"] == 2:
                await self._identify(ws, frame["d"])
        if self._ws is ws:
            self._ws = None
        return ws

    async def _identify(self, ws: web.WebSocketResponse, data: dict[str, Any]) -> None:
        if data.get("token") != self.token:
            await ws.close(code=4004, message=b"Authentication failed.")
            return
        if data.get("intents", 0) & MESSAGE_CONTENT_INTENT and not self.allow_message_content:
            await ws.close(code=4014, message=b"Disallowed intent(s).")
            return
        self.identify, self._ws, self._seq = data, ws, 0
        await self.dispatch(
            "READY",
            {
                "v": 10,
                "user": {**self.bot.payload(), "bot": True},
                "session_id": "s1",
                "guilds": [{"id": self.guild_id, "unavailable": True}],
                "resume_gateway_url": self.gateway_url,
                "application": {"id": self.app_id, "flags": 0},
            },
        )
        await self.dispatch("GUILD_CREATE", self._guild())
        await self._notify()

    async def _serve_cdn(self, request: web.Request) -> web.Response:
        self.cdn_requests.append(request.match_info["path"])
        found = self._cdn.get(request.match_info["path"])
        if found is None:
            return web.Response(status=404, text="Not Found")
        return web.Response(body=found[0], content_type=found[1])

    # --- REST --------------------------------------------------------------------------------
    async def _rest(self, request: web.Request) -> web.Response:
        call = Call(request.method, "/" + request.match_info["path"], dict(request.query), None, [])
        self.calls.append(call)
        try:
            if request.content_type == "multipart/form-data":
                reader = await request.multipart()
                async for part in reader:
                    if part.name == "payload_json":  # type: ignore[union-attr]
                        call.json = json.loads(await part.text())  # type: ignore[union-attr]
                    else:
                        call.files.append(
                            UploadedFile(
                                part.name or "",
                                part.filename or "",  # type: ignore[union-attr]
                                part.headers.get("Content-Type", ""),
                                bytes(await part.read()),
                            )
                        )  # type: ignore[union-attr]
            elif request.can_read_body:
                call.json = await request.json()
            for rule in self._rejections:
                if rule[0](call):
                    self._rejections.remove(rule)
                    raise _Refused(rule[1])
            response = await self._route(request, call)
        except _Refused as exc:
            response = exc.response
        call.status = response.status
        await self._notify()
        return response

    async def _route(self, request: web.Request, call: Call) -> web.Response:
        parts, method = call.path.strip("/").split("/"), request.method
        if parts[0] not in ("interactions", "webhooks") and (
            request.headers.get("Authorization") != f"Bot {self.token}"
        ):
            return _error(401, 0, "401: Unauthorized")
        if parts == ["users", "@me"]:
            return _ok({**self.bot.payload(), "bot": True, "verified": True, "flags": 0})
        if parts == ["oauth2", "applications", "@me"]:
            return _ok(
                {
                    "id": self.app_id,
                    "name": "imagine",
                    "description": "",
                    "icon": None,
                    "bot_public": True,
                    "bot_require_code_grant": False,
                    "owner": self.mod.payload(),
                    "verify_key": "00",
                    "flags": 0,
                }
            )
        if parts[0] == "applications" and parts[-1] == "commands":
            return self._commands(parts, method, call)
        if parts[0] == "interactions" and len(parts) == 4 and parts[3] == "callback":
            return self._callback(self._interaction(parts[2], ack=True), call)
        if parts[0] == "webhooks" and len(parts) == 3 and method == "POST":
            if parts[1] != self.app_id:
                return _error(404, 10015, "Unknown Webhook")
            return self._followup(self._interaction(parts[2]), call)
        if parts[0] == "webhooks" and len(parts) == 5:
            it = self._interaction(parts[2])
            mid = it.original_id if parts[4] == "@original" else parts[4]
            if (
                mid is None
                or mid not in self.messages
                or self.messages[mid].get("_token") not in (it.token, None)
            ):
                return _error(404, 10008, "Unknown Message")
            return self._edit_or_delete(self.messages[mid], method, call)
        if parts[0] == "channels" and parts[1] != self.channel_id:
            return _error(404, 10003, "Unknown Channel")
        if parts[0] == "channels" and len(parts) == 3 and method == "POST":
            return self._channel_post(call)
        if parts[0] == "channels" and len(parts) == 4 and parts[2] == "messages":
            message = self.messages.get(parts[3])
            if message is None or message["flags"] & EPHEMERAL:
                return _error(404, 10008, "Unknown Message")
            if method == "GET":
                return _ok(self.as_bot_sees(message))
            if message["author"]["id"] != self.bot.id:
                return _error(403, 50013, "Missing Permissions")
            return self._edit_or_delete(message, method, call)
        self.problems.append(f"unexpected request {method} {call.path}")
        return _error(404, 0, "404: Not Found")

    def _interaction(self, token: str, *, ack: bool = False) -> FakeInteraction:
        it = self.interactions.get(token)
        if it is None:
            raise _Refused(_error(404, 10062 if ack else 10015, "Unknown interaction"))
        if it.expired:
            raise _Refused(_error(401, 50027, "Invalid Webhook Token"))
        return it

    def _commands(self, parts: list[str], method: str, call: Call) -> web.Response:
        scope = parts[3] if len(parts) == 5 else "global"
        if method == "GET":
            return _ok(self.commands.get(scope, []))
        saved = []
        for command in call.json or []:
            problem = _command_problem(command)
            if problem:
                self.problems.append(f"command {command.get('name')!r}: {problem}")
                return _error(400, 50035, "Invalid Form Body", errors=problem)
            saved.append(
                {
                    **command,
                    "id": self.snowflake(),
                    "application_id": self.app_id,
                    "version": "1",
                    "description": command.get("description", ""),
                    "type": command.get("type", 1),
                }
            )
        self.commands[scope] = saved
        return _ok(saved)

    def _callback(self, it: FakeInteraction, call: Call) -> web.Response:
        late = asyncio.get_running_loop().time() - it.created > ACK_DEADLINE_S
        if late:
            self.problems.append(f"interaction {it.id} answered after {ACK_DEADLINE_S:.0f} s")
            return _error(404, 10062, "Unknown interaction")
        if it.callback_type is not None:
            self.problems.append(f"interaction {it.id} answered twice")
            return _error(400, 40060, "Interaction has already been acknowledged.")
        body = call.json or {}
        kind, data = body.get("type"), body.get("data") or {}
        allowed = {2: {4, 5, 9}, 3: {4, 5, 6, 7, 9}, 4: {8}, 5: {4, 5, 6, 7}}[it.type]
        if kind not in allowed:
            self.problems.append(f"callback type {kind} is invalid for interaction type {it.type}")
            return _error(400, 50035, "Invalid Form Body")
        message = None
        if kind in (4, 5):
            flags = (data.get("flags", 0) & EPHEMERAL) | (LOADING if kind == 5 else 0)
            message = self._message(
                self.bot.payload(), type=20, flags=flags, _token=it.token, webhook_id=self.app_id
            )
            if kind == 4:
                self._apply(message, data, call.files, creating=True)
            self.messages[message["id"]] = message
            it.original_id = message["id"]
        elif kind in (6, 7):
            target = it.payload.get("message")
            if target is None:
                self.problems.append("update callback for an interaction without a message")
                return _error(400, 50035, "Invalid Form Body")
            message = self.messages[target["id"]]
            it.original_id = message["id"]
            if kind == 7:
                self._apply(message, data, call.files, creating=False)
        elif kind == 8 and len(data.get("choices", [])) > 25:
            self.problems.append("more than 25 autocomplete choices")
        elif kind == 9 and (problem := _modal_problem(data)):
            self.problems.append(f"modal: {problem}")
            return _error(400, 50035, "Invalid Form Body", errors=problem)
        it.callback_type, it.callback_data = kind, data
        answer: dict[str, Any] = {
            "interaction": {
                "id": it.id,
                "type": it.type,
                "response_message_id": it.original_id,
                "response_message_loading": kind == 5,
                "response_message_ephemeral": bool(message and message["flags"] & EPHEMERAL),
            }
        }
        answer["resource"] = {"type": kind}
        if message is not None:
            answer["resource"]["message"] = self.public(message)
        return _ok(answer)

    def _followup(self, it: FakeInteraction, call: Call) -> web.Response:
        if it.callback_type is None:
            self.problems.append("followup sent before the interaction was acknowledged")
            return _error(404, 10015, "Unknown Webhook")
        original = self.messages.get(it.original_id or "")
        if original is not None and original["flags"] & LOADING:
            # Discord's rule: the first followup after a defer replaces the "thinking" message and
            # keeps the defer's visibility, whatever flags it asks for.
            self._apply(original, call.json or {}, call.files, creating=False)
            return _ok(self.public(original))
        flags = (call.json or {}).get("flags", 0) & EPHEMERAL
        message = self._message(
            self.bot.payload(), flags=flags, _token=it.token, webhook_id=self.app_id
        )
        self._apply(message, call.json or {}, call.files, creating=True)
        self.messages[message["id"]] = message
        return _ok(self.public(message))

    def _channel_post(self, call: Call) -> web.Response:
        body = call.json or {}
        fields: dict[str, Any] = {}
        reference = body.get("message_reference")
        if reference is not None:
            target = self.messages.get(str(reference.get("message_id")))
            if target is None and reference.get("fail_if_not_exists", True):
                return _error(400, 50035, "Invalid Form Body: Unknown message")
            if target is not None:
                fields = {
                    "type": 19,
                    "referenced_message": self.public(target),
                    "message_reference": {
                        "message_id": target["id"],
                        "channel_id": self.channel_id,
                    },
                }
        message = self._message(self.bot.payload(), **fields)
        self._apply(message, body, call.files, creating=True)
        self.messages[message["id"]] = message
        return _ok(self.public(message))

    def _edit_or_delete(self, message: dict[str, Any], method: str, call: Call) -> web.Response:
        if method == "GET":
            return _ok(self.public(message))
        if method == "DELETE":
            del self.messages[message["id"]]
            self.deleted.append(message)
            return web.Response(status=204)
        self._apply(message, call.json or {}, call.files, creating=False)
        message["flags"] &= ~LOADING
        message["edited_timestamp"] = _iso(time.time())
        return _ok(self.public(message))

    def _apply(
        self,
        message: dict[str, Any],
        body: dict[str, Any],
        files: list[UploadedFile],
        *,
        creating: bool,
    ) -> None:
        """Check a create/edit payload like Discord does, then apply it to ``message``."""
        problem = _payload_problem(body, files)
        if not problem and sum(len(f.data) for f in files) > self.attachment_size_limit:
            raise _Refused(_error(413, 40005, "Request entity too large"))
        if problem:
            self.problems.append(problem)
            raise _Refused(_error(400, 50035, "Invalid Form Body", errors=problem))
        for key in ("content", "embeds", "components"):
            if key in body:
                message[key] = (
                    body[key] if body[key] is not None else ([] if key != "content" else "")
                )
        uploads = {f.field: f for f in files}
        kept = {a["id"]: a for a in message["attachments"]}
        if "attachments" in body or files:
            wanted = body.get("attachments")
            if wanted is None:
                wanted = [{"id": i} for i in range(len(files))]
                if not creating:
                    wanted = [{"id": a} for a in kept] + wanted
            new = []
            for entry in wanted:
                if str(entry["id"]) in kept:
                    new.append(kept[str(entry["id"])])
                elif (upload := uploads.get(f"files[{entry['id']}]")) is not None:
                    new.append(self.upload(upload.data, upload.filename, _sniff(upload)))
                else:
                    self.problems.append(f"attachment {entry} is neither kept nor uploaded")
            message["attachments"] = new
        if creating and not (
            message["content"]
            or message["embeds"]
            or message["attachments"]
            or message["components"]
        ):
            self.problems.append("empty message")
            raise _Refused(_error(400, 50006, "Cannot send an empty message"))


class _Refused(Exception):
    def __init__(self, response: web.Response) -> None:
        self.response = response


_NAME = re.compile(r"^[-_a-z0-9]{1,32}$")


def _sniff(upload: UploadedFile) -> str:
    """Discord decides an attachment's type itself; the client's Content-Type is not trusted."""
    guessed = mimetypes.guess_type(upload.filename)[0]
    return guessed or upload.content_type or "application/octet-stream"


def _command_problem(command: dict[str, Any]) -> str | None:
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


def _modal_problem(data: dict[str, Any]) -> str | None:
    if not 1 <= len(data.get("title", "")) <= 45:
        return "title must be 1-45 characters"
    if not 1 <= len(data.get("custom_id", "")) <= 100:
        return "custom_id must be 1-100 characters"
    if not 1 <= len(data.get("components", [])) <= 5:
        return "a modal has 1-5 rows"
    return None


def _embed_problem(embed: dict[str, Any]) -> str | None:
    limits = {"title": 256, "description": 4096}
    total = 0
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


def _payload_problem(body: dict[str, Any], files: list[UploadedFile]) -> str | None:
    if len(body.get("content") or "") > 2000:
        return "content over 2000 characters"
    embeds = body.get("embeds") or []
    if len(embeds) > 10:
        return "more than 10 embeds"
    for embed in embeds:
        if problem := _embed_problem(embed):
            return problem
    rows = body.get("components") or []
    custom_ids: list[str] = []
    if len(rows) > 5:
        return "more than 5 component rows"
    for row in rows:
        buttons = row.get("components", [])
        if row.get("type") != 1 or not 1 <= len(buttons) <= 5:
            return "a component row holds 1-5 components"
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


@pytest_asyncio.fixture
async def discord_fake() -> AsyncIterator[FakeDiscord]:
    """A started fake Discord; the test fails if the bot broke one of Discord's rules."""
    fake = FakeDiscord()
    await fake.start()
    try:
        yield fake
    finally:
        with contextlib.suppress(Exception):
            await fake.close()
    assert not fake.problems, "the bot broke Discord's rules:\n" + "\n".join(fake.problems)


class ProviderGate:
    """The real provider, held until ``release`` is set (``after_preview``: once a preview is out).

    The fake OpenAI answers at once; this makes "the job is still running" a state a test controls.
    """

    def __init__(self, inner: ImageProvider, *, after_preview: bool = False) -> None:
        self.inner = inner
        self.after_preview = after_preview
        self.release = asyncio.Event()

    async def create_images(
        self, request: ImageRequest, *, on_partial: PartialCallback | None = None
    ) -> ProviderResult:
        if not self.after_preview:
            await self.release.wait()
            return await self.inner.create_images(request, on_partial=on_partial)

        async def held(index: int, data: bytes, output_format: str) -> None:
            if on_partial is not None:
                await on_partial(index, data, output_format)
            await self.release.wait()

        return await self.inner.create_images(request, on_partial=held if on_partial else None)

    async def aclose(self) -> None:
        await self.inner.aclose()


BotFactory = Callable[..., Awaitable[tuple[App, ImagineDiscordBot]]]


@pytest_asyncio.fixture
async def discord_bot(
    discord_fake: FakeDiscord, make_app: Callable[..., Awaitable[App]]
) -> AsyncIterator[BotFactory]:
    """``await discord_bot(**settings)`` builds an app and a connected bot on the fake Discord.

    Calling it again after closing both is a restart on the same data directory.
    """
    saved = (Route.BASE, DiscordWebSocket.DEFAULT_GATEWAY)
    bots: list[ImagineDiscordBot] = []

    async def factory(**overrides: object) -> tuple[App, ImagineDiscordBot]:
        values: dict[str, object] = {
            "discord_token": discord_fake.token,
            "discord_api_base_url": discord_fake.api_url,
            "discord_gateway_url": discord_fake.gateway_url,
            **overrides,
        }
        app = await make_app(**values)
        bot = ImagineDiscordBot(app, guild_ready_timeout=0.05)
        bots.append(bot)
        await bot.start_bot(timeout=10)
        await discord_fake.wait_connected()
        return app, bot

    try:
        yield factory
    finally:
        for bot in bots:
            await bot.close()
        Route.BASE, DiscordWebSocket.DEFAULT_GATEWAY = saved


__all__ = [
    "Call",
    "FakeDiscord",
    "FakeInteraction",
    "FakeUser",
    "ProviderGate",
    "UploadedFile",
    "discord_bot",
    "discord_fake",
]
