"""/imagine-usage, /imagine-history and /imagine-admin in Slack, and the user groups tiers use.

The answers are written once in ``bot.spend_commands``; this module finds Slack's users,
channels and user groups for them and shows each answer only to the person who asked.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from slack_sdk.errors import SlackApiError
from slack_sdk.webhook.async_client import AsyncWebhookClient

from bot.errors import InvalidRequest
from bot.models import Requester
from bot.spend_commands import Answer

if TYPE_CHECKING:
    from adapters.slack.presenter import Reply
    from adapters.slack.rate import PacedWebClient
    from bot.models import JobRecord
    from bot.service import ImageService

logger = logging.getLogger("adapters.slack")

Json = dict[str, Any]

# How long the user groups and their members are trusted before usergroups.list is asked again.
GROUPS_TTL = 300.0
# Channels found by conversations.info are remembered as long (``show`` checks every channel).
CHANNELS_TTL = 300.0
# Block Kit section block: "text … Maximum length for the text in this field is 3000
# characters"; a message holds "up to 50 blocks" (docs.slack.dev/reference/block-kit/blocks/
# section-block, methods/chat.postEphemeral).
SECTION_TEXT = 3000
MESSAGE_BLOCKS = 50
# The plain ``text`` sent next to the blocks is only the notification's fallback; Slack asks for
# messages "under 4,000" characters there, so it is kept well below that.
FALLBACK_TEXT = 3000

_USER = re.compile(r"^<@([UW][A-Z0-9]+)(?:\|[^>]*)?>$|^([UW][A-Z0-9]{2,})$")
_CHANNEL = re.compile(r"^<#([CGD][A-Z0-9]+)(?:\|[^>]*)?>$|^([CGD][A-Z0-9]{2,})$")
_GROUP = re.compile(r"^<!subteam\^(S[A-Z0-9]+)(?:\|[^>]*)?>$|^(S[A-Z0-9]{2,})$")


@dataclass(frozen=True)
class UserGroup:
    """One Slack user group: its id, its @handle and its members."""

    id: str
    handle: str
    users: frozenset[str]


class UserGroups:
    """The workspace's user groups with their members, from one usergroups.list per refresh."""

    def __init__(self, client: PacedWebClient, ttl: float = GROUPS_TTL) -> None:
        self.client = client
        self.ttl = ttl
        self._groups: dict[str, UserGroup] = {}
        self._fetched_at: float | None = None
        self._lock = asyncio.Lock()

    async def all(self) -> Mapping[str, UserGroup]:
        """Every enabled user group by id (empty when Slack won't list them)."""
        if self._fresh():
            return self._groups
        async with self._lock:  # requests arriving together share one call
            if not self._fresh():
                self._groups = await self._fetch()
                self._fetched_at = time.monotonic()
        return self._groups

    def _fresh(self) -> bool:
        return self._fetched_at is not None and time.monotonic() - self._fetched_at < self.ttl

    async def _fetch(self) -> dict[str, UserGroup]:
        try:
            answer = await self.client.usergroups_list(include_users=True)
        except SlackApiError as exc:
            # Free workspaces have no user groups and an app without usergroups:read can't see
            # them; either way tier rules can't apply. Kept empty until the next refresh.
            logger.warning("can't list Slack user groups: %s", exc.response.get("error"))
            return {}
        found: dict[str, UserGroup] = {}
        for group in answer.get("usergroups") or []:
            if not isinstance(group, dict) or not group.get("id") or group.get("date_delete"):
                continue
            users = frozenset(str(u) for u in group.get("users") or [])
            found[str(group["id"])] = UserGroup(str(group["id"]), str(group.get("handle")), users)
        return found

    async def of(self, user_id: str) -> tuple[str, ...]:
        """The ids of the groups ``user_id`` belongs to."""
        groups = await self.all()
        return tuple(sorted(g.id for g in groups.values() if user_id in g.users))


async def tier_groups(service: ImageService, groups: UserGroups, user_id: str) -> tuple[str, ...]:
    """A user's groups when some Slack tier has rules; otherwise none, and no call is made."""
    if not (await service.policy.current()).has_tiers("slack"):
        return ()
    return await groups.of(user_id)


def message_link(workspace_url: str, message_key: str) -> str | None:
    """``https://<workspace>.slack.com/archives/C123/p1700000000000100`` for ``C123:<ts>``."""
    channel, _, ts = message_key.partition(":")
    if not workspace_url or not channel or not ts:
        return None
    return f"{workspace_url.rstrip('/')}/archives/{channel}/p{ts.replace('.', '')}"


