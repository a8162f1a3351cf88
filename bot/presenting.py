"""Showing one job to its user, written once for every platform.

``run_job`` takes a command, runs it through the service and drives a ``Presenter`` (the
platform's side: open the job's message, show a view, show the result, show a failure):

    command ─ service.prepare ─ service.run ─┬─ admitted ─ presenter.open(view, links)
                                              ├─ events ── JobView.fold ─ Throttle ─ presenter.show
                                              └─ result ── presenter.show_result | show_failure

It owns the outcome ladder (cancelled, refused, unavailable, a bug, made but not shown), links
the job's messages so replies and buttons find it, and words every failure from ``bot.texts``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterator, Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Literal, Protocol

from bot import texts
from bot.commands import Command, MessageRef, prompt_of
from bot.errors import JobCancelled, ProviderUnavailable, UserFacingError
from bot.models import (
    Finished,
    JobRecord,
    JobResult,
    PartialImage,
    ProgressEvent,
    PromptRewritten,
    Queued,
    Requester,
    Started,
)
from bot.pacing import ROUTINE, URGENT

if TYPE_CHECKING:
    from bot.downloads import Downloader
    from bot.pacing import Pacer
    from bot.service import ImageService

logger = logging.getLogger("bot.presenting")

Phase = Literal["preparing", "queued", "running"]
# How long a notice about an interrupted job may take while the bot shuts down.
NOTICE_TIMEOUT = 5.0


@dataclass(frozen=True)
class JobView:
    """What the user should see of a job right now."""

    prompt: str
    requester: Requester
    phase: Phase = "preparing"
    job_id: str | None = None
    position: int = 0
    started_at: float | None = None  # Unix time the provider call began
    previews: int = 0
    preview: bytes | None = None  # the newest partial image
    preview_format: str = "png"
    now: float = 0.0

    @property
    def elapsed_s(self) -> float:
        """Seconds since the provider call began (0 before)."""
        return 0.0 if self.started_at is None else max(0.0, self.now - self.started_at)

    @property
    def step(self) -> tuple[str, int]:
        """What changed in a way worth showing soon (a place in line can wait)."""
        return self.phase, self.previews

    def fold(self, event: ProgressEvent, now: float) -> JobView:
        """The view after ``event``."""
        view = replace(self, now=now)
        if isinstance(event, Queued):
            phase: Phase = "running" if view.phase == "running" else "queued"
            return replace(view, job_id=event.job_id, position=event.position, phase=phase)
        if isinstance(event, Started):
            return replace(view, job_id=event.job_id, phase="running", started_at=now)
        if isinstance(event, PromptRewritten):
            return replace(view, prompt=event.prompt)
        if isinstance(event, PartialImage):
            return replace(
                view,
                previews=view.previews + 1,
                preview=event.data,
                preview_format=event.output_format,
            )
        return view


FailureKind = Literal[
    "refused", "unavailable", "bug", "interrupted", "cancelled", "cant_post", "unshown"
]


@dataclass(frozen=True)
class Failure:
    """A job that ended without its result on show: what to tell the requester."""

    kind: FailureKind
    message: str  # the words for the requester, in the platform's markup
    job_id: str | None = None
    error: UserFacingError | None = None

    @property
    def made(self) -> bool:
        """The image exists (and was charged); only showing it failed."""
        return self.kind == "unshown"

    @property
    def in_place(self) -> bool:
        """Shown on the job's own message for everyone (an interruption, a cancellation)."""
        return self.kind in ("interrupted", "cancelled")

    @property
    def state(self) -> str:
        """A short state for the job's own message, where it has one."""
        if self.kind == "cancelled":
            return self.message
        if self.kind == "unavailable":
            return texts.UNAVAILABLE
        if self.kind == "interrupted":
            return texts.INTERRUPTED
        if self.kind == "unshown":
            return f"made, but I couldn't post it here (job {self.job_id})"
        return texts.NOT_MADE


