"""Progress edits on Discord: throttled per job, budgeted per channel, newest state first.

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
import contextlib
import itertools
import logging
import time
from collections.abc import Awaitable, Callable

import discord

from adapters import discord_render as render
from adapters.discord_files import preview_file
from adapters.discord_targets import Display, Target
from bot.models import Finished, PartialImage, ProgressEvent, Queued, Started

logger = logging.getLogger("adapters.discord")

# A burst of 2, then one progress edit per 2.5 s per channel: at most 4 in any 5 s (a channel's
# message bucket allows 5), 24 a minute, so results and new replies always find room.
PROGRESS_BURST = 2
PROGRESS_EVERY = 2.5
URGENT, ROUTINE = 0, 1


class ChannelPacer:
    """A token bucket for one channel's progress edits; the most useful waiting edit goes first."""

    def __init__(self, burst: int, every: float) -> None:
        self.burst = burst
        self.every = every
        loop = asyncio.get_running_loop()
        self._tokens = float(burst)
        self._stamp = loop.time()
        self._seq = itertools.count()
        self._waiting: dict[asyncio.Future[None], tuple[int, Callable[[], int]]] = {}
        self._pump: asyncio.Task[None] | None = None

    async def turn(self, urgency: Callable[[], int]) -> None:
        """Wait for the channel's next progress edit; ``urgency()`` is asked at hand-out time."""
        self._refill()
        if not self._waiting and self._tokens >= 1:
            self._tokens -= 1
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting[future] = (next(self._seq), urgency)
        if self._pump is None or self._pump.done():
            self._pump = asyncio.create_task(self._hand_out())
        try:
            await future
        finally:
            self._waiting.pop(future, None)

    def at_rest(self) -> bool:
        """Nobody waits and the bucket is full again: forgetting it changes nothing."""
        self._refill()
        return not self._waiting and self._tokens >= self.burst

    def close(self) -> None:
        """Stop handing out turns (the runner is shutting down)."""
        if self._pump is not None:
            self._pump.cancel()

    def _refill(self) -> None:
        now = asyncio.get_running_loop().time()
        self._tokens = min(self.burst, self._tokens + (now - self._stamp) / self.every)
        self._stamp = now

    async def _hand_out(self) -> None:
        while self._waiting:
            self._refill()
            if self._tokens < 1:
                await asyncio.sleep((1 - self._tokens) * self.every)
                continue
            # Urgent first (the job moved on: it started, a new preview), then the longest waiting.
            future = min(self._waiting, key=lambda f: (self._waiting[f][1](), self._waiting[f][0]))
            del self._waiting[future]
            if not future.done():
                self._tokens -= 1
                future.set_result(None)


class EditBudget:
    """The progress-edit budget of every channel the bot is working in."""

    def __init__(self, burst: int = PROGRESS_BURST, every: float = PROGRESS_EVERY) -> None:
        self.burst = burst
        self.every = every
        self._channels: dict[str, ChannelPacer] = {}

    def channel(self, channel_id: str) -> ChannelPacer:
        """The pacer for ``channel_id``."""
        pacer = self._channels.get(channel_id)
        if pacer is None:
            if len(self._channels) >= 256:
                for key in [k for k, p in self._channels.items() if p.at_rest()]:
                    del self._channels[key]
            pacer = self._channels[channel_id] = ChannelPacer(self.burst, self.every)
        return pacer

    def close(self) -> None:
        """Stop every pacer."""
        for pacer in self._channels.values():
            pacer.close()


class ProgressRenderer:
    """Turns progress events into message edits: at most one per ``interval`` for this job, and
    only when the channel's budget allows; whatever is newest when its turn comes is drawn."""

    def __init__(
        self,
        target: Target,
        prompt: str,
        interval: float,
        pacer: ChannelPacer,
        on_admitted: Callable[[str], Awaitable[None]],
    ) -> None:
        self.target = target
        self.prompt = prompt
        self.interval = interval
        self.pacer = pacer
        self.job_id: str | None = None
        self._on_admitted = on_admitted
        self._position = 0
        self._started_at: float | None = None
        self._preview: bytes | None = None
        self._previews = 0
        self._shown_phase: tuple[bool, int] | None = None
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

    def _phase(self) -> tuple[bool, int]:
        return self._started_at is not None, self._previews

    def _urgency(self) -> int:
        # A new phase is news; a queue position that moved by one can wait for a quieter moment.
        return URGENT if self._phase() != self._shown_phase else ROUTINE

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
            await self.pacer.turn(self._urgency)
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
        self._shown_phase = self._phase()
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
