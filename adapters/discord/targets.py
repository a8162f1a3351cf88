"""Where a Discord job is drawn: the deferred interaction response, or the bot's status reply."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol

import discord

from adapters.discord import api_calls
from adapters.discord.files import DEFAULT_UPLOAD_LIMIT, Upload, to_files
from adapters.discord.render import sentence
from bot import texts
from bot.models import Requester


class ViewFactory(Protocol):
    """The buttons under a job's result; ``enhance`` adds "Enhance & retry"."""

    def __call__(self, job_id: str, *, enhance: bool = False) -> discord.ui.View: ...


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


def requester_of(user: discord.User | discord.Member, channel_id: int | None) -> Requester:
    """The core's Requester for a Discord user in a channel; a member's roles are its tiers."""
    guild = getattr(user, "guild", None)
    groups: tuple[str, ...] = ()
    if isinstance(user, discord.Member):
        # Everyone holds @everyone: as a tier it would be the user defaults under another name.
        groups = tuple(str(role.id) for role in user.roles if not role.is_default())
    return Requester(
        platform="discord",
        user_id=str(user.id),
        team_id=str(guild.id) if guild is not None else "",
        channel_id=str(channel_id or ""),
        display_name=user.display_name,
        groups=groups,
    )


class Target:
    """A message a job's progress and result are drawn on; posted afresh when it is lost."""

    def __init__(
        self, channel: discord.abc.Messageable, user: discord.abc.User, upload_limit: int
    ) -> None:
        self.channel = channel
        self.user = user
        self.upload_limit = upload_limit
        self.message_id: int | None = None
        # The message posted in the channel once the first one was lost.
        self.posted: discord.Message | None = None
        # Set once the job is admitted: called for each message posted afresh.
        self.on_posted: Linker | None = None

    async def show(self, display: Display) -> int:
        """Replace what the message shows; returns the message id."""
        return await self.repost(display)

    async def fail(self, text: str, view: discord.ui.View | None = None) -> None:
        """Tell the requester the job did not work (``view``: what they can do about it)."""
        await self.show(Display(text, view=view))

    def platform_ref(self) -> dict[str, object]:
        """What a later process needs to find this message again."""
        return {
            "channel_id": str(getattr(self.channel, "id", "") or ""),
            "user_id": str(self.user.id),
        }

    async def repost(self, display: Display) -> int:
        """Show ``display`` in a message of the bot's own in the channel, naming the user.

        A new message is linked to its job before any image in it can be seen: Discord only
        names a message once it exists, so an image goes in with a second call, and a reply to
        the image always finds the job. A retry edits that message instead of posting another.
        """
        addressed = display.addressed_to(self.user)
        if self.posted is not None:
            try:
                self.posted = await self.posted.edit(**addressed.edit_args())
                return self.posted.id
            except discord.NotFound as exc:  # deleted meanwhile: post another
                api_calls.failed_call(exc, "edit_message")
        link = self.on_posted
        first = addressed
        if link is not None and (display.files or display.embed):
            finishing = "📤 " + sentence(texts.FINISHING)
            first = Display(" ".join(filter(None, (addressed.content, finishing))))
        self.posted = await self.channel.send(
            content=first.content,
            embed=first.embed or discord.utils.MISSING,
            files=to_files(first.files),
            view=first.view or discord.utils.MISSING,
        )
        self.message_id = self.posted.id
        if link is not None:
            await link(self.posted.id)
        if first is not addressed:
            self.posted = await self.posted.edit(**addressed.edit_args())
        return self.posted.id


class InteractionTarget(Target):
    """The deferred response of a slash command, button or modal."""

    def __init__(self, interaction: discord.Interaction, message_id: int | None) -> None:
        channel = interaction.client.get_partial_messageable(interaction.channel_id or 0)
        limit = interaction.filesize_limit or DEFAULT_UPLOAD_LIMIT
        super().__init__(channel, interaction.user, limit)
        self.interaction = interaction
        self.message_id = message_id
        self.requester = requester_of(interaction.user, interaction.channel_id)

    async def show(self, display: Display) -> int:
        """Edit the response; in the channel once its token expired or it was deleted."""
        if self.posted is None:
            try:
                message = await self.interaction.edit_original_response(**display.edit_args())
            except discord.HTTPException as exc:
                # 401: the token lives 15 minutes and a long queue can outlast it. 404: someone
                # deleted the message. Either way the channel is where the user can still look.
                if exc.status not in (401, 404) or self.interaction.channel_id is None:
                    raise
                api_calls.failed_call(exc, "edit_webhook_message")
            else:
                self.message_id = message.id
                return message.id
        return await self.repost(display)

    async def fail(self, text: str, view: discord.ui.View | None = None) -> None:
        """Privately: the public "thinking" message goes, an ephemeral one replaces it."""
        if self.posted is None:
            try:
                try:
                    await self.interaction.delete_original_response()
                except discord.NotFound as exc:  # someone deleted it already
                    api_calls.failed_call(exc, "delete_webhook_message")
                await self.interaction.followup.send(
                    text, ephemeral=True, view=view or discord.utils.MISSING
                )
                return
            except discord.HTTPException as exc:
                if exc.status != 401:
                    raise
                api_calls.failed_call(exc, "followup")
        await self.show(Display(text, view=view))  # the token expired: say it in the channel

    def platform_ref(self) -> dict[str, object]:
        """The token and message, while the token lasts; the channel after."""
        interaction = self.interaction
        return {
            **super().platform_ref(),
            "kind": "interaction",
            "application_id": str(interaction.application_id),
            "interaction_token": interaction.token,
            "channel_id": str(interaction.channel_id or ""),
            "message_id": str(self.message_id) if self.message_id else "",
            "created_at": interaction.created_at.timestamp(),
        }


class MessageTarget(Target):
    """The bot's reply to a user's message (reply-to-edit), edited as the job moves."""

    def __init__(self, status: discord.Message, requester: discord.abc.User) -> None:
        guild = status.guild
        limit = guild.filesize_limit if guild is not None else DEFAULT_UPLOAD_LIMIT
        super().__init__(status.channel, requester, limit)
        self.status = status
        self.message_id = status.id

    async def show(self, display: Display) -> int:
        """Edit the reply; if someone deleted it, post again, naming the user."""
        if self.posted is None:
            try:
                self.status = await self.status.edit(**display.edit_args())
                return self.status.id
            except discord.NotFound as exc:  # someone deleted the reply
                api_calls.failed_call(exc, "edit_message")
        return await self.repost(display)

    def platform_ref(self) -> dict[str, object]:
        """The reply's channel and id."""
        return {
            **super().platform_ref(),
            "kind": "message",
            "channel_id": str(self.status.channel.id),
            "message_id": str(self.message_id),
            "created_at": self.status.created_at.timestamp(),
        }
