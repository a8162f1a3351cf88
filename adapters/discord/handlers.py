"""What each Discord action does: /imagine, reply-to-edit, the context menu, buttons and modals."""

from __future__ import annotations

import logging
import re

import discord

from adapters.discord import api_calls, render
from adapters.discord.files import downloader, remote_all
from adapters.discord.presenter import DiscordPresenter, progress_budget
from adapters.discord.render import MARKUP, REQUESTED_BY, status, warning
from adapters.discord.targets import (
    InteractionTarget,
    MessageTarget,
    Target,
    ViewFactory,
    requester_of,
)
from bot import texts
from bot.app import App
from bot.commands import Command, Edit, MessageRef, RemoteFile, Retry, split_mask
from bot.errors import JobNotFound, NotAllowed, UserFacingError
from bot.models import JobRecord
from bot.presenting import JobTasks, JobView, run_job

logger = logging.getLogger("adapters.discord")

MENU_MEMORY = 500
MENTION = re.compile(r"<@!?(\d+)>")
# Who else may delete a result, in the words of Discord's permission.
MODERATORS = "someone who can manage messages"
STILL_REPHRASING = "I'm still rewording that prompt; it will appear here in a moment."


def ref(message_id: int) -> MessageRef:
    """The core's name for a Discord message."""
    return MessageRef("discord", str(message_id))


