"""A fake Slack on 127.0.0.1: Web API, Socket Mode websocket, upload URLs, file host, response_url.

It is strict where real Slack is strict (tokens, trigger ids, block shapes, upload lengths), so a
bot that passes here speaks the protocol the real slack-bolt / slack-sdk clients speak. Tests drive
it through either transport: Socket Mode envelopes over the websocket, or signed HTTP requests to
the bot's ``/slack/events`` endpoint.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import aiohttp
import pytest
from aiohttp import web
from slack_sdk.signature import SignatureVerifier

BOT_TOKEN = "xoxb-test-bot-token"
APP_TOKEN = "xapp-test-app-token"
SIGNING_SECRET = "test-signing-secret"
TEAM_ID = "T0TEAM"
APP_ID = "A0IMAGINE"
BOT_USER_ID = "UBOT"
BOT_ID = "BBOT"

_BLOCK_TYPES = {"section", "context", "actions", "image", "divider", "header", "input", "rich_text"}
_LOGIN_PAGE = b"<!DOCTYPE html><html><head><title>Slack</title></head><body>Sign in</body></html>"


@dataclass
class SlackCall:
    """One Web API call the fake received (arguments merged from query, form and JSON)."""

    method: str
    args: dict[str, Any]
    token: str | None


@dataclass
class Upload:
    """Bytes the bot sent to an upload URL, with what completeUploadExternal said about them."""

    file_id: str
    filename: str
    length: int
    data: bytes = b""
    title: str | None = None
    channel_id: str | None = None
    thread_ts: str | None = None
    completed: bool = False


@dataclass
class Download:
    """A request for a file from the fake file host."""

    file_id: str
    authorized: bool


@dataclass
class FakeSlack:
    """The fake Slack workspace and its servers."""

    calls: list[SlackCall] = field(default_factory=list)
    messages: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    uploads: dict[str, Upload] = field(default_factory=dict)
    files: dict[str, dict[str, Any]] = field(default_factory=dict)
    file_bytes: dict[str, tuple[bytes, str]] = field(default_factory=dict)
    downloads: list[Download] = field(default_factory=list)
    responses: list[dict[str, Any]] = field(default_factory=list)
    users: dict[str, dict[str, Any]] = field(default_factory=dict)
    acks: dict[str, dict[str, Any]] = field(default_factory=dict)
    http_statuses: list[int] = field(default_factory=list)
    # Set to make a method answer ``{"ok": false, "error": ...}`` (consumed per call).
    failures: dict[str, list[str]] = field(default_factory=dict)
    # Real Slack may refuse a slack_file image block while the file is still being processed.
    refuse_slack_file_blocks: bool = False
    # Files whose link answers Slack's sign-in page even with the token (no files:read scope).
    login_page_files: set[str] = field(default_factory=set)
    # Channels the bot is not a member of (ids starting with G are private: it can't join).
    outside: set[str] = field(default_factory=set)
    mode: str = "socket"
    events_url: str | None = None

    def __post_init__(self) -> None:
        self._runner: web.AppRunner | None = None
        self.port = 0
        self._ts = itertools.count(1)
        self._ids = itertools.count(1)
        self._cond = asyncio.Condition()
        self._sockets: list[web.WebSocketResponse] = []
        self._connected = asyncio.Event()
        self._ack_waiters: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._triggers: set[str] = set()
        self._session: aiohttp.ClientSession | None = None
        for uid, name in (("UALICE", "alice"), ("UBOB", "bob")):
            self.add_user(uid, name)
        self.add_user("UADMIN", "admin", is_admin=True)

    # --- lifecycle ----------------------------------------------------------------------
    async def start(self) -> None:
        """Serve on 127.0.0.1, port 0."""
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/api/{method}", self._web_api)
        app.router.add_get("/link", self._socket)
        app.router.add_post("/upload/{file_id}", self._upload)
        app.router.add_get("/files-pri/{file_id}/{name}", self._file)
        app.router.add_post("/response/{rid}", self._response_url)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.port = int(self._runner.addresses[0][1])
        self._session = aiohttp.ClientSession()

    async def stop(self) -> None:
        """Close sockets and the server."""
        for ws in list(self._sockets):
            await ws.close()
        if self._session is not None:
            await self._session.close()
        if self._runner is not None:
            await self._runner.cleanup()

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT``."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def api_url(self) -> str:
        """The Web API base URL with its trailing slash (slack_sdk joins with urljoin)."""
        return f"{self.base_url}/api/"

    # --- workspace data -----------------------------------------------------------------
    def add_user(self, user_id: str, name: str, *, is_admin: bool = False) -> None:
        """Add a member; ``is_admin`` marks a workspace admin."""
        self.users[user_id] = {
            "id": user_id,
            "team_id": TEAM_ID,
            "name": name,
            "real_name": name.title(),
            "is_admin": is_admin,
            "is_owner": False,
            "is_bot": False,
            "profile": {"display_name": name, "real_name": name.title()},
        }

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

    def add_message(
        self,
        channel: str,
        text: str,
        *,
        user: str = "UALICE",
        thread_ts: str | None = None,
        files: list[dict[str, Any]] | None = None,
        bot: bool = False,
    ) -> dict[str, Any]:
        """Record a message as if a person (or a bot) posted it; returns the message object."""
        msg: dict[str, Any] = {"type": "message", "user": user, "text": text, "ts": self._new_ts()}
        if thread_ts:
            msg["thread_ts"] = thread_ts
        if files:
            msg["files"] = files
        if bot:
            msg["bot_id"] = "BOTHER"
        self.messages.setdefault(channel, []).append(msg)
        return dict(msg)

    def message_event(
        self, channel: str, msg: dict[str, Any], *, kind: str = "message"
    ) -> dict[str, Any]:
        """The Events API callback Slack sends for ``msg`` (``kind`` message or app_mention)."""
        event: dict[str, Any] = {
            "type": kind,
            "channel": channel,
            "user": msg["user"],
            "text": msg["text"],
            "ts": msg["ts"],
            "team": TEAM_ID,
        }
        if kind == "message":
            event["channel_type"] = "im" if channel.startswith("D") else "channel"
            if msg.get("files"):
                event["subtype"] = "file_share"
        for key in ("thread_ts", "files", "bot_id"):
            if msg.get(key):
                event[key] = msg[key]
        return self.event_payload(event)

    def message(self, channel: str, ts: str) -> dict[str, Any] | None:
        """The current state of a message, or None if it is unknown or deleted."""
        for msg in self.messages.get(channel, []):
            if msg["ts"] == ts:
                return msg
        return None

    def new_trigger(self) -> str:
        """A trigger id the fake will accept once for views.open."""
        trigger = f"trigger-{uuid.uuid4().hex[:10]}"
        self._triggers.add(trigger)
        return trigger

    def fail_next(self, method: str, error: str) -> None:
        """Make the next call of ``method`` answer ``ok: false`` with ``error``."""
        self.failures.setdefault(method, []).append(error)

    # --- queries for tests --------------------------------------------------------------
    def calls_to(self, method: str) -> list[SlackCall]:
        """Every recorded call of one Web API method, oldest first."""
        return [c for c in self.calls if c.method == method]

    async def wait_for(
        self,
        method: str,
        predicate: Callable[[SlackCall], bool] = lambda _c: True,
        *,
        count: int = 1,
        timeout: float = 5.0,  # noqa: ASYNC109 - mirrors the OpenAI fake's wait_for
    ) -> list[SlackCall]:
        """Wait until ``count`` calls of ``method`` match ``predicate``; returns them."""

        def matched() -> list[SlackCall]:
            return [c for c in self.calls if c.method == method and predicate(c)]

        async with self._cond:
            try:
                await asyncio.wait_for(
                    self._cond.wait_for(lambda: len(matched()) >= count), timeout
                )
            except TimeoutError:
                seen = [(c.method, c.args.get("text")) for c in self.calls[-12:]]
                raise AssertionError(
                    f"no {count} x {method} matching within {timeout}s; last calls: {seen}"
                ) from None
        return matched()

    async def wait_until(
        self,
        condition: Callable[[], bool],
        timeout: float = 5.0,  # noqa: ASYNC109
    ) -> None:
        """Wait until ``condition()`` is true (checked whenever the fake records something)."""
        async with self._cond:
            try:
                await asyncio.wait_for(self._cond.wait_for(condition), timeout)
            except TimeoutError:
                raise AssertionError(f"condition not met within {timeout}s") from None

    async def _notify(self) -> None:
        async with self._cond:
            self._cond.notify_all()

    # --- delivering to the bot ----------------------------------------------------------
    @property
    def connected(self) -> bool:
        """True while a bot holds a Socket Mode connection."""
        return bool(self._sockets)

    async def wait_connected(self, timeout: float = 5.0) -> None:  # noqa: ASYNC109
        """Wait for the bot's Socket Mode connection."""
        await asyncio.wait_for(self._connected.wait(), timeout)

    def command_payload(
        self,
        text: str,
        *,
        user: str = "UALICE",
        channel: str = "C0GENERAL",
        command: str = "/imagine",
    ) -> dict[str, str]:
        """The fields of a slash command request."""
        return {
            "token": "legacy-verification-token",
            "team_id": TEAM_ID,
            "team_domain": "test",
            "channel_id": channel,
            "channel_name": "general",
            "user_id": user,
            "user_name": self.users.get(user, {}).get("name", user),
            "command": command,
            "text": text,
            "api_app_id": APP_ID,
            "response_url": f"{self.base_url}/response/{uuid.uuid4().hex[:8]}",
            "trigger_id": self.new_trigger(),
        }

    def event_payload(
        self, event: dict[str, Any], *, event_id: str | None = None
    ) -> dict[str, Any]:
        """Wrap an event in its ``event_callback`` envelope."""
        return {
            "token": "legacy-verification-token",
            "team_id": TEAM_ID,
            "api_app_id": APP_ID,
            "event": {"event_ts": event.get("ts", self._new_ts()), **event},
            "type": "event_callback",
            "event_id": event_id or f"Ev{uuid.uuid4().hex[:10].upper()}",
            "event_time": int(time.time()),
            "authorizations": [
                {
                    "team_id": TEAM_ID,
                    "user_id": BOT_USER_ID,
                    "is_bot": True,
                    "is_enterprise_install": False,
                    "enterprise_id": None,
                }
            ],
        }

    def user_ref(self, user: str) -> dict[str, str]:
        """The ``user`` object interactive payloads carry."""
        name = self.users.get(user, {}).get("name", user)
        return {"id": user, "username": name, "name": name, "team_id": TEAM_ID}

    def block_action_payload(
        self, user: str, channel: str, message: dict[str, Any], action_id: str, value: str
    ) -> dict[str, Any]:
        """A ``block_actions`` payload for a button click on ``message``."""
        return {
            "type": "block_actions",
            "user": self.user_ref(user),
            "api_app_id": APP_ID,
            "token": "legacy-verification-token",
            "container": {
                "type": "message",
                "message_ts": message["ts"],
                "channel_id": channel,
                "is_ephemeral": False,
            },
            "trigger_id": self.new_trigger(),
            "team": {"id": TEAM_ID, "domain": "test"},
            "channel": {"id": channel, "name": "general"},
            "message": message,
            "response_url": f"{self.base_url}/response/{uuid.uuid4().hex[:8]}",
            "actions": [
                {
                    "type": "button",
                    "action_id": action_id,
                    "block_id": "imagine_actions",
                    "value": value,
                    "action_ts": self._new_ts(),
                }
            ],
        }

    def shortcut_payload(
        self, user: str, channel: str, message: dict[str, Any], callback_id: str = "imagine_edit"
    ) -> dict[str, Any]:
        """A ``message_action`` payload (the message shortcut)."""
        return {
            "type": "message_action",
            "token": "legacy-verification-token",
            "action_ts": self._new_ts(),
            "team": {"id": TEAM_ID, "domain": "test"},
            "user": self.user_ref(user),
            "channel": {"id": channel, "name": "general"},
            "callback_id": callback_id,
            "trigger_id": self.new_trigger(),
            "message_ts": message["ts"],
            "message": message,
            "response_url": f"{self.base_url}/response/{uuid.uuid4().hex[:8]}",
        }

    def view_submission_payload(
        self, user: str, view: dict[str, Any], values: dict[str, dict[str, Any]]
    ) -> dict[str, Any]:
        """A ``view_submission`` for a modal the bot opened, with ``values`` typed in."""
        submitted = {
            **view,
            "id": view.get("id", "V0"),
            "state": {"values": values},
            "team_id": TEAM_ID,
            "app_id": APP_ID,
        }
        return {
            "type": "view_submission",
            "team": {"id": TEAM_ID, "domain": "test"},
            "user": self.user_ref(user),
            "api_app_id": APP_ID,
            "token": "legacy-verification-token",
            "trigger_id": self.new_trigger(),
            "view": submitted,
        }

    async def send_command(self, payload: dict[str, str], *, retry_num: int = 0) -> Any:
        """Deliver a slash command through the current transport."""
        if self.mode == "socket":
            return await self._envelope("slash_commands", payload, accepts_response=True)
        return await self.post_signed(
            urlencode(payload), "application/x-www-form-urlencoded", retry_num=retry_num
        )

    async def send_event(self, payload: dict[str, Any], *, retry_num: int = 0) -> Any:
        """Deliver an Events API callback through the current transport."""
        if self.mode == "socket":
            return await self._envelope("events_api", payload, retry_num=retry_num)
        return await self.post_signed(json.dumps(payload), "application/json", retry_num=retry_num)

    async def send_interactive(self, payload: dict[str, Any]) -> Any:
        """Deliver a block action, shortcut or view submission through the current transport."""
        if self.mode == "socket":
            return await self._envelope("interactive", payload, accepts_response=True)
        body = urlencode({"payload": json.dumps(payload)})
        return await self.post_signed(body, "application/x-www-form-urlencoded")

    async def post_signed(
        self,
        body: str,
        content_type: str,
        *,
        retry_num: int = 0,
        secret: str = SIGNING_SECRET,
        timestamp: int | None = None,
    ) -> tuple[int, str]:
        """POST ``body`` to the bot's events URL, signed as Slack signs it; (status, text)."""
        assert self.events_url and self._session is not None
        ts = str(int(time.time()) if timestamp is None else timestamp)
        signature = SignatureVerifier(secret).generate_signature(timestamp=ts, body=body)
        headers = {
            "Content-Type": content_type,
            "X-Slack-Request-Timestamp": ts,
            "X-Slack-Signature": signature,
        }
        if retry_num:
            headers["X-Slack-Retry-Num"] = str(retry_num)
            headers["X-Slack-Retry-Reason"] = "http_timeout"
        async with self._session.post(self.events_url, data=body.encode(), headers=headers) as r:
            text = await r.text()
            self.http_statuses.append(r.status)
            return r.status, text

    async def _envelope(
        self,
        kind: str,
        payload: dict[str, Any],
        *,
        accepts_response: bool = False,
        retry_num: int = 0,
        timeout: float = 5.0,  # noqa: ASYNC109
    ) -> dict[str, Any]:
        await self.wait_connected()
        envelope_id = str(uuid.uuid4())
        envelope = {
            "envelope_id": envelope_id,
            "type": kind,
            "payload": payload,
            "accepts_response_payload": accepts_response,
            "retry_attempt": retry_num,
            "retry_reason": "timeout" if retry_num else "",
        }
        waiter: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._ack_waiters[envelope_id] = waiter
        await self._sockets[-1].send_str(json.dumps(envelope))
        return await asyncio.wait_for(waiter, timeout)

    # --- servers ------------------------------------------------------------------------
    async def _socket(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self._sockets.append(ws)
        await ws.send_str(
            json.dumps(
                {
                    "type": "hello",
                    "num_connections": 1,
                    "debug_info": {"host": "fake", "approximate_connection_time": 3600},
                    "connection_info": {"app_id": APP_ID},
                }
            )
        )
        self._connected.set()
        try:
            async for msg in ws:
                if msg.type != aiohttp.WSMsgType.TEXT:
                    continue
                data = json.loads(msg.data)
                envelope_id = data.get("envelope_id")
                if envelope_id:
                    self.acks[envelope_id] = data
                    waiter = self._ack_waiters.pop(envelope_id, None)
                    if waiter is not None and not waiter.done():
                        waiter.set_result(data)
        finally:
            self._sockets.remove(ws)
            if not self._sockets:
                self._connected.clear()
        return ws

    async def _upload(self, request: web.Request) -> web.Response:
        upload = self.uploads.get(request.match_info["file_id"])
        data = await request.read()
        if upload is None or len(data) != upload.length:
            return web.Response(status=400, text="bad upload")
        upload.data = data
        await self._notify()
        return web.Response(text=f"OK - {len(data)}")

    async def _file(self, request: web.Request) -> web.Response:
        file_id = request.match_info["file_id"]
        authorized = request.headers.get("Authorization") == f"Bearer {BOT_TOKEN}"
        self.downloads.append(Download(file_id, authorized))
        if not authorized or file_id in self.login_page_files:
            # Real Slack answers an unauthorised url_private fetch with its sign-in page.
            return web.Response(body=_LOGIN_PAGE, content_type="text/html")
        if file_id not in self.file_bytes:
            return web.Response(status=404, text="file not found")
        data, mime = self.file_bytes[file_id]
        return web.Response(body=data, content_type=mime)

    async def _response_url(self, request: web.Request) -> web.Response:
        self.responses.append(await request.json())
        await self._notify()
        return web.Response(text="ok")

    async def _web_api(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        args: dict[str, Any] = dict(request.query)
        if request.can_read_body:
            if request.content_type == "application/json":
                args.update(await request.json())
            else:
                args.update({k: v for k, v in (await request.post()).items() if isinstance(v, str)})
        for key in ("blocks", "view", "files", "attachments"):
            if isinstance(args.get(key), str):
                args[key] = json.loads(args[key])
        auth = request.headers.get("Authorization", "")
        token = auth.removeprefix("Bearer ") if auth.startswith("Bearer ") else args.get("token")
        args.pop("token", None)
        self.calls.append(SlackCall(method, args, token))
        try:
            answer = self._answer(method, args, token)
        finally:
            await self._notify()
        if answer.get("error") == "ratelimited":
            return web.json_response(answer, status=429, headers={"Retry-After": "0"})
        return web.json_response(answer)

    # --- Web API methods ----------------------------------------------------------------
    def _answer(self, method: str, args: dict[str, Any], token: str | None) -> dict[str, Any]:
        if method == "apps.connections.open":
            if token != APP_TOKEN:
                return _err("not_allowed_token_type" if token else "not_authed")
            return {"ok": True, "url": f"ws://127.0.0.1:{self.port}/link"}
        if token != BOT_TOKEN:
            return _err("invalid_auth" if token else "not_authed")
        if self.failures.get(method):
            return _err(self.failures[method].pop(0))
        channel = args.get("channel") or args.get("channel_id")
        if channel in self.outside and method != "conversations.join":
            return _err("not_in_channel")
        handler = getattr(self, "_m_" + method.replace(".", "_"), None)
        if handler is None:
            return _err("unknown_method")
        result: dict[str, Any] = handler(args)
        return result

    def _m_auth_test(self, args: dict[str, Any]) -> dict[str, Any]:
        return {
            "ok": True,
            "url": "https://test.slack.com/",
            "team": "Test",
            "user": "imagine",
            "team_id": TEAM_ID,
            "user_id": BOT_USER_ID,
            "bot_id": BOT_ID,
            "is_enterprise_install": False,
        }

    def _m_conversations_join(self, args: dict[str, Any]) -> dict[str, Any]:
        channel = str(args.get("channel", ""))
        if channel.startswith(("G", "D")):
            return _err("method_not_supported_for_channel_type")
        self.outside.discard(channel)
        return {"ok": True, "channel": {"id": channel, "is_member": True}}

    def _m_users_info(self, args: dict[str, Any]) -> dict[str, Any]:
        user = self.users.get(str(args.get("user")))
        return {"ok": True, "user": user} if user else _err("user_not_found")

    def _m_chat_postMessage(self, args: dict[str, Any]) -> dict[str, Any]:
        channel = str(args.get("channel", ""))
        problem = self._check_content(args)
        if not channel:
            return _err("channel_not_found")
        if problem:
            return _err(problem)
        thread_ts = args.get("thread_ts")
        if thread_ts and self.message(channel, str(thread_ts)) is None:
            return _err("thread_not_found")
        msg: dict[str, Any] = {
            "type": "message",
            "user": BOT_USER_ID,
            "bot_id": BOT_ID,
            "app_id": APP_ID,
            "text": args.get("text", ""),
            "ts": self._new_ts(),
        }
        if args.get("blocks"):
            msg["blocks"] = args["blocks"]
        if thread_ts:
            msg["thread_ts"] = str(thread_ts)
        self.messages.setdefault(channel, []).append(msg)
        return {"ok": True, "channel": channel, "ts": msg["ts"], "message": dict(msg)}

    def _m_chat_update(self, args: dict[str, Any]) -> dict[str, Any]:
        channel, ts = str(args.get("channel", "")), str(args.get("ts", ""))
        msg = self.message(channel, ts)
        if msg is None:
            return _err("message_not_found")
        problem = self._check_content(args)
        if problem:
            return _err(problem)
        msg["text"] = args.get("text", "")
        if "blocks" in args:
            msg["blocks"] = args["blocks"]
        return {"ok": True, "channel": channel, "ts": ts, "text": msg["text"], "message": dict(msg)}

    def _m_chat_postEphemeral(self, args: dict[str, Any]) -> dict[str, Any]:
        if not args.get("channel"):
            return _err("channel_not_found")
        if not args.get("user"):
            return _err("user_not_found")
        problem = self._check_content(args)
        return _err(problem) if problem else {"ok": True, "message_ts": self._new_ts()}

    def _m_chat_delete(self, args: dict[str, Any]) -> dict[str, Any]:
        channel, ts = str(args.get("channel", "")), str(args.get("ts", ""))
        msg = self.message(channel, ts)
        if msg is None:
            return _err("message_not_found")
        if msg.get("user") != BOT_USER_ID:
            return _err("cant_delete_message")
        self.messages[channel].remove(msg)
        return {"ok": True, "channel": channel, "ts": ts}

    def _m_reactions_add(self, args: dict[str, Any]) -> dict[str, Any]:
        if self.message(str(args.get("channel")), str(args.get("timestamp"))) is None:
            return _err("message_not_found")
        return {"ok": True} if args.get("name") else _err("invalid_name")

    def _m_views_open(self, args: dict[str, Any]) -> dict[str, Any]:
        trigger = args.get("trigger_id")
        if trigger not in self._triggers:
            return _err("invalid_trigger_id")
        self._triggers.discard(trigger)
        view = args.get("view")
        if not isinstance(view, dict) or view.get("type") != "modal":
            return _err("invalid_arguments")
        if len(view.get("title", {}).get("text", "")) > 24:
            return _err("invalid_arguments")
        if len(view.get("private_metadata", "")) > 3000 or self._bad_blocks(view.get("blocks")):
            return _err("invalid_arguments")
        opened = {**view, "id": f"V{next(self._ids):08d}", "team_id": TEAM_ID, "app_id": APP_ID}
        return {"ok": True, "view": opened}

    def _m_files_getUploadURLExternal(self, args: dict[str, Any]) -> dict[str, Any]:
        filename, length = args.get("filename"), str(args.get("length", ""))
        if not filename or not length.isdigit() or int(length) <= 0:
            return _err("invalid_arguments")
        file_id = f"F{next(self._ids):08d}"
        self.uploads[file_id] = Upload(file_id, str(filename), int(length))
        return {"ok": True, "upload_url": f"{self.base_url}/upload/{file_id}", "file_id": file_id}

    def _m_files_completeUploadExternal(self, args: dict[str, Any]) -> dict[str, Any]:
        entries = args.get("files")
        if not isinstance(entries, list) or not entries:
            return _err("invalid_arguments")
        channel, thread_ts = args.get("channel_id"), args.get("thread_ts")
        if thread_ts and (not channel or self.message(str(channel), str(thread_ts)) is None):
            return _err("invalid_thread_ts")
        done: list[dict[str, Any]] = []
        for entry in entries:
            upload = self.uploads.get(str(entry.get("id")))
            if upload is None or len(upload.data) != upload.length or upload.completed:
                return _err("file_not_found")
            upload.completed, upload.title = True, entry.get("title")
            upload.channel_id, upload.thread_ts = channel, thread_ts
            url = f"{self.base_url}/files-pri/{upload.file_id}/{upload.filename}"
            mime = "image/" + upload.filename.rsplit(".", 1)[-1].replace("jpg", "jpeg")
            obj = {
                "id": upload.file_id,
                "name": upload.filename,
                "title": upload.title,
                "mimetype": mime,
                "size": upload.length,
                "user": BOT_USER_ID,
                "url_private": url,
                "url_private_download": url,
            }
            self.files[upload.file_id] = obj
            self.file_bytes[upload.file_id] = (upload.data, mime)
            done.append(obj)
        if channel:
            msg: dict[str, Any] = {
                "type": "message",
                "subtype": "file_share",
                "user": BOT_USER_ID,
                "bot_id": BOT_ID,
                "text": args.get("initial_comment") or "",
                "ts": self._new_ts(),
                "files": done,
            }
            if thread_ts:
                msg["thread_ts"] = str(thread_ts)
            self.messages.setdefault(str(channel), []).append(msg)
        return {"ok": True, "files": [{"id": f["id"], "title": f["title"]} for f in done]}

    def _m_files_info(self, args: dict[str, Any]) -> dict[str, Any]:
        obj = self.files.get(str(args.get("file")))
        return {"ok": True, "file": obj} if obj else _err("file_not_found")

    def _m_files_delete(self, args: dict[str, Any]) -> dict[str, Any]:
        file_id = str(args.get("file"))
        if self.files.pop(file_id, None) is None:
            return _err("file_not_found")
        self.file_bytes.pop(file_id, None)
        return {"ok": True}

    # --- validation -----------------------------------------------------------------------
    def _check_content(self, args: dict[str, Any]) -> str | None:
        if not args.get("text") and not args.get("blocks"):
            return "no_text"
        if len(str(args.get("text", ""))) > 40000:
            return "msg_too_long"
        return "invalid_blocks" if self._bad_blocks(args.get("blocks")) else None

    def _bad_blocks(self, blocks: Any) -> bool:
        if blocks is None:
            return False
        if not isinstance(blocks, list) or len(blocks) > 50:
            return True
        action_ids: set[str] = set()
        for block in blocks:
            kind = block.get("type")
            if kind not in _BLOCK_TYPES:
                return True
            text = block.get("text")
            if isinstance(text, dict) and len(text.get("text", "")) > 3000:
                return True
            if kind == "image" and self._bad_image(block):
                return True
            for element in block.get("elements", []) if kind == "actions" else []:
                action_id = element.get("action_id")
                if not action_id or action_id in action_ids or len(element.get("value", "")) > 2000:
                    return True
                action_ids.add(action_id)
        return False

    def _bad_image(self, block: dict[str, Any]) -> bool:
        if not block.get("alt_text"):
            return True
        if "image_url" in block:
            return not str(block["image_url"]).startswith("http")
        ref = block.get("slack_file")
        if not isinstance(ref, dict):
            return True
        if self.refuse_slack_file_blocks:
            return True
        return ref.get("id") not in self.files and ref.get("url") is None

    def _new_ts(self) -> str:
        return f"{1_700_000_000 + next(self._ts)}.000100"


def _err(error: str) -> dict[str, Any]:
    return {"ok": False, "error": error}


@pytest.fixture
async def slack_fake() -> AsyncIterator[FakeSlack]:
    """A running fake Slack for one test."""
    fake = FakeSlack()
    await fake.start()
    try:
        yield fake
    finally:
        await fake.stop()


@dataclass
class RunningBot:
    """A started Slack bot, its core app, and the transport it listens on."""

    bot: Any
    app: Any
    mode: str

    async def stop(self) -> None:
        """Stop the bot and close its core app (a restart builds both again)."""
        await self.bot.stop()
        await self.app.aclose()


@pytest.fixture
async def start_slack(
    slack_fake: FakeSlack, make_app: Callable[..., Any]
) -> AsyncIterator[Callable[..., Any]]:
    """``await start_slack("socket" | "http", **settings)``: the real bot on the fake Slack."""
    from adapters.slack_bot import SlackBot

    running: list[RunningBot] = []

    async def start(mode: str = "socket", **overrides: Any) -> RunningBot:
        settings: dict[str, Any] = {
            "slack_bot_token": BOT_TOKEN,
            "slack_signing_secret": SIGNING_SECRET,
            "slack_api_url": slack_fake.api_url,
        }
        if mode == "socket":
            settings["slack_app_token"] = APP_TOKEN
        settings.update(overrides)
        app = await make_app(**settings)
        bot = SlackBot(app)
        slack_fake.mode = mode
        if mode == "socket":
            await bot.start_socket_mode()
            await slack_fake.wait_connected()
        else:
            port = await bot.start_http(host="127.0.0.1", port=0)
            slack_fake.events_url = f"http://127.0.0.1:{port}/slack/events"
        handle = RunningBot(bot, app, mode)
        running.append(handle)
        return handle

    yield start
    for handle in running:
        await handle.bot.stop()