class SlackDirectory:
    """``bot.spend_commands.Directory`` for one Slack workspace."""

    def __init__(
        self,
        client: PacedWebClient,
        service: ImageService,
        groups: UserGroups,
        channels: dict[str, float],
        *,
        team_id: str,
        workspace_url: str,
    ) -> None:
        self.client = client
        self.service = service
        self.groups = groups
        self.channels = channels
        self.team_id = team_id
        self.workspace_url = workspace_url

    async def find_user(self, text: str) -> Requester | None:
        """A user by mention (``<@U123|name>``, ``<@U123>``) or id, with their user groups."""
        word = text.strip()
        match = _USER.match(word)
        if match is None:
            raise InvalidRequest(
                "Name the person with a mention picked from Slack's list as you type @ (or "
                "their member id, like U012AB3CD); I can't look people up by name."
            )
        user_id = match.group(1) or match.group(2)
        try:
            answer = await self.client.users_info(user=user_id)
        except SlackApiError as exc:
            if exc.response.get("error") in ("user_not_found", "user_not_visible"):
                return None
            raise _lookup_failed(exc, "users:read") from None
        person: Mapping[str, Any] = answer.get("user") or {}
        name = str(person.get("name") or user_id)
        team = str(person.get("team_id") or self.team_id)
        groups = await tier_groups(self.service, self.groups, user_id)
        return Requester("slack", user_id, team, "", name, groups)

    async def find_channel(self, text: str) -> str | None:
        """A channel by link (``<#C123|name>``, ``<#C123>``) or id, if this workspace has it."""
        word = text.strip()
        match = _CHANNEL.match(word)
        if match is None:
            raise InvalidRequest(
                "Name the channel with a link picked from Slack's list as you type # (or its "
                "id, like C012AB3CD)."
            )
        channel = match.group(1) or match.group(2)
        seen = self.channels.get(channel)
        if seen is not None and time.monotonic() - seen < CHANNELS_TTL:
            return channel
        try:
            await self.client.conversations_info(channel=channel)
        except SlackApiError as exc:
            if exc.response.get("error") == "channel_not_found":
                return None
            raise _lookup_failed(exc, "channels:read and groups:read") from None
        self.channels[channel] = time.monotonic()
        return channel

    async def find_tier(self, text: str) -> str | None:
        """A user group by mention (``<!subteam^S123|@handle>``), id or ``@handle``."""
        word = text.strip()
        groups = await self.groups.all()
        match = _GROUP.match(word)
        if match is not None:
            group_id = match.group(1) or match.group(2)
            return group_id if group_id in groups else None
        handle = word.removeprefix("@").lower()
        return next((g.id for g in groups.values() if g.handle.lower() == handle), None)

    def tier_name(self, tier_id: str) -> str:
        """The group's mention, which Slack shows as its @handle."""
        return f"<!subteam^{tier_id}>"

    def message_link(self, job: JobRecord, message_key: str) -> str | None:
        """A permalink built from the workspace URL auth.test gave at start-up."""
        return message_link(self.workspace_url, message_key)


def _lookup_failed(exc: SlackApiError, scopes: str) -> Exception:
    """A lookup Slack refused: the app's missing scope is something the installer can fix."""
    error = exc.response.get("error")
    if error == "missing_scope":
        return InvalidRequest(
            f"Slack won't let me look that up: the app needs the {scopes} permission. Ask a "
            "workspace admin to reinstall it from the current manifest. Nothing was changed."
        )
    return exc


# --- showing an answer to one person ---------------------------------------------------------
def split_text(text: str, most: int = SECTION_TEXT) -> list[str]:
    """``text`` in pieces of at most ``most`` characters, cut between lines where possible."""
    pieces: list[str] = []
    current = ""
    for line in text.split("\n"):
        while len(line) > most:  # one very long line: cut at a space, else anywhere
            cut = line.rfind(" ", 0, most)
            cut = cut if cut > 0 else most
            if current:
                pieces.append(current)
                current = ""
            pieces.append(line[:cut])
            line = line[cut:].lstrip(" ")
        joined = f"{current}\n{line}" if current else line
        if len(joined) > most:
            pieces.append(current)
            current = line
        else:
            current = joined
    if current or not pieces:
        pieces.append(current)
    return [p for p in pieces if p.strip()] or [" "]


def answer_messages(answer: Answer) -> list[tuple[str, list[Json]]]:
    """The messages (fallback text, blocks) that show ``answer``; each within Slack's limits."""
    text = f":warning: {answer.text}" if answer.refused else answer.text
    pieces = split_text(text)
    messages: list[tuple[str, list[Json]]] = []
    for start in range(0, len(pieces), MESSAGE_BLOCKS):
        chunk = pieces[start : start + MESSAGE_BLOCKS]
        content: list[Json] = [
            {"type": "section", "text": {"type": "mrkdwn", "text": piece}} for piece in chunk
        ]
        messages.append((chunk[0][:FALLBACK_TEXT], content))
    return messages


async def tell_answer(client: PacedWebClient, reply: Reply, answer: Answer) -> None:
    """Show ``answer`` to the asker only: ephemeral, else through the command's response URL."""
    via_url = False
    for text, content in answer_messages(answer):
        if not via_url:
            try:
                await client.chat_postEphemeral(
                    channel=reply.channel,
                    user=reply.user,
                    text=text,
                    blocks=content,
                    thread_ts=reply.thread_ts,
                )
                continue
            except SlackApiError as exc:
                if not reply.response_url:
                    logger.warning(
                        "couldn't tell %s in %s: %s",
                        reply.user,
                        reply.channel,
                        exc.response.get("error"),
                    )
                    return
                via_url = True  # outside channels the bot is in, only the URL reaches them
        response = await AsyncWebhookClient(str(reply.response_url)).send(
            text=text, blocks=content, response_type="ephemeral"
        )
        if response.status_code != 200:
            logger.warning(
                "couldn't tell %s via response_url: HTTP %s", reply.user, response.status_code
            )
            return
