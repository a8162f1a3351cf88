"""What each Discord action does: /imagine, reply-to-edit, the context menu, buttons and modals."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Sequence

import discord

from adapters import discord_render as render
from adapters.discord_files import AttachmentFetcher, is_image, split_mask
from adapters.discord_jobs import (
    InteractionTarget,
    JobRunner,
    MessageTarget,
    ViewFactory,
    logger,
    requester_of,
)
from bot.app import App
from bot.errors import AttachmentRejected, JobNotFound
from bot.models import FINAL_STATUSES, ImageRequest, JobRecord, Requester, SourceImage

MENU_MEMORY = 500
MENTION = re.compile(r"<@!?(\d+)>")
NOT_HERE = "⚠️ I'm not set up to make images in this channel."
NO_IMAGE = "⚠️ That message has no image I can edit."
CANT_SEE = (
    "⚠️ I can't see the images in that message: this bot runs without Discord's Message "
    "Content intent. Use the message's **Apps → Edit image** menu instead."
)
NO_PROMPT = "Tell me what to change: reply to the image with a description of the edit."


class DiscordImagine:
    """The adapter's behaviour, shared by commands, buttons, modals and message events."""

    def __init__(self, app: App, result_view: ViewFactory) -> None:
        self.app = app
        settings = app.settings
        self.fetcher = AttachmentFetcher(
            settings.discord_api_base_url, settings.max_attachment_bytes
        )
        self.runner = JobRunner(app, result_view)
        # Channel ids or names; "#art" and "art" mean the same channel.
        self.allowed_channels = frozenset(c.lstrip("#") for c in settings.discord_allowed_channels)
        # The "Edit image" menu sees the whole message; a later fetch may not (no content intent).
        self._menu_targets: dict[int, list[discord.Attachment]] = {}

    def remember_menu_target(self, message: discord.Message) -> None:
        """Keep the attachments of a message the "Edit image" menu was used on."""
        if len(self._menu_targets) >= MENU_MEMORY:
            self._menu_targets.pop(next(iter(self._menu_targets)))
        self._menu_targets[message.id] = list(message.attachments)

    async def aclose(self) -> None:
        """Release the download session."""
        await self.fetcher.aclose()

    def channel_allowed(self, channel: object) -> bool:
        """True when no channel list is set, or the channel (or a thread's parent) is on it."""
        if not self.allowed_channels:
            return True
        names = {str(getattr(channel, "id", "")), str(getattr(channel, "name", ""))}
        parent = getattr(channel, "parent", None)
        if parent is not None:
            names |= {str(parent.id), str(getattr(parent, "name", ""))}
        names.discard("")
        return bool(names & self.allowed_channels)

    async def _refuse_channel(self, interaction: discord.Interaction) -> bool:
        if self.channel_allowed(interaction.channel):
            return False
        await interaction.response.send_message(NOT_HERE, ephemeral=True)
        return True

    async def _defer(self, interaction: discord.Interaction) -> InteractionTarget | None:
        # Acknowledge before anything slow (downloads, the queue): Discord allows 3 seconds.
        try:
            callback = await interaction.response.defer(thinking=True)
        except discord.NotFound as exc:
            # 10062: the 3 seconds passed (a stalled event loop or network). Discord has already
            # told the user the app did not respond; nothing was started, so nothing is lost.
            logger.warning("interaction %s could not be acknowledged: %s", interaction.id, exc)
            return None
        message_id = callback.message_id if callback is not None else None
        return InteractionTarget(interaction, message_id)

    async def _begin(
        self, interaction: discord.Interaction
    ) -> tuple[InteractionTarget, Requester] | None:
        """Refuse other channels, then acknowledge; None when nothing should start."""
        if await self._refuse_channel(interaction):
            return None
        target = await self._defer(interaction)
        if target is None:
            return None
        return target, requester_of(interaction.user, interaction.channel_id)

    # --- /imagine --------------------------------------------------------------------------------
    async def imagine(
        self,
        interaction: discord.Interaction,
        prompt: str,
        *,
        attachments: Sequence[discord.Attachment],
        mask: discord.Attachment | None,
        **options: object,
    ) -> None:
        """The slash command: generate, or edit the attached images."""
        begun = await self._begin(interaction)
        if begun is None:
            return
        target, requester = begun

        async def build() -> ImageRequest:
            for attachment in (*attachments, *([mask] if mask else [])):
                if not is_image(attachment):
                    raise AttachmentRejected(attachment.filename, "it is not an image")
            sources = await self.fetcher.fetch_all(attachments)
            mask_source = await self.fetcher.fetch_attachment(mask) if mask else None
            return ImageRequest(
                requester=requester,
                prompt=prompt,
                options=self.app.service.options(**options),
                sources=tuple(sources),
                mask=mask_source,
            )

        await self.runner.run(
            target, prompt=prompt, requester_label=interaction.user.mention, build=build
        )

    # --- buttons ---------------------------------------------------------------------------------
    async def job_or_refuse(
        self, interaction: discord.Interaction, job_id: str, *, images: bool = False
    ) -> JobRecord | None:
        """The button's job; None after saying privately that the store lost it (or its images)."""
        job = await self.app.store.get_job(job_id)
        if job is not None and (not images or await self.app.store.job_images(job_id)):
            return job
        await interaction.response.send_message(
            render.error_message(JobNotFound(job_id)), ephemeral=True
        )
        return None

    async def regenerate(self, interaction: discord.Interaction, job_id: str) -> None:
        """🔁: the same request again, counted against whoever clicked."""
        if await self._refuse_channel(interaction):
            return
        job = await self.job_or_refuse(interaction, job_id)
        if job is None:
            return
        target = await self._defer(interaction)
        if target is None:
            return
        requester = requester_of(interaction.user, interaction.channel_id)

        async def build() -> ImageRequest:
            return await self.app.service.regenerate_request(job_id, requester)

        await self.runner.run(
            target, prompt=job.prompt, requester_label=interaction.user.mention, build=build
        )

    async def delete(self, interaction: discord.Interaction, job_id: str) -> None:
        """🗑: the requester or a member who can manage messages removes the result."""
        job = await self.app.store.get_job(job_id)
        # Without the job (data wiped), the result's own embed still says who asked.
        owner = job.requester.user_id if job is not None else requested_by(interaction.message)
        is_owner = owner == str(interaction.user.id)
        if not (is_owner or interaction.permissions.manage_messages):
            await interaction.response.send_message(
                "⚠️ Only the person who asked for this image, or someone who can manage "
                "messages, can delete it.",
                ephemeral=True,
            )
            return
        await interaction.response.defer()
        if interaction.message is not None:
            # Two clicks at once, or a moderator was quicker: either way it is gone.
            with contextlib.suppress(discord.NotFound):
                await interaction.message.delete()

    # --- modals (Edit button, context menu) -------------------------------------------------------
    async def edit_job(self, interaction: discord.Interaction, job_id: str, prompt: str) -> None:
        """The Edit modal of a result was submitted: edit that job's image."""
        begun = await self._begin(interaction)
        if begun is None:
            return
        target, requester = begun

        async def build() -> ImageRequest:
            return await self.app.service.edit_request(job_id, requester, prompt)

        await self.runner.run(
            target, prompt=prompt, requester_label=interaction.user.mention, build=build
        )

    async def edit_message_images(
        self, interaction: discord.Interaction, channel_id: int, message_id: int, prompt: str
    ) -> None:
        """The context-menu modal was submitted: edit the images of any message."""
        begun = await self._begin(interaction)
        if begun is None:
            return
        target, requester = begun
        job = await self.app.store.job_for_message("discord", str(message_id))

        async def build() -> ImageRequest:
            if job is not None:
                return await self.app.service.edit_request(job.id, requester, prompt)
            attachments = self._menu_targets.pop(message_id, None)
            if attachments is None:
                # Opened before a restart: fetch it (only complete with the content intent).
                channel = interaction.client.get_partial_messageable(channel_id)
                try:
                    attachments = (await channel.fetch_message(message_id)).attachments
                except discord.NotFound:
                    raise JobNotFound() from None
            sources, mask = split_mask(attachments)
            if not sources:
                raise AttachmentRejected(
                    "that message", "I can't see an image in it any more; use the menu again"
                )
            return ImageRequest(
                requester=requester,
                prompt=prompt,
                options=self.app.service.options(),
                sources=tuple(await self.fetcher.fetch_all(sources)),
                mask=await self.fetcher.fetch_attachment(mask) if mask else None,
            )

        await self.runner.run(
            target, prompt=prompt, requester_label=interaction.user.mention, build=build
        )

    # --- reply to edit ---------------------------------------------------------------------------
    async def on_message(self, message: discord.Message, me: discord.ClientUser) -> None:
        """A reply to a result edits it; one that mentions the bot edits any message's images."""
        reference = message.reference
        if message.author.bot or reference is None or reference.message_id is None:
            return
        if message.type not in (discord.MessageType.reply, discord.MessageType.default):
            return
        if not self.channel_allowed(message.channel):
            return
        mentioned = any(user.id == me.id for user in message.mentions)
        job = await self.app.store.job_for_message("discord", str(reference.message_id))
        if job is not None and job.status not in FINAL_STATUSES:
            # Its message is linked from the start, so the progress (and previews) can be
            # replied to; there is no image to edit until it is done.
            if await self.app.store.claim_event(f"discord:message:{message.id}"):
                await message.reply(render.still_making(), mention_author=False)
            return
        if job is not None and job.status != "succeeded":
            job = None  # a failure message: nothing of it to edit
        referenced: discord.Message | None = None
        if job is None:
            if not mentioned:
                return
            referenced = await self._referenced(message, reference)
            if referenced is None or not split_mask(referenced.attachments)[0]:
                hidden = referenced is not None and not self._sees_content(referenced, me)
                await message.reply(CANT_SEE if hidden else NO_IMAGE, mention_author=False)
                return
        prompt = strip_mention(message.content, me.id)
        if not prompt:
            if mentioned:
                await message.reply(NO_PROMPT, mention_author=False)
            return
        if not await self.app.store.claim_event(f"discord:message:{message.id}"):
            return
        try:
            status = await message.reply(render.status_working(prompt), mention_author=False)
        except (discord.Forbidden, discord.NotFound) as exc:
            # No job was admitted yet; without access to the channel there is nobody to tell.
            logger.warning("could not answer message %s: %s", message.id, exc)
            return
        target = MessageTarget(status, message.author)
        requester = requester_of(message.author, message.channel.id)
        extra, mask = split_mask(message.attachments)

        async def build() -> ImageRequest:
            extra_sources = await self.fetcher.fetch_all(extra)
            mask_source = await self.fetcher.fetch_attachment(mask) if mask else None
            if job is not None:
                return await self.app.service.edit_request(
                    job.id, requester, prompt, extra_sources, mask_source
                )
            assert referenced is not None
            theirs: list[SourceImage] = await self.fetcher.fetch_all(
                split_mask(referenced.attachments)[0]
            )
            return ImageRequest(
                requester=requester,
                prompt=prompt,
                options=self.app.service.options(),
                sources=(*theirs, *extra_sources),
                mask=mask_source,
            )

        await self.runner.run(
            target, prompt=prompt, requester_label=message.author.mention, build=build
        )

    def _sees_content(self, message: discord.Message, me: discord.ClientUser) -> bool:
        """Whether Discord shows this bot the message's content and attachments."""
        return (
            self.app.settings.discord_message_content_intent
            or message.author.id == me.id
            or any(user.id == me.id for user in message.mentions)
        )

    @staticmethod
    async def _referenced(
        message: discord.Message, reference: discord.MessageReference
    ) -> discord.Message | None:
        if isinstance(reference.resolved, discord.Message):
            return reference.resolved
        try:
            return await message.channel.fetch_message(reference.message_id or 0)
        except discord.HTTPException:
            logger.info("could not fetch the message %s was replying to", message.id)
            return None


def requested_by(message: discord.Message | None) -> str | None:
    """The user id a result's "Requested by" embed field names, if any."""
    for embed in message.embeds if message is not None else ():
        for field in embed.fields:
            found = MENTION.fullmatch(field.value or "")
            if field.name == render.REQUESTED_BY and found:
                return found[1]
    return None


def strip_mention(content: str, user_id: int) -> str:
    """The message text without mentions of the bot."""
    return re.sub(rf"<@!?{user_id}>", "", content).strip()
