"""One job on Discord: the Presenter the core's ``run_job`` drives, on an interaction or a reply.

Discord rate-limits by route bucket, not by job: every edit of a bot message in a channel
(``PATCH /channels/{id}/messages/{id}``) draws on that channel's bucket, and interaction edits
(``PATCH /webhooks/{app}/{token}/messages/@original``) on the interaction's. Discord's docs say not
to hard-code the numbers (they are announced in ``X-RateLimit-*`` headers, and discord.py follows
those); observed, a channel's message bucket allows about 5 edits per 5 s, an interaction's 5 per
2 s and about 30 a minute per guild (discord/discord-api-docs#2701). A burst of jobs in one channel
would queue hundreds of progress edits in front of the results, so progress edits share a smaller
per-channel budget. Results and error messages never wait for it and are never dropped.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

import discord

from adapters.discord import api_calls, render
from adapters.discord.files import preview_file, result_files
from adapters.discord.targets import Display, Target, ViewFactory
from bot import metrics, texts
from bot.commands import MessageRef
from bot.errors import ContentBlocked
from bot.models import JobResult
from bot.pacing import EditBudget
from bot.presenting import Failure, JobView, Links, NotShown

logger = logging.getLogger("adapters.discord")

# A burst of 2, then one progress edit per 2.5 s per channel: at most 4 in any 5 s (a channel's
# message bucket allows 5), 24 a minute, so results and new replies always find room.
PROGRESS_BURST = 2
PROGRESS_EVERY = 2.5

T = TypeVar("T")
# discord.py already waits out a 429 and tries 5 times per call; a result or an error message
# must still land when a bucket stays busy longer (another process, a shared proxy), so it gets
# this many more rounds, each after Discord's Retry-After (capped).
FINAL_ROUNDS = 4
MAX_RETRY_AFTER = 60.0


def progress_budget() -> EditBudget:
    """The progress-edit budget of every channel, as Discord's buckets allow."""
    return EditBudget(burst=PROGRESS_BURST, every=PROGRESS_EVERY)


def retry_after(exc: discord.HTTPException) -> float:
    """Seconds Discord asked to wait after a 429 (its Retry-After header), within limits."""
    try:
        wait = float(exc.response.headers.get("Retry-After", 1))
    except (AttributeError, ValueError):
        wait = 1.0
    return min(max(wait, 0.0), MAX_RETRY_AFTER)


async def until_landed(send: Callable[[], Awaitable[T]]) -> T:
    """``send()``, again after each rate limit Discord answers, up to FINAL_ROUNDS rounds."""
    for _ in range(FINAL_ROUNDS - 1):
        try:
            return await send()
        except discord.HTTPException as exc:
            if exc.status != 429:
                raise
            api_calls.failed_call(exc, "edit_message")
            logger.warning("Discord is still rate limiting; trying again: %s", exc)
            wait = retry_after(exc)
            name = api_calls.call_name(exc, "edit_message")
            metrics.rate_limit_wait(api_calls.PLATFORM, name, wait)
            await asyncio.sleep(wait)
    return await send()


class DiscordPresenter:
    """Draws one job on a Target: progress edits, then the result embed or the reason."""

    platform = "Discord"
    markup: texts.Markup = render.MARKUP

    def __init__(
        self, target: Target, result_view: ViewFactory, *, prompt_help: bool = False
    ) -> None:
        self.target = target
        self.result_view = result_view
        # Prompt help is on: results offer "Enhance & retry", safety blocks "Rephrase and retry".
        self.prompt_help = prompt_help
        self._shown_status: str | None = None  # the progress line on show now

    @property
    def channel_id(self) -> str:
        """The channel the job is shown in (its progress budget)."""
        return str(self.target.platform_ref().get("channel_id") or "")

    async def open(self, view: JobView, links: Links) -> None:
        """Record where the job is shown, and link its message before anything appears in it."""
        await links.record(self.target.platform_ref())

        async def link(message_id: int) -> None:
            await links.link(MessageRef("discord", str(message_id)))

        # The message showing the progress becomes the result: linked now, whatever appears in
        # it can be replied to. Messages the target posts afresh link themselves.
        if self.target.message_id is not None:
            await link(self.target.message_id)
        self.target.on_posted = link

    async def show(self, view: JobView) -> bool:
        """One progress edit (the newest preview, as a small JPEG, below the line), with Cancel.

        The first one goes out as soon as the channel's budget allows, which for a quiet channel
        is at once: an edit of its own on opening would spend that budget twice per job.
        """
        status = render.status(view)
        if view.preview is None and status == self._shown_status:
            return True  # the same words again (a place in line said once more): no edit
        files = [await preview_file(view.preview)] if view.preview is not None else []
        buttons = render.progress_view(view.job_id) if view.job_id is not None else None
        await self.target.show(Display(status, files=files, view=buttons))
        self._shown_status = status
        return True

    async def show_result(self, result: JobResult, links: Links) -> None:
        """The result embed, its images and buttons, however long Discord answers 429."""
        files = await result_files(result.images, result.job_id, self.target.upload_limit)
        buttons = self.result_view(result.job_id, enhance=self.prompt_help)
        display = Display(embed=render.result_embed(result), files=files, view=buttons)
        try:
            await until_landed(lambda: self.target.show(display))
        except (discord.Forbidden, discord.NotFound) as exc:
            api_calls.failed_call(exc, "edit_message")
            raise NotShown("lost_access", exc.text or f"HTTP {exc.status}") from exc

    async def show_failure(self, failure: Failure, view: JobView) -> None:
        """An interruption or a cancellation in place, for everyone; else privately if possible."""
        if failure.kind == "interrupted":
            await self.target.show(Display(render.interrupted(view.prompt)))
            return
        if failure.in_place:
            shown = Display(render.ended(view.prompt, failure.message))
            await until_landed(lambda: self.target.show(shown))
            return
        text = render.warning(failure.message)
        blocked = failure.kind == "refused" and isinstance(failure.error, ContentBlocked)
        offer = None
        if blocked and self.prompt_help and failure.job_id is not None:
            offer = render.rephrase_view(failure.job_id)
        await until_landed(lambda: self.target.fail(text, offer))