class CantPost(UserFacingError):
    """Raised by ``Presenter.open``: the bot may not post where it was asked (the user can fix
    that). The job stops before the image is paid for, and is refunded."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"can't post here ({reason})")
        self.reason = reason


class NotShown(Exception):
    """Raised by ``Presenter.show_result``: the image was made but isn't (fully) on show.

    ``how`` says what the user can still do: ``lost_access`` (the bot can't post here any
    more), ``refused`` (the upload was refused; the job's buttons still work), ``unfinished``
    (the images are posted, the message around them isn't finished).
    """

    def __init__(self, how: Literal["lost_access", "refused", "unfinished"], reason: str) -> None:
        super().__init__(f"{how}: {reason}")
        self.how = how
        self.reason = reason


class Links:
    """Ties a job to the messages that show it (replies and buttons find the job through them)."""

    def __init__(self, service: ImageService, job_id: str) -> None:
        self.service = service
        self.job_id = job_id

    async def link(self, *refs: MessageRef) -> None:
        """Link each message to the job."""
        for ref in refs:
            await self.service.link_message(ref, self.job_id)

    async def record(self, ref: Mapping[str, object]) -> None:
        """Keep what a later process needs to find the job's message again (merged)."""
        await self.service.set_platform_ref(self.job_id, ref)


class Presenter(Protocol):
    """A platform's way of showing one job."""

    #: The platform's name, as users know it ("Discord", "Slack").
    platform: str
    markup: texts.Markup

    async def open(self, view: JobView, links: Links) -> None:
        """The job was admitted: make (or claim) its message, record and link it.

        Raise ``CantPost`` when the bot may not post there: the job stops, refunded.
        """
        ...

    async def show(self, view: JobView) -> bool:
        """Show progress; False means "not now" (a budget said no) and it is tried again."""
        ...

    async def show_result(self, result: JobResult, links: Links) -> None:
        """Show the finished result (link any message posted afresh); may raise ``NotShown``."""
        ...

    async def show_failure(self, failure: Failure, view: JobView) -> None:
        """Tell the requester the job ended without a result on show."""
        ...


class Throttle:
    """Merges a job's views into edits: the newest view only, at most one edit per ``interval``.

    A ``pacer`` (the channel's edit budget) may hold an edit back further; ``tick`` re-shows a
    running job that often so an elapsed time can move. ``close()`` stops it; an edit already on
    the wire finishes first, so the final edit that follows is never overtaken.
    """

    def __init__(
        self,
        show: Callable[[JobView], Awaitable[bool]],
        interval: float,
        *,
        pacer: Pacer | None = None,
        tick: float | None = None,
        clock: Callable[[], float] | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._show = show
        self.interval = interval
        self.retry_every = max(interval, 0.05)
        self.pacer = pacer
        self.tick = tick
        self._clock = clock or asyncio.get_running_loop().time
        self._sleep = sleep
        self._view: JobView | None = None
        self._shown_step: tuple[str, int] | None = None
        self._dirty = False
        self._closed = False
        self._editing = False
        self._last = -float("inf")
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.edits = 0

    def update(self, view: JobView) -> None:
        """A newer view; shown when its turn comes (older ones are never shown after it)."""
        if self._closed:
            return
        self._view = view
        self._dirty = True
        self._wake.set()
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run())

    def _urgency(self) -> int:
        view = self._view
        return URGENT if view is not None and view.step != self._shown_step else ROUTINE

    async def _nap(self, seconds: float | None) -> None:
        """Until update() wakes us, or ``seconds`` pass."""
        waker = asyncio.ensure_future(self._wake.wait())
        if seconds is None:
            await waker
            return
        sleeper = asyncio.ensure_future(self._sleep(seconds))
        try:
            await asyncio.wait({waker, sleeper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waker.cancel()
            sleeper.cancel()

    async def _run(self) -> None:
        while not self._closed:
            if not self._dirty:
                running = self._view is not None and self._view.phase == "running"
                ticking = self.tick if running else None
                self._wake.clear()
                await self._nap(ticking)
                if self._closed:
                    return
                if not self._dirty and ticking is not None:
                    assert self._view is not None
                    self._view = replace(self._view, now=time.time())
                    self._dirty = True
                continue
            delay = self._last + self.interval - self._clock()
            if delay > 0:
                await self._sleep(delay)
            if self.pacer is not None:
                await self.pacer.turn(self._urgency)
            if self._closed:
                return
            view = self._view
            assert view is not None
            self._dirty = False
            self._last = self._clock()
            self._editing = True
            try:
                shown = await self._show(view)
            except Exception as exc:  # progress is cosmetic; the job goes on
                logger.warning("progress update for job %s failed: %s", view.job_id, exc)
                shown = True
            finally:
                self._editing = False
            self.edits += 1
            if shown:
                self._shown_step = view.step
            elif not self._dirty:
                self._dirty = True  # a budget said "not now": try again a little later
                self._last = self._clock() - self.interval + self.retry_every

    async def close(self) -> None:
        """Stop; wait for an edit on the wire, drop the rest."""
        self._closed = True
        self._wake.set()
        task = self._task
        if task is None or task.done():
            return
        if not self._editing:
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def run_job(
    service: ImageService,
    command: Command,
    presenter: Presenter,
    *,
    files: Downloader | None = None,
    pacer: Pacer | None = None,
    tick: float | None = None,
) -> str | None:
    """Run ``command`` and show it through ``presenter``; the job id if it was delivered.

    Every ending is shown: the result, or a failure in plain words (refused, unavailable, a
    bug, interrupted, can't post here, made but not shown). Cancelling the caller (the bot
    shutting down) tells the user their job was interrupted, within NOTICE_TIMEOUT, and
    re-raises.
    """
    m = presenter.markup
    view = JobView(prompt=prompt_of(command), requester=command.requester, now=time.time())
    interval = service.settings.imagine_progress_interval
    throttle = Throttle(presenter.show, interval, pacer=pacer, tick=tick)
    links: Links | None = None

    async def admitted(job: JobRecord, position: int) -> None:
        nonlocal view, links
        view = replace(view, job_id=job.id, position=position, phase="queued", now=time.time())
        links = Links(service, job.id)
        await presenter.open(view, links)

    async def on_event(event: ProgressEvent) -> None:
        nonlocal view
        if isinstance(event, Finished):
            return
        view = view.fold(event, time.time())
        throttle.update(view)

    async def fail(kind: FailureKind, message: str, error: UserFacingError | None = None) -> None:
        await throttle.close()
        failure = Failure(kind, message, view.job_id, error)
        try:
            await presenter.show_failure(failure, view)
        except Exception as exc:
            logger.warning("could not tell the user about job %s: %s", view.job_id, exc)

    try:
        request = await service.prepare(command, files)
        view = replace(view, prompt=request.prompt)
        result = await service.run(request, on_event, on_admitted=admitted)
    except asyncio.CancelledError:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(
                asyncio.shield(fail("interrupted", texts.interrupted())), NOTICE_TIMEOUT
            )
        raise
    except CantPost as exc:
        await fail("cant_post", texts.cant_post(exc.reason, m), exc)
        return None
    except JobCancelled as exc:
        await fail("cancelled", texts.cancelled(exc.by, m), exc)
        return None
    except UserFacingError as exc:
        kind: FailureKind = "unavailable" if isinstance(exc, ProviderUnavailable) else "refused"
        await fail(kind, texts.refusal(exc, m), exc)
        return None
    except Exception:
        logger.exception("%s job %s failed", presenter.platform, view.job_id or "(not admitted)")
        await fail("bug", texts.bug(view.job_id, m))
        return None
    await throttle.close()
    view = replace(view, job_id=result.job_id)
    assert links is not None
    try:
        await presenter.show_result(result, links)
    except NotShown as exc:
        logger.warning("job %s: result not shown: %s", result.job_id, exc)
        job_id, platform = result.job_id, presenter.platform
        if exc.how == "lost_access":
            words = texts.lost_access(job_id, exc.reason, m)
        elif exc.how == "refused":
            words = texts.upload_refused(job_id, platform, exc.reason, m)
        else:
            words = texts.unfinished(job_id, platform, exc.reason, m)
        await fail("unshown", words)
    except Exception:
        logger.exception("job %s: %s refused the result", result.job_id, presenter.platform)
        await fail("unshown", texts.unshown(result.job_id, presenter.platform, m))
    return result.job_id


class JobTasks:
    """The jobs a platform has in flight, so a shutdown can stop each one (and tell its user)."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()

    def spawn(self, work: Coroutine[Any, Any, object]) -> asyncio.Task[Any]:
        """Run ``work`` in the background, tracked."""
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    @contextlib.contextmanager
    def tracked(self) -> Iterator[None]:
        """Track the current task (a library already runs each event in one) while inside."""
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        try:
            yield
        finally:
            if task is not None:
                self._tasks.discard(task)

    async def shutdown(self) -> None:
        """Cancel every job in flight and wait until each has told its user."""
        tasks = [task for task in self._tasks if not task.done()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
