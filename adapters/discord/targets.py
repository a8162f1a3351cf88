"""Where a Discord job is drawn: the deferred interaction response, or the bot's status reply."""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol

import discord

from adapters.discord.files import DEFAULT_UPLOAD_LIMIT, Upload, to_files
from adapters.discord.render import sentence
from bot import texts
from bot.models import Requester

ViewFactory = Callable[[str], discord.ui.View]
# Links a message to the job it shows (for replies and buttons).
Linker = Callable[[int], Awaitable[None]]


@dataclass(frozen=True)
class Display:
    """Everything a job's message shows; each edit replaces all of it."""

    content: str | None = None
    embed: discord.Embed | None = None
    files: Sequence[Upload] = ()
    view: discord.ui.View | None = None

    def addressed_to(self, user: discord.abc.User) -> Display:
        """The same, naming the user first (for messages posted where nobody knows whose it is)."""
        return replace(self, content="\n".join(filter(None, (user.mention, self.content))))

    def edit_args(self) -> dict[str, Any]:
        """Keyword arguments for discord.py's message edits."""
        return {
            "content": self.content,
            "embed": self.embed,
            "attachments": to_files(self.files),
            "view": self.view,
        }


class Target(Protocol):
    """A message a job's progress and result are drawn on."""

    upload_limit: int
    message_id: int | None
    # Set once the job is admitted: called for each message the target posts afresh.
    on_posted: Linker | None

    async def show(self, display: Display) -> int:
        """Replace what the message shows; returns the message id."""
        ...

    async def fail(self, text: str) -> None:
        """Tell the requester the job did not work."""
        ...

    def platform_ref(self) -> dict[str, object]:
        """What a later process needs to find this message again."""
        ...


def requester_of(user: discord.User | discord.Member, channel_id: int | None) -> Requester:
    """The core's Requester for a Discord user in a channel."""
    guild = getattr(user, "guild", None)
    return Requester(
        platform="discord",
        user_id=str(user.id),
        team_id=str(guild.id) if guild is not None else "",
        channel_id=str(channel_id or ""),
        display_name=user.display_name,
    )


async def post_in(channel: discord.abc.Messageable, display: Display) -> discord.Message:
    """Post ``display`` as a new message in ``channel``."""
    return await channel.send(
        content=display.content,
        embed=display.embed or discord.utils.MISSING,
        files=to_files(display.files),
        view=display.view or discord.utils.MISSING,
    )


async def post_linked(
    channel: discord.abc.Messageable,
    display: Display,
    link: Linker | None,
    keep: Callable[[discord.Message], None],
) -> discord.Message:
    """Post ``display`` afresh, linked to its job before any image in it can be seen.

    Discord only names a message once it exists, so an image goes in with a second call: a reply
    to the image then always finds the job. ``keep`` learns the message as soon as it exists, so
    a retry edits it instead of posting another.
    """
    if link is None or not (display.files or display.embed):
        message = await post_in(channel, display)
        keep(message)
        if link is not None:
            await link(message.id)
        return message
    posting = " ".join(filter(None, (display.content, "📤 " + sentence(texts.FINISHING))))
    text = posting if display.embed else display.content
    message = await post_in(channel, Display(content=text))
    keep(message)
    await link(message.id)
    message = await message.edit(**display.edit_args())
    keep(message)
    return message


class InteractionTarget:
    """The deferred response of a slash command, button or modal."""

    def __init__(self, interaction: discord.Interaction, message_id: int | None) -> None:
        self.interaction = interaction
        self.message_id = message_id
        self.upload_limit = interaction.filesize_limit or DEFAULT_UPLOAD_LIMIT
        self.fallback: discord.Message | None = None
        self.on_posted: Linker | None = None

    async def show(self, display: Display) -> int:
        if self.fallback is None:
            try:
                message = await self.interaction.edit_original_response(**display.edit_args())
            except discord.HTTPException as exc:
                # 401: the token lives 15 minutes and a long queue can outlast it. 404: someone
                # deleted the message. Either way the channel is where the user can still look.
                if exc.status not in (401, 404) or self.interaction.channel_id is None:
                    raise
            else:
                self.message_id = message.id
                return message.id
        elif await self._edit_fallback(display):
            return self.fallback.id
        channel = self.interaction.client.get_partial_messageable(self.interaction.channel_id or 0)
        posted = await post_linked(
            channel, display.addressed_to(self.interaction.user), self.on_posted, self._keep
        )
        return posted.id

    def _keep(self, message: discord.Message) -> None:
        self.fallback = message
        self.message_id = message.id

    async def _edit_fallback(self, display: Display) -> bool:
        """Edit the message posted in the channel; False when it was deleted meanwhile."""
        assert self.fallback is not None
        try:
            self.fallback = await self.fallback.edit(
                **display.addressed_to(self.interaction.user).edit_args()
            )
        except discord.NotFound:
            return False
        return True

    async def fail(self, text: str) -> None:
        if self.fallback is None:
            # Errors are private: the public "thinking" message goes, an ephemeral one replaces it.
            try:
                with contextlib.suppress(discord.NotFound):
                    await self.interaction.delete_original_response()
                await self.interaction.followup.send(text, ephemeral=True)
                return
            except discord.HTTPException as exc:
                if exc.status != 401:
                    raise
        await self.show(Display(text))  # the token expired: say it in the channel

    def platform_ref(self) -> dict[str, object]:
        interaction = self.interaction
        return {
            "kind": "interaction",
            "application_id": str(interaction.application_id),
            "interaction_token": interaction.token,
            "channel_id": str(interaction.channel_id or ""),
            "message_id": str(self.message_id) if self.message_id else "",
            "user_id": str(interaction.user.id),
            "created_at": interaction.created_at.timestamp(),
        }


class MessageTarget:
    """The bot's reply to a user's message (reply-to-edit), edited as the job moves."""

    def __init__(self, status: discord.Message, requester: discord.abc.User) -> None:
        self.status = status
        self.message_id: int | None = status.id
        self.requester = requester
        self.reposted = False
        self.on_posted: Linker | None = None
        guild = status.guild
        self.upload_limit = guild.filesize_limit if guild is not None else DEFAULT_UPLOAD_LIMIT

    async def show(self, display: Display) -> int:
        addressed = display.addressed_to(self.requester)
        try:
            self.status = await self.status.edit(
                **(addressed if self.reposted else display).edit_args()
            )
        except discord.NotFound:
            # Someone deleted the bot's reply: post again, naming the user, so the result lands.
            self.reposted = True
            await post_linked(self.status.channel, addressed, self.on_posted, self._keep)
        return self.status.id

    def _keep(self, message: discord.Message) -> None:
        self.status = message
        self.message_id = message.id

    async def fail(self, text: str) -> None:
        await self.show(Display(text))

    def platform_ref(self) -> dict[str, object]:
        return {
            "kind": "message",
            "channel_id": str(self.status.channel.id),
            "message_id": str(self.status.id),
            "user_id": str(self.requester.id),
            "created_at": self.status.created_at.timestamp(),
        }