class DiscordImagine:
    """The adapter's behaviour, shared by commands, buttons, modals and message events."""

    def __init__(self, app: App, result_view: ViewFactory) -> None:
        self.app = app
        self.service = app.service
        self.result_view = result_view
        self.files = downloader(app.settings)
        self.budget = progress_budget()
        self.tasks = JobTasks()
        # Channel ids or names; "#art" and "art" mean the same channel.
        self.allowed_channels = frozenset(
            c.lstrip("#") for c in app.settings.discord_allowed_channels
        )
        # The "Edit image" menu sees the whole message; a later fetch may not (no content intent).
        self._menu_targets: dict[int, list[discord.Attachment]] = {}
        # (blocked job, user) whose rewording is being asked: a second click would pay twice.
        self._rephrasing: set[tuple[str, int]] = set()

    def remember_menu_target(self, message: discord.Message) -> None:
        """Keep the attachments of a message the "Edit image" menu was used on."""
        if len(self._menu_targets) >= MENU_MEMORY:
            self._menu_targets.pop(next(iter(self._menu_targets)))
        self._menu_targets[message.id] = list(message.attachments)

    async def shutdown(self) -> None:
        """Stop the jobs in flight; each tells its user it was interrupted (while we still can)."""
        await self.tasks.shutdown()
        self.budget.close()

    async def aclose(self) -> None:
        """Release the download connections."""
        await self.files.aclose()

    async def run(self, target: Target, command: Command) -> str | None:
        """Run ``command`` through the core, drawn on ``target``; the job id if delivered."""
        prompt_help = self.service.prompt_help is not None
        presenter = DiscordPresenter(target, self.result_view, prompt_help=prompt_help)
        with self.tasks.tracked():
            return await run_job(
                self.service,
                command,
                presenter,
                files=self.files,
                pacer=api_calls.MeteredPacer(self.budget.channel(presenter.channel_id)),
            )

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

    async def begin(
        self, interaction: discord.Interaction, *, job_id: str | None = None, images: bool = False
    ) -> InteractionTarget | None:
        """Refuse other channels, a lost job (or its ``images``), then acknowledge; None: stop."""
        if not self.channel_allowed(interaction.channel):
            await interaction.response.send_message(warning(texts.NOT_HERE), ephemeral=True)
            return None
        if (
            job_id is not None
            and await self.job_or_refuse(interaction, job_id, images=images) is None
        ):
            return None
        # Acknowledge before anything slow (downloads, the queue): Discord allows 3 seconds.
        try:
            callback = await interaction.response.defer(thinking=True)
        except discord.NotFound as exc:
            api_calls.failed_call(exc, "interaction_response")
            # 10062: the 3 seconds passed (a stalled event loop or network). Discord has already
            # told the user the app did not respond; nothing was started, so nothing is lost.
            logger.warning("interaction %s could not be acknowledged: %s", interaction.id, exc)
            return None
        return InteractionTarget(interaction, callback.message_id if callback else None)

    async def job_or_refuse(
        self, interaction: discord.Interaction, job_id: str, *, images: bool = False
    ) -> JobRecord | None:
        """The button's job; None after saying privately that the store lost it (or its images)."""
        job = await self.service.get_job(job_id)
        missing: UserFacingError = JobNotFound(job_id)
        try:
            if job is not None and (not images or await self.service.has_images(job_id)):
                return job
        except UserFacingError as exc:  # its images were pruned: say so in those words
            missing = exc
        gone = warning(texts.refusal(missing, MARKUP))
        await interaction.response.send_message(gone, ephemeral=True)
        return None

    async def prompt_help_or_refuse(self, interaction: discord.Interaction) -> bool:
        """True when prompt help is on; else says so privately, before anything is started."""
        if self.service.prompt_help is not None:
            return True
        await interaction.response.send_message(warning(texts.NO_PROMPT_HELP), ephemeral=True)
        return False

    # --- after a safety block: Rephrase and retry, then Send it or Never mind --------------------
    async def rephrase(self, interaction: discord.Interaction, job_id: str) -> None:
        """Prompt help rewords a blocked prompt (charged); shown privately until it is sent."""
        if not self.channel_allowed(interaction.channel):
            await interaction.response.send_message(warning(texts.NOT_HERE), ephemeral=True)
            return
        asking = (job_id, interaction.user.id)
        if asking in self._rephrasing:
            await interaction.response.send_message(warning(STILL_REPHRASING), ephemeral=True)
            return
        self._rephrasing.add(asking)
        try:
            try:
                await interaction.response.defer(ephemeral=True, thinking=True)
            except discord.NotFound as exc:  # 10062: too late to answer; nothing was asked
                api_calls.failed_call(exc, "interaction_response")
                logger.warning("interaction %s could not be acknowledged: %s", interaction.id, exc)
                return
            clicker = requester_of(interaction.user, interaction.channel_id)
            try:
                suggestion = await self.service.rephrase(job_id, clicker)
            except UserFacingError as exc:
                refusal = warning(texts.refusal(exc, MARKUP))
                await interaction.followup.send(refusal, ephemeral=True)
                return
        finally:
            self._rephrasing.discard(asking)
        await interaction.followup.send(
            render.SUGGESTION_HEADER,
            embed=render.suggestion_embed(suggestion.prompt),
            view=render.suggestion_view(job_id, suggestion.id),
            ephemeral=True,
        )

    async def send_suggestion(
        self, interaction: discord.Interaction, job_id: str, suggestion_id: str
    ) -> None:
        """ "Send it": the blocked job again with the reworded prompt, as a new job in public."""
        if not self.channel_allowed(interaction.channel):
            await interaction.response.send_message(warning(texts.NOT_HERE), ephemeral=True)
            return
        clicker = requester_of(interaction.user, interaction.channel_id)
        suggestion = await self.service.get_job(suggestion_id)
        refusal: UserFacingError | None = None
        if suggestion is None or suggestion.parent_job_id != job_id:
            refusal = JobNotFound(suggestion_id)
        elif suggestion.requester.key != clicker.key:
            refusal = NotAllowed(texts.ONLY_OWNER_REPHRASES)
        if refusal is not None:
            words = warning(texts.refusal(refusal, MARKUP))
            await interaction.response.send_message(words, ephemeral=True)
            return
        # The private message keeps its buttons: a second press must not make it twice.
        if not await self.service.first_time(f"discord:suggestion:{suggestion_id}"):
            await interaction.response.send_message(warning(render.ALREADY_SENT), ephemeral=True)
            return
        target = await self.begin(interaction, job_id=job_id)
        if target is not None:
            await self.run(target, Retry(target.requester, job_id, suggestion_id=suggestion_id))

    async def drop_suggestion(self, interaction: discord.Interaction) -> None:
        """ "Never mind": the private message says nothing was sent, and loses its buttons."""
        await interaction.response.edit_message(content=render.NOTHING_SENT, embed=None, view=None)

    async def delete(self, interaction: discord.Interaction, job_id: str) -> None:
        """🗑: the requester or a member who can manage messages removes the result."""
        job = await self.service.get_job(job_id)
        # Without the job (data wiped), the result's own embed still says who asked.
        owner = job.requester.user_id if job is not None else requested_by(interaction.message)
        if not (owner == str(interaction.user.id) or interaction.permissions.manage_messages):
            refusal = (
                texts.only_owner_deletes(owner, MODERATORS, MARKUP)
                if owner is not None
                else texts.refusal(JobNotFound(job_id), MARKUP)
            )
            await interaction.response.send_message(warning(refusal), ephemeral=True)
            return
        await interaction.response.defer()
        if interaction.message is not None:
            # Two clicks at once, or a moderator was quicker: either way it is gone.
            try:
                await interaction.message.delete()
            except discord.NotFound as exc:
                api_calls.failed_call(exc, "delete_message")

    async def cancel(self, interaction: discord.Interaction, job_id: str) -> None:
        """✖: the requester or an admin stops a job still waiting or being made.

        The job's own run then shows who cancelled it, on its message, for everyone; the clicker
        only hears back (privately) when it could not be done.
        """
        permissions = interaction.permissions
        admin = permissions.manage_messages or permissions.manage_guild
        clicker = requester_of(interaction.user, interaction.channel_id)
        try:
            refusal = await self.service.cancel(job_id, clicker, admin=admin)
        except UserFacingError as exc:
            refusal = texts.refusal(exc, MARKUP)
        if refusal:
            await interaction.response.send_message(warning(refusal), ephemeral=True)
        else:
            await interaction.response.defer()

    async def edit_message_images(
        self, interaction: discord.Interaction, channel_id: int, message_id: int, prompt: str
    ) -> None:
        """The context-menu modal was submitted: edit the linked job, else the message's images."""
        target = await self.begin(interaction)
        if target is None:
            return
        attachments = self._menu_targets.pop(message_id, None)
        if attachments is None:
            # Opened before a restart: fetch it (only complete with the content intent).
            channel = interaction.client.get_partial_messageable(channel_id)
            try:
                attachments = (await channel.fetch_message(message_id)).attachments
            except discord.HTTPException as exc:
                api_calls.failed_call(exc, "get_message")
                logger.info("could not fetch message %s to edit: %s", message_id, exc)
                attachments = []
        theirs, mask = split_mask(remote_all(attachments))
        edit = Edit(target.requester, prompt, on=ref(message_id), their_files=theirs, mask=mask)
        await self.run(target, edit)

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
        job = await self.service.job_for(ref(reference.message_id))
        if job is not None and job.status in ("queued", "running"):
            # Its message is linked from the start, so the progress (and previews) can be
            # replied to; there is no image to edit until it is done.
            if await self.service.first_time(f"discord:message:{message.id}"):
                await message.reply("⏳ " + texts.STILL_MAKING, mention_author=False)
            return
        theirs: tuple[RemoteFile, ...] = ()
        if job is None or job.status != "succeeded":  # a failure message: nothing of it to edit
            if not mentioned:
                return
            referenced = await self._referenced(message, reference)
            theirs = split_mask(remote_all(referenced.attachments))[0] if referenced else ()
            if referenced is None or not theirs:
                hidden = referenced is not None and not self._sees_content(referenced, me)
                words = texts.CANT_SEE if hidden else texts.NO_IMAGE
                await message.reply(warning(words), mention_author=False)
                return
        prompt = strip_mention(message.content, me.id)
        if not prompt:
            if mentioned:
                await message.reply(texts.NO_PROMPT, mention_author=False)
            return
        if not await self.service.first_time(f"discord:message:{message.id}"):
            return
        requester = requester_of(message.author, message.channel.id)
        try:
            preparing = status(JobView(prompt=prompt, requester=requester))
            reply = await message.reply(preparing, mention_author=False)
        except (discord.Forbidden, discord.NotFound) as exc:
            api_calls.failed_call(exc, "send_message")
            # No job was admitted yet; without access to the channel there is nobody to tell.
            logger.warning("could not answer message %s: %s", message.id, exc)
            return
        extra, mask = split_mask(remote_all(message.attachments))
        on = ref(reference.message_id)
        edit = Edit(requester, prompt, on=on, their_files=theirs, files=extra, mask=mask)
        await self.run(MessageTarget(reply, message.author), edit)

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
        except discord.HTTPException as exc:
            api_calls.failed_call(exc, "get_message")
            logger.info("could not fetch the message %s was replying to", message.id)
            return None


def requested_by(message: discord.Message | None) -> str | None:
    """The user id a result's "Requested by" embed field names, if any."""
    for embed in message.embeds if message is not None else ():
        for field in embed.fields:
            found = MENTION.fullmatch(field.value or "")
            if field.name == REQUESTED_BY and found:
                return found[1]
    return None


def strip_mention(content: str, user_id: int) -> str:
    """The message text without mentions of the bot."""
    return re.sub(rf"<@!?{user_id}>", "", content).strip()
