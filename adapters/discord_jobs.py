"""One job on Discord: where it is shown, throttled progress, the result and errors."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol

import discord

from adapters import discord_render as render
from adapters.discord_files import (
    DEFAULT_UPLOAD_LIMIT,
    Upload,
    preview_file,
    result_files,
    to_files,
)
from bot.app import App
from bot.errors import UserFacingError
from bot.models import (
    Finished,
    ImageRequest,
    JobResult,
    PartialImage,
    ProgressEvent,
    Queued,
    Requester,
    Started,
)

logger = logging.getLogger("adapters.discord")

ViewFactory = Callable[[str], discord.ui.View]


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


class InteractionTarget:
    """The deferred response of a slash command, button or modal."""

    def __init__(self, interaction: discord.Interaction, message_id: int | None) -> None:
        self.interaction = interaction
        self.message_id = message_id
        self.upload_limit = interaction.filesize_limit or DEFAULT_UPLOAD_LIMIT
        self.fallback: discord.Message | None = None

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
        self.fallback = await post_in(channel, display.addressed_to(self.interaction.user))
        self.message_id = self.fallback.id
        return self.fallback.id

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
        guild = status.guild
        self.upload_limit = guild.filesize_limit if guild is not None else DEFAULT_UPLOAD_LIMIT

    async def show(self, display: Display) -> int:
        if self.reposted:
            display = display.addressed_to(self.requester)
        try:
            self.status = await self.status.edit(**display.edit_args())
        except discord.NotFound:
            # Someone deleted the bot's reply: post again, naming the user, so the result lands.
            self.reposted = True
            self.status = await post_in(self.status.channel, display.addressed_to(self.requester))
            self.message_id = self.status.id
        return self.status.id

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


class ProgressRenderer:
    """Turns progress events into message edits, at most one per ``interval`` seconds."""

    def __init__(
        self,
        target: Target,
        prompt: str,
        interval: float,
        on_admitted: Callable[[str], Awaitable[None]],
    ) -> None:
        self.target = target
        self.prompt = prompt
        self.interval = interval
        self.job_id: str | None = None
        self._on_admitted = on_admitted
        self._position = 0
        self._started_at: float | None = None
        self._preview: bytes | None = None
        self._previews = 0
        self._dirty = False
        self._closed = False
        self._editing = False
        self._last_edit = -float("inf")
        self._task: asyncio.Task[None] | None = None

    async def on_event(self, event: ProgressEvent) -> None:
        """The service's progress callback."""
        if isinstance(event, Queued):
            if self.job_id is None:
                self.job_id = event.job_id
                await self._on_admitted(event.job_id)
            self._position = event.position
        elif isinstance(event, Started):
            self._started_at = time.time()
        elif isinstance(event, PartialImage):
            self._preview = event.data
            self._previews += 1
        elif isinstance(event, Finished):
            return
        self._kick()

    def _kick(self) -> None:
        if self._closed:
            return
        self._dirty = True
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._drain())

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        while self._dirty and not self._closed:
            delay = self._last_edit + self.interval - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            if self._closed:
                return
            self._dirty = False
            self._last_edit = loop.time()
            self._editing = True
            try:
                await self._edit()
            except discord.HTTPException as exc:
                logger.warning("progress edit failed for job %s: %s", self.job_id, exc)
            finally:
                self._editing = False

    async def _edit(self) -> None:
        if self._started_at is None:
            await self.target.show(Display(render.status_queued(self.prompt, self._position)))
            return
        text = render.status_generating(self.prompt, self._started_at, self._previews)
        files = [await preview_file(self._preview)] if self._preview is not None else []
        await self.target.show(Display(text, files=files))

    async def close(self) -> None:
        """Stop editing; an edit already on the wire finishes first so the order holds."""
        self._closed = True
        task = self._task
        if task is None or task.done():
            return
        if not self._editing:
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


class JobRunner:
    """Runs requests through the core and draws them on a Target."""

    def __init__(self, app: App, result_view: ViewFactory) -> None:
        self.app = app
        self.result_view = result_view
        self._running: set[asyncio.Task[object]] = set()

    async def shutdown(self) -> None:
        """Stop the jobs in flight; each tells its user it was interrupted (while we still can)."""
        tasks = [task for task in self._running if not task.done()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    @contextlib.contextmanager
    def _tracked(self) -> Iterator[None]:
        # shutdown() cancels what is tracked here, so each user hears their job was interrupted.
        task = asyncio.current_task()
        if task is not None:
            self._running.add(task)
        try:
            yield
        finally:
            if task is not None:
                self._running.discard(task)

    async def run(
        self,
        target: Target,
        *,
        prompt: str,
        requester_label: str,
        build: Callable[[], Awaitable[ImageRequest]],
    ) -> str | None:
        """Build the request, run it with live progress, show the result; the job id or None."""

        async def admitted(job_id: str) -> None:
            await self.app.store.set_platform_ref(job_id, target.platform_ref())

        renderer = ProgressRenderer(
            target, prompt, self.app.settings.imagine_progress_interval, admitted
        )
        with self._tracked():
            try:
                request = await build()
                result = await self.app.service.run(request, renderer.on_event)
                await renderer.close()
                try:
                    await self._deliver(target, result, requester_label)
                except discord.HTTPException as exc:
                    # The job is done, charged and kept, only unseen: never say "try again".
                    lost_access = isinstance(exc, discord.Forbidden | discord.NotFound)
                    if lost_access:
                        logger.warning("job %s: result not shown: %s", result.job_id, exc)
                    else:
                        logger.exception("job %s: Discord refused the result", result.job_id)
                    unseen = render.unshown(result.job_id, lost_access=lost_access)
                    await self._tell(target, unseen, result.job_id)
                return result.job_id
            except asyncio.CancelledError:
                await renderer.close()
                notice = Display(render.interrupted_message(prompt))
                with contextlib.suppress(discord.HTTPException, TimeoutError):
                    await asyncio.wait_for(target.show(notice), 5)
                raise
            except UserFacingError as exc:
                await renderer.close()
                await self._tell(target, render.error_message(exc), renderer.job_id)
            except Exception:
                logger.exception("Discord job %s failed", renderer.job_id or "(not admitted)")
                await renderer.close()
                await self._tell(target, render.generic_error(renderer.job_id), renderer.job_id)
        return None

    async def _deliver(self, target: Target, result: JobResult, requester_label: str) -> None:
        """Show the finished result and link its message to the job (for replies and buttons)."""
        store = self.app.store
        files = await result_files(result.images, result.job_id, target.upload_limit)
        # Link first, so a reply that comes the moment the result appears finds its job.
        linked = target.message_id
        if linked is not None:
            await store.link_message("discord", str(linked), result.job_id)
        message_id = await target.show(
            Display(
                embed=render.result_embed(result, requester_label),
                files=files,
                view=self.result_view(result.job_id),
            )
        )
        if message_id != linked:
            await store.link_message("discord", str(message_id), result.job_id)

    @staticmethod
    async def _tell(target: Target, text: str, job_id: str | None) -> None:
        try:
            await target.fail(text)
        except discord.HTTPException as exc:
            logger.warning("could not tell the user about job %s: %s", job_id, exc)
