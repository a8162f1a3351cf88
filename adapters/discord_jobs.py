"""One job on Discord, start to finish: progress while it runs, then the result or the reason."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterator
from typing import TypeVar

import discord

from adapters import discord_render as render
from adapters.discord_files import result_files
from adapters.discord_progress import EditBudget, ProgressRenderer
from adapters.discord_targets import (
    Display,
    InteractionTarget,
    MessageTarget,
    Target,
    ViewFactory,
    post_in,
    requester_of,
)
from bot.app import App
from bot.errors import UserFacingError
from bot.models import ImageRequest, JobResult

logger = logging.getLogger("adapters.discord")

__all__ = [
    "Display",
    "InteractionTarget",
    "JobRunner",
    "MessageTarget",
    "Target",
    "ViewFactory",
    "post_in",
    "requester_of",
]

T = TypeVar("T")
# discord.py already waits out a 429 and tries 5 times per call; a result or an error message
# must still land when a bucket stays busy longer (another process, a shared proxy), so it gets
# this many more rounds, each after Discord's Retry-After (capped).
FINAL_ROUNDS = 4
MAX_RETRY_AFTER = 60.0


def retry_after(exc: discord.HTTPException) -> float:
    """Seconds Discord asked to wait after a 429 (its Retry-After header), within limits."""
    if isinstance(exc, discord.RateLimited):
        return min(exc.retry_after, MAX_RETRY_AFTER)
    headers = getattr(exc.response, "headers", None) or {}
    try:
        wait = float(headers.get("Retry-After", 1))
    except ValueError:
        wait = 1.0
    return min(max(wait, 0.0), MAX_RETRY_AFTER)


async def until_landed(send: Callable[[], Awaitable[T]]) -> T:
    """``send()``, again after each rate limit Discord answers, up to FINAL_ROUNDS rounds."""
    for _ in range(FINAL_ROUNDS - 1):
        try:
            return await send()
        except discord.HTTPException as exc:
            if exc.status != 429 and not isinstance(exc, discord.RateLimited):
                raise
            logger.warning("Discord is still rate limiting; trying again: %s", exc)
            await asyncio.sleep(retry_after(exc))
    return await send()


class JobRunner:
    """Runs requests through the core and draws them on a Target."""

    def __init__(self, app: App, result_view: ViewFactory) -> None:
        self.app = app
        self.result_view = result_view
        self._running: set[asyncio.Task[object]] = set()
        self.budget = EditBudget()

    async def shutdown(self) -> None:
        """Stop the jobs in flight; each tells its user it was interrupted (while we still can)."""
        tasks = [task for task in self._running if not task.done()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self.budget.close()

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

        async def link(message_id: int) -> None:
            assert renderer.job_id is not None
            await self.app.store.link_message("discord", str(message_id), renderer.job_id)

        async def admitted(job_id: str) -> None:
            await self.app.store.set_platform_ref(job_id, target.platform_ref())
            # The message showing the progress is the one that becomes the result: linked now,
            # whatever appears in it can be replied to. Messages posted afresh link themselves.
            if target.message_id is not None:
                await link(target.message_id)
            target.on_posted = link

        channel = str(target.platform_ref().get("channel_id") or "")
        renderer = ProgressRenderer(
            target,
            prompt,
            self.app.settings.imagine_progress_interval,
            self.budget.channel(channel),
            admitted,
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
        """Show the finished result (its message was linked to the job when the job began)."""
        files = await result_files(result.images, result.job_id, target.upload_limit)
        display = Display(
            embed=render.result_embed(result, requester_label),
            files=files,
            view=self.result_view(result.job_id),
        )
        await until_landed(lambda: target.show(display))

    @staticmethod
    async def _tell(target: Target, text: str, job_id: str | None) -> None:
        try:
            await until_landed(lambda: target.fail(text))
        except discord.HTTPException as exc:
            logger.warning("could not tell the user about job %s: %s", job_id, exc)
