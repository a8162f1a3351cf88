"""The fake Slack workspace's state: members, messages, files, and every Web API call it saw.

The servers (Web API, file host, Socket Mode, signed HTTP delivery) are mixins over this state;
``tests.fakes.slack_server.FakeSlack`` puts them together.
"""

from __future__ import annotations

import asyncio
import itertools
import uuid
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web

BOT_TOKEN = "xoxb-test-bot-token"
APP_TOKEN = "xapp-test-app-token"
SIGNING_SECRET = "test-signing-secret"
TEAM_ID = "T0TEAM"
APP_ID = "A0IMAGINE"
BOT_USER_ID = "UBOT"
BOT_ID = "BBOT"


@dataclass
class SlackCall:
    """One Web API call the fake received (arguments merged from query, form and JSON)."""

    method: str
    args: dict[str, Any]
    token: str | None
    limited: bool = False  # answered 429 by the rate limits


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
class SlackWorkspace:
    """The fake Slack workspace: what the bot and the tests can see and change."""

    calls: list[SlackCall] = field(default_factory=list)
    messages: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    uploads: dict[str, Upload] = field(default_factory=dict)
    files: dict[str, dict[str, Any]] = field(default_factory=dict)
    file_bytes: dict[str, tuple[bytes, str]] = field(default_factory=dict)
    downloads: list[Download] = field(default_factory=list)
    responses: list[dict[str, Any]] = field(default_factory=list)
    # Bodies sent to a response_url that Slack would refuse, each with its "_error".
    refused_responses: list[dict[str, Any]] = field(default_factory=list)
    response_uses: dict[str, int] = field(default_factory=dict)
    # Private (ephemeral) messages each user sees now: channel, user, text, blocks, ts,
    # thread_ts. A response URL of a click on one replaces or deletes it.
    ephemerals: list[dict[str, Any]] = field(default_factory=list)
    response_targets: dict[str, dict[str, Any]] = field(default_factory=dict)
    users: dict[str, dict[str, Any]] = field(default_factory=dict)
    acks: dict[str, dict[str, Any]] = field(default_factory=dict)
    http_statuses: list[int] = field(default_factory=list)
    # Set to make a method answer ``{"ok": false, "error": ...}`` (consumed per call).
    failures: dict[str, list[str]] = field(default_factory=dict)
    # Like ``failures``, for the next calls whose arguments match a predicate.
    failures_when: list[tuple[str, Callable[[dict[str, Any]], bool], str]] = field(
        default_factory=list
    )
    # How many of the next raw uploads (files.getUploadURLExternal's URL) answer HTTP 500.
    failing_uploads: int = 0
    # Real Slack may refuse a slack_file image block while the file is still being processed.
    refuse_slack_file_blocks: bool = False
    # Files whose link answers Slack's sign-in page even with the token (no files:read scope).
    login_page_files: set[str] = field(default_factory=set)
    # Files whose sign-in page comes labelled as the file's own type (Slack has done that).
    mislabelled_login_page_files: set[str] = field(default_factory=set)
    # Files sent chunked, with no Content-Length: only counting the bytes shows their size.
    chunked_files: set[str] = field(default_factory=set)
    # Channels the bot is not a member of (ids starting with G are private: it can't join).
    outside: set[str] = field(default_factory=set)
    # User groups by id: {"id", "team_id", "handle", "name", "users", "date_delete", ...}.
    usergroups: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Channels conversations.info knows (others answer channel_not_found).
    channels: dict[str, dict[str, Any]] = field(default_factory=dict)
    mode: str = "socket"
    events_url: str | None = None
    # Slack's rate limits (see slack_web_api): off for nothing; ``rate_scale`` shrinks every
    # window and Retry-After by one factor, so a test sees a minute's limit in a fraction of it.
    rate_limits: bool = True
    rate_scale: float = 1.0
    # The Retry-After (seconds) of a ``ratelimited`` answer made by ``fail_next``/``fail_when``.
    failure_retry_after: float = 0.0
    # Called with each Web API call after it is answered but before the answer is sent: a test
    # can act at the moment something becomes visible, before the bot's next call.
    on_answered: Callable[[SlackCall, dict[str, Any]], Awaitable[None]] | None = None

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
        self._rate_windows: dict[tuple[str, str], deque[float]] = {}
        for uid, name in (("UALICE", "alice"), ("UBOB", "bob")):
            self.add_user(uid, name)
        self.add_user("UADMIN", "admin", is_admin=True)
        for cid, name in (("C0GENERAL", "general"), ("C0ART", "art")):
            self.add_channel(cid, name)

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

    def add_channel(self, channel_id: str, name: str, *, private: bool = False) -> None:
        """Add a channel conversations.info can find."""
        self.channels[channel_id] = {
            "id": channel_id,
            "name": name,
            "is_channel": not private,
            "is_group": private,
            "is_private": private,
            "is_archived": False,
            "context_team_id": TEAM_ID,
        }

    def add_usergroup(self, group_id: str, handle: str, users: list[str]) -> None:
        """Add a user group (Slack's "user group" object, enabled) with these members."""
        self.usergroups[group_id] = {
            "id": group_id,
            "team_id": TEAM_ID,
            "is_usergroup": True,
            "name": handle.title(),
            "handle": handle,
            "description": "",
            "date_delete": 0,
            "user_count": len(users),
            "users": list(users),
        }

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

    def ephemerals_for(self, user: str) -> list[dict[str, Any]]:
        """The private messages ``user`` sees now, oldest first."""
        return [e for e in self.ephemerals if e["user"] == user]

    def message(self, channel: str, ts: str) -> dict[str, Any] | None:
        """The current state of a message, or None if it is unknown or deleted."""
        for msg in self.messages.get(channel, []):
            if msg["ts"] == ts:
                return msg
        return None

    def delete_by_user(self, channel: str, ts: str) -> None:
        """Delete a message as a person would (an admin, or the poster via "Delete message")."""
        found = self.message(channel, ts)
        assert found is not None, f"no message {ts} in {channel}"
        self.messages[channel].remove(found)

    def new_trigger(self) -> str:
        """A trigger id the fake will accept once for views.open."""
        trigger = f"trigger-{uuid.uuid4().hex[:10]}"
        self._triggers.add(trigger)
        return trigger

    def fail_next(self, method: str, error: str) -> None:
        """Make the next call of ``method`` answer ``ok: false`` with ``error``."""
        self.failures.setdefault(method, []).append(error)

    def fail_when(
        self, method: str, matches: Callable[[dict[str, Any]], bool], error: str, *, times: int = 1
    ) -> None:
        """Make the next ``times`` calls of ``method`` whose arguments match fail with ``error``."""
        self.failures_when.extend([(method, matches, error)] * times)

    # --- queries for tests --------------------------------------------------------------
    def rate_limited(self) -> list[SlackCall]:
        """Every call answered HTTP 429 ``ratelimited`` because of the rate limits."""
        return [c for c in self.calls if c.limited]

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

    def _new_ts(self) -> str:
        return f"{1_700_000_000 + next(self._ts)}.000100"
