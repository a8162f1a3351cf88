"""The fake Discord's state and what tests use to inspect it, wait on it and inject faults."""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from tests.fakes.discord_payloads import (
    DISCORD_EPOCH_MS,
    EPHEMERAL,
    JSON_TYPE,
    LOADING,
    MANAGE_GUILD,
    MANAGE_MESSAGES,
    MEMBER_PERMISSIONS,
    MESSAGE_CONTENT_INTENT,
    Call,
    FakeInteraction,
    FakeUser,
    error_response,
    iso,
)


class DiscordState:
    """One guild with one channel, its members, messages, interactions and the calls seen."""

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
        # A member who can manage the server (Discord's Manage Server permission).
        self.admin = FakeUser(self.snowflake(), "carol", MEMBER_PERMISSIONS | MANAGE_GUILD)
        self.channel_name = "art"
        # More text channels and the guild's roles besides @everyone: id -> name.
        self.channels: dict[str, str] = {}
        self.roles: dict[str, str] = {}
        self.members: dict[str, FakeUser] = {
            u.id: u for u in (self.bot, self.alice, self.bob, self.mod, self.admin)
        }
        self.attachment_size_limit = 10 * 1024 * 1024
        self.allow_message_content = True
        # Set when the bot loses access to the channel (kicked, role or overwrite removed).
        self.channel_blocked = False
        self.calls: list[Call] = []
        self.messages: dict[str, dict[str, Any]] = {}
        self.interactions: dict[str, FakeInteraction] = {}
        self.commands: dict[str, list[dict[str, Any]]] = {}
        self.identify: dict[str, Any] | None = None
        # Every IDENTIFY's ``shard`` ([id, count], None when it sent none), in order.
        self.identified_shards: list[list[int] | None] = []
        # Discord refuses (4011) a connection without at least this many shards: a big bot.
        self.min_shards: int | None = None
        # The open identified connections by shard id (None: an unsharded one). ``_ws`` is the one
        # that carries the guild's events: Discord sends them on the guild's shard only.
        self.sockets: dict[int | None, web.WebSocketResponse] = {}
        self._sessions: dict[str, int | None] = {}
        self._shard_counts: dict[str, int] = {}
        self.resumes = 0
        # How many of the next gateway connection attempts fail (an outage).
        self.refuse_connections = 0
        self.refused = 0  # connection attempts refused so far
        # Requests per window (seconds) for the buckets the bot's messages draw on. Discord does
        # not publish these (its docs: read the X-RateLimit-* headers); observed figures: about
        # 5 per 5 s for a channel's message create and edit (each its own bucket), 5 per 2 s per
        # interaction token for followups and response edits (discord/discord-api-docs#2701).
        self.route_limits: dict[str, tuple[int, float]] = {"channel": (5, 5.0), "webhook": (5, 2.0)}
        self._buckets: dict[tuple[str, str], list[float]] = {}
        self.rate_limited: list[tuple[tuple[str, str], float]] = []
        # Awaited with each bot message the moment it first shows a result image, before the
        # request that showed it is answered (what a quick user can do in that moment).
        self.on_result_shown: Callable[[dict[str, Any]], Awaitable[None]] | None = None
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

    # --- helpers for tests --------------------------------------------------------------------
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

    def replies_to(self, message_id: str) -> list[dict[str, Any]]:
        """The bot's visible replies to a message, oldest first."""
        return [
            m
            for m in self.channel_messages()
            if (m.get("message_reference") or {}).get("message_id") == message_id
        ]

    async def reply_result(self, user_message: dict[str, Any]) -> dict[str, Any]:
        """Wait for the bot's reply to ``user_message`` to show a finished result (the embed)."""
        found: list[dict[str, Any]] = await self.wait_until(
            lambda: [m for m in self.replies_to(user_message["id"]) if m["embeds"]]
        )
        return found[0]

    def webhook_edits(self, interaction: FakeInteraction) -> list[dict[str, Any]]:
        """The bodies of the bot's successful edits of an interaction's messages, in order."""
        edits = self.calls_to("PATCH", f"/{interaction.token}/messages/")
        return [c.json or {} for c in edits if c.status == 200]

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
        self._rejections.append((matches, error_response(status, code, message)))

    def rate_limit_next(self, matches: Callable[[Call], bool], retry_after: float) -> None:
        """Answer the next matching request with a 429 as Discord's edge sends it."""
        body = {
            "message": "You are being rate limited.",
            "retry_after": retry_after,
            "global": False,
            "code": 0,
        }
        headers = {
            "Content-Type": JSON_TYPE,
            "Via": "1.1 google",
            "Retry-After": "1",
            "X-RateLimit-Scope": "user",
            "X-RateLimit-Remaining": "0",
        }
        response = web.Response(status=429, body=json.dumps(body).encode(), headers=headers)
        self._rejections.append((matches, response))

    def delete_by_user(self, message_id: str) -> None:
        """Delete a message as a member with Manage Messages would (the bot is not asked)."""
        self.deleted.append(self.messages.pop(message_id))

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

    def put_guild_on_shard(self, shard_id: int, shard_count: int) -> None:
        """Give the guild an id Discord would route to ``shard_id`` (before the bot connects).

        Discord docs (Gateway, Sharding): shard_id = (guild_id >> 22) % num_shards.
        """
        value = int(self.guild_id)
        stamp = value >> 22
        stamp -= (stamp - shard_id) % shard_count
        self.guild_id = str((stamp << 22) | (value & 0x3FFFFF))

    def guild_shard(self, shard: list[int] | None) -> bool:
        """Whether a connection identified with ``shard`` receives the guild's events."""
        if shard is None:
            return True
        return (int(self.guild_id) >> 22) % shard[1] == shard[0]

    @property
    def connected(self) -> bool:
        """True while a bot holds an identified gateway connection."""
        return self._ws is not None and not self._ws.closed

    # --- internals ----------------------------------------------------------------------------
    def _message(self, author: dict[str, Any], **fields: Any) -> dict[str, Any]:
        message = {
            "id": self.snowflake(),
            "channel_id": self.channel_id,
            "guild_id": self.guild_id,
            "author": author,
            "content": "",
            "timestamp": iso(time.time()),
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
