"""The fake Discord's gateway: identify, READY, and the events users cause (commands, messages)."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from aiohttp import WSMsgType, web

from tests.fakes.discord_payloads import (
    EPHEMERAL,
    MEMBER_PERMISSIONS,
    MESSAGE_CONTENT_INTENT,
    FakeInteraction,
    FakeUser,
    iso,
)
from tests.fakes.discord_state import DiscordState


class DiscordGateway(DiscordState):
    """The websocket the bot connects to, and the user actions that arrive through it."""

    # --- what users do (it reaches the bot as gateway events) ---------------------------------
    async def dispatch(self, event: str, data: dict[str, Any]) -> None:
        """Send a gateway DISPATCH to the connected bot."""
        if self._ws is None:
            raise RuntimeError("no bot is connected to the fake gateway")
        self._seq += 1
        await self._ws.send_str(json.dumps({"op": 0, "t": event, "s": self._seq, "d": data}))

    async def slash(
        self,
        user: FakeUser,
        name: str = "imagine",
        /,
        *,
        in_channel: str | None = None,
        **options: Any,
    ) -> FakeInteraction:
        """Run a slash command; attachment options are attachment objects from upload(), user
        options FakeUsers (resolved the way Discord resolves them)."""
        opts: list[dict[str, Any]] = []
        resolved: dict[str, dict[str, Any]] = {}
        for key, value in options.items():
            if isinstance(value, FakeUser):
                opts.append({"name": key, "type": 6, "value": value.id})
                member = {k: v for k, v in value.member().items() if k != "user"}
                resolved.setdefault("users", {})[value.id] = value.payload()
                resolved.setdefault("members", {})[value.id] = {
                    **member,
                    "permissions": str(value.permissions),
                }
            elif isinstance(value, dict):
                opts.append({"name": key, "type": 11, "value": value["id"]})
                resolved.setdefault("attachments", {})[value["id"]] = value
            elif isinstance(value, bool):
                opts.append({"name": key, "type": 5, "value": value})
            elif isinstance(value, int):
                opts.append({"name": key, "type": 4, "value": value})
            else:
                opts.append({"name": key, "type": 3, "value": value})
        self._check_options(name, opts)
        data: dict[str, Any] = {
            "id": self._command_id(name),
            "name": name,
            "type": 1,
            "options": opts,
        }
        if resolved:
            data["resolved"] = resolved
        return await self._interact(user, 2, data, channel_id=in_channel)

    async def add_role(self, name: str, *members: FakeUser) -> str:
        """Create a role and give it to ``members``; returns its id."""
        role_id = self.snowflake()
        self.roles[role_id] = name
        for member in members:
            member.roles.append(role_id)
        if self._ws is not None:
            await self.dispatch(
                "GUILD_ROLE_CREATE", {"guild_id": self.guild_id, "role": self._role(role_id)}
            )
        return role_id

    async def add_channel(self, name: str) -> str:
        """Create another text channel in the guild; returns its id."""
        channel_id = self.snowflake()
        self.channels[channel_id] = name
        if self._ws is not None:
            await self.dispatch("CHANNEL_CREATE", self._channel(channel_id))
        return channel_id

    def add_member(self, username: str, permissions: int = MEMBER_PERMISSIONS) -> FakeUser:
        """Another member of the guild (the bot learns of members only through events and REST)."""
        user = FakeUser(self.snowflake(), username, permissions)
        self.members[user.id] = user
        return user

    async def generate(self, user: FakeUser, prompt: str, **options: Any) -> dict[str, Any]:
        """Run /imagine and wait for its finished result message."""
        return await self.result_of(await self.slash(user, prompt=prompt, **options))

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
        shown_to = self.interactions.get(message.get("_token", ""))
        if message["flags"] & EPHEMERAL and (shown_to is None or shown_to.user["id"] != user.id):
            # Discord shows an ephemeral message to the user of its interaction only.
            raise AssertionError(f"{user.username} can't see that ephemeral message")
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

    async def fill_in_prompt(
        self, user: FakeUser, opened_by: FakeInteraction, prompt: str
    ) -> dict[str, Any]:
        """Wait for the bot's modal, type ``prompt`` into it, submit, and wait for the result."""
        await self.wait_until(lambda: opened_by.callback_type is not None)
        submitted = await self.submit_modal(user, opened_by, {"prompt": prompt})
        return await self.result_of(submitted)

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

    # --- building the events ------------------------------------------------------------------
    def _check_options(self, name: str, options: list[dict[str, Any]]) -> None:
        """A Discord client only offers the options a command was registered with, typed so."""
        for commands in self.commands.values():
            for command in commands:
                registered = {o["name"]: o["type"] for o in command.get("options", [])}
                if command["name"] != name or {1, 2} & set(registered.values()):
                    continue  # subcommands carry their own options
                for option in options:
                    if registered.get(option["name"]) != option["type"]:
                        raise AssertionError(
                            f"/{name} has no option {option['name']!r} of type {option['type']}"
                        )

    def _command_id(self, name: str) -> str:
        for commands in self.commands.values():
            for command in commands:
                if command["name"] == name:
                    return str(command["id"])
        raise AssertionError(f"the bot never registered a command named {name!r}")

    async def _interact(
        self,
        user: FakeUser,
        kind: int,
        data: dict[str, Any],
        message: dict[str, Any] | None = None,
        *,
        channel_id: str | None = None,
    ) -> FakeInteraction:
        token = "tok-" + self.snowflake()
        channel_id = channel_id or self.channel_id
        payload: dict[str, Any] = {
            "id": self.snowflake(),
            "application_id": self.app_id,
            "type": kind,
            "token": token,
            "version": 1,
            "guild_id": self.guild_id,
            "data": data,
            "locale": "en-US",
            "channel_id": channel_id,
            "channel": self._channel(channel_id),
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

    def _channel(self, channel_id: str | None = None) -> dict[str, Any]:
        channel_id = channel_id or self.channel_id
        return {
            "id": channel_id,
            "type": 0,
            "name": self.channels.get(channel_id, self.channel_name),
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

    def _role(self, role_id: str) -> dict[str, Any]:
        everyone = role_id == self.guild_id  # @everyone's id is the guild's
        return {
            "id": role_id,
            "name": "@everyone" if everyone else self.roles[role_id],
            "permissions": str(MEMBER_PERMISSIONS if everyone else 0),
            "position": 0 if everyone else 1,
            "color": 0,
            "hoist": False,
            "managed": False,
            "mentionable": False,
            "flags": 0,
        }

    def _guild(self) -> dict[str, Any]:
        return {
            "id": self.guild_id,
            "name": "Test Guild",
            "icon": None,
            "owner_id": self.mod.id,
            "roles": [self._role(r) for r in (self.guild_id, *self.roles)],
            "channels": [self._channel(c) for c in (self.channel_id, *self.channels)],
            "threads": [],
            "members": [self.bot.member()],
            "member_count": 4,
            "features": [],
            "emojis": [],
            "stickers": [],
            "unavailable": False,
            "large": False,
            "joined_at": iso(time.time()),
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

    # --- gateway ------------------------------------------------------------------------------
    async def _gateway(self, request: web.Request) -> web.StreamResponse:
        if self.refuse_connections > 0:
            # A gateway outage as clients meet it: the websocket upgrade is answered 503.
            self.refuse_connections -= 1
            self.refused += 1
            await self._notify()
            return web.Response(status=503, text="Service Unavailable")
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
            elif frame["op"] == 6:
                await self._resume(ws, frame["d"])
            elif frame["op"] == 8:
                await self._members_chunk(frame["d"])
        if self._ws is ws:
            self._ws = None
        for key in [k for k, open_ws in self.sockets.items() if open_ws is ws]:
            del self.sockets[key]
        await self._notify()
        return ws

    async def _members_chunk(self, data: dict[str, Any]) -> None:
        # Discord docs (Gateway, Request Guild Members): members whose username (or nickname)
        # starts with the query, at most ``limit``, in GUILD_MEMBERS_CHUNK events with the nonce.
        query = str(data.get("query") or "").lower()
        found = [
            u.member()
            for u in self.members.values()
            if u.username.lower().startswith(query) or (u.nick or "").lower().startswith(query)
        ][: int(data.get("limit") or 100) or 100]
        chunk: dict[str, Any] = {
            "guild_id": self.guild_id,
            "members": found,
            "chunk_index": 0,
            "chunk_count": 1,
            "not_found": [],
        }
        if data.get("nonce"):
            chunk["nonce"] = data["nonce"]
        await self.dispatch("GUILD_MEMBERS_CHUNK", chunk)

    async def ask_to_reconnect(self) -> None:
        """Send op 7 RECONNECT, as Discord does when it moves a session to another server."""
        if self._ws is None:
            raise RuntimeError("no bot is connected to the fake gateway")
        await self._ws.send_str(json.dumps({"op": 7, "d": None}))

    async def drop_connection(self, code: int) -> None:
        """Close the bot's gateway connection with ``code`` (Discord docs: gateway close codes)."""
        if self._ws is None:
            raise RuntimeError("no bot is connected to the fake gateway")
        ws, self._ws = self._ws, None
        await ws.close(code=code)

    async def drop_shard(self, shard_id: int | None, code: int) -> None:
        """Close one shard's connection (None: the unsharded one) with ``code``."""
        ws = self.sockets.pop(shard_id)
        if self._ws is ws:
            self._ws = None
        await ws.close(code=code)

    async def _resume(self, ws: web.WebSocketResponse, data: dict[str, Any]) -> None:
        # Discord docs (Gateway, Resuming): a RESUME with the token, session id and last sequence
        # gets the missed events replayed, then RESUMED; a bad one gets op 9 INVALID_SESSION.
        session = str(data.get("session_id"))
        if data.get("token") != self.token or session not in self._sessions:
            await ws.send_str(json.dumps({"op": 9, "d": False}))
            return
        shard_id = self._sessions[session]
        self.sockets[shard_id] = ws
        shard = None if shard_id is None else [shard_id, self._shard_counts[session]]
        if self.guild_shard(shard):
            self._ws = ws
        self.resumes += 1
        self._seq += 1
        await ws.send_str(json.dumps({"op": 0, "t": "RESUMED", "s": self._seq, "d": {}}))
        await self._notify()

    async def _identify(self, ws: web.WebSocketResponse, data: dict[str, Any]) -> None:
        if data.get("token") != self.token:
            await ws.close(code=4004, message=b"Authentication failed.")
            return
        if data.get("intents", 0) & MESSAGE_CONTENT_INTENT and not self.allow_message_content:
            await ws.close(code=4014, message=b"Disallowed intent(s).")
            return
        shard = data.get("shard")
        self.identified_shards.append(shard)
        # Discord docs (Gateway, Sharding; close codes): shard is [shard_id, num_shards] with
        # shard_id < num_shards, else 4010 Invalid shard; a bot in too many guilds for the shards
        # it asks for gets 4011 Sharding required.
        if shard is not None and not (
            isinstance(shard, list)
            and len(shard) == 2
            and all(isinstance(n, int) for n in shard)
            and shard[1] >= 1
            and 0 <= shard[0] < shard[1]
        ):
            await ws.close(code=4010, message=b"Invalid shard.")
            return
        if self.min_shards is not None and (shard is None or shard[1] < self.min_shards):
            await ws.close(code=4011, message=b"Sharding required.")
            return
        shard_id = None if shard is None else shard[0]
        session = "s1" if shard is None else f"s1-{shard[0]}"
        self._sessions[session] = shard_id
        self._shard_counts[session] = 1 if shard is None else shard[1]
        self.sockets[shard_id] = ws
        ours = self.guild_shard(shard)
        self.identify = data
        ready: dict[str, Any] = {
            "v": 10,
            "user": {**self.bot.payload(), "bot": True},
            "session_id": session,
            "guilds": [{"id": self.guild_id, "unavailable": True}] if ours else [],
            "resume_gateway_url": self.gateway_url,
            "application": {"id": self.app_id, "flags": 0},
        }
        if shard is not None:
            ready["shard"] = shard
        if not ours:
            self._seq += 1
            await ws.send_str(json.dumps({"op": 0, "t": "READY", "s": self._seq, "d": ready}))
            await self._notify()
            return
        self._ws = ws
        await self.dispatch("READY", ready)
        await self.dispatch("GUILD_CREATE", self._guild())
        await self._notify()
