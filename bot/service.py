"""The one use case: validate -> admit -> wait for a slot -> provider -> save -> result."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from bot import images, metrics, texts
from bot.commands import (
    NO_OVERRIDES,
    Command,
    Edit,
    Generate,
    MessageRef,
    Overrides,
    Regenerate,
    RemoteFile,
    Retry,
    Vary,
)
from bot.errors import (
    AttachmentRejected,
    InternalError,
    InvalidRequest,
    JobCancelled,
    JobNotFound,
    NotAllowed,
    ProviderUnavailable,
    QueueFull,
    UserFacingError,
)
from bot.fair_queue import FairQueue, Ticket
from bot.image_budget import decode_off_loop
from bot.job_audit import JobAudit
from bot.job_end import billed_cost, record_failure
from bot.models import (
    Finished,
    ImageOptions,
    ImageRequest,
    JobRecord,
    JobResult,
    PartialImage,
    ProgressCallback,
    ProgressEvent,
    PromptRewritten,
    Queued,
    Requester,
    SourceImage,
    Started,
)
from bot.policy import NO_DEFAULTS, ChannelDefaults
from bot.pricing import cost_from_usage, estimate_cost
from bot.provider import ImageProvider, check_options
from bot.spending import PolicyBook, check_never_fits, refuse_blocked

if TYPE_CHECKING:
    from bot.config import Settings
    from bot.downloads import Downloader
    from bot.prompt_help import PromptHelper
    from bot.store import Store

# How soon a job waiting for a slot another instance holds asks again (then less often).
SHARED_SLOT_POLL_S = 0.2
# While other instances hold every shared slot, the place in line ("next") is said again every
# this many progress intervals: a presenter may skip the first saying as not worth an edit yet.
SHARED_SLOT_REMIND_INTERVALS = 10

logger = logging.getLogger("bot.service")

# Called once a job is admitted, with its place in line (0: a slot is free). What it raises
# ends the job (a UserFacingError refunded, with its words) before anything is paid for.
AdmittedCallback = Callable[[JobRecord, int], Awaitable[None]]


class ImageService:
    """Runs image requests for every platform through the same limits, queue and store."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        provider: ImageProvider,
        *,
        prompt_help: PromptHelper | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.store = store
        self.provider = provider
        self._clock = clock
        self._slots = FairQueue(settings.imagine_max_concurrency)
        self.policy = PolicyBook(settings, store)
        self.prompt_help = prompt_help
        # The jobs this process is running, so Cancel can stop them.
        self._live: dict[str, _Live] = {}
        self._recovered: list[JobRecord] | None = None
        self._recover_lock = asyncio.Lock()

    @property
    def queue_length(self) -> int:
        """Jobs admitted and waiting for a provider slot."""
        return self._slots.waiting

    def options(
        self, overrides: Overrides = NO_OVERRIDES, channel: ChannelDefaults = NO_DEFAULTS
    ) -> ImageOptions:
        """The operator's defaults, then the channel's, with the user's choices applied."""
        settings = self.settings
        base = ImageOptions(
            model=channel.model or settings.imagine_model,
            size=channel.size or settings.imagine_size,
            quality=channel.quality or settings.imagine_quality,
            output_format=channel.output_format or settings.imagine_output_format,
            moderation=channel.moderation or settings.imagine_moderation,
            partial_images=self._previews(channel),
        )
        return overrides.apply(base)

    def _previews(self, channel: ChannelDefaults) -> int:
        wanted = self.settings.imagine_partial_images
        if channel.previews is None:
            return wanted
        return (wanted or 2) if channel.previews else 0

    def _in_channel(self, options: ImageOptions, channel: ChannelDefaults) -> ImageOptions:
        """A stored job's options as a channel's operator settings require (buttons, edits)."""
        return replace(
            options,
            model=channel.model or options.model,
            moderation=channel.moderation or options.moderation,
            partial_images=options.partial_images
            if channel.previews is None
            else self._previews(channel),
        )

    async def channel_defaults(self, requester: Requester) -> ChannelDefaults:
        """What the requester's channel set for its requests."""
        return (await self.policy.current()).channel_defaults(requester)

    # --- commands ------------------------------------------------------------------------
    async def prepare(self, command: Command, files: Downloader | None = None) -> ImageRequest:
        """The request a command stands for: its inputs fetched, its options settled.

        An edit starts from the parent job's result when there is one (named, or linked to the
        message it points at); otherwise from the images of that message.
        """
        channel = await self.channel_defaults(command.requester)
        if isinstance(command, Regenerate):
            request = await self.regenerate_request(command.job_id, command.requester)
            return replace(request, options=self._in_channel(request.options, channel))
        if isinstance(command, Generate):
            options = self.options(command.overrides, channel)
            return ImageRequest(command.requester, command.prompt, options, enhance=command.enhance)
        if isinstance(command, Vary):
            return await self._variation(command, channel)
        if isinstance(command, Retry):
            return await self._retry(command, channel)
        extra = await self._fetch(files, command.files)
        mask = (await self._fetch(files, (command.mask,)))[0] if command.mask else None
        parent = await self._parent_of(command)
        if parent is not None:
            request = await self.edit_request(
                parent, command.requester, command.prompt, extra, mask
            )
            options = self._in_channel(request.options, channel)
            return replace(
                request, options=command.overrides.apply(options), enhance=command.enhance
            )
        theirs = await self._fetch(files, command.their_files)
        if command.on is not None and not theirs and not extra:
            # The message pointed at has no image (any more) and none came with the edit.
            raise AttachmentRejected("that message", texts.IMAGE_GONE)
        return ImageRequest(
            command.requester,
            command.prompt,
            self.options(command.overrides, channel),
            sources=(*theirs, *extra),
            mask=mask,
            enhance=command.enhance,
        )

    async def _retry(self, retry: Retry, channel: ChannelDefaults) -> ImageRequest:
        """A stored job's request with a new prompt: rewritten now, or a confirmed rewrite."""
        request = await self.regenerate_request(retry.job_id, retry.requester)
        request = replace(request, options=self._in_channel(request.options, channel))
        if retry.suggestion_id is None:
            return replace(request, enhance=retry.enhance)
        suggestion = await self.store.get_job(retry.suggestion_id)
        if suggestion is None or suggestion.parent_job_id != retry.job_id:
            raise JobNotFound(retry.suggestion_id)
        if suggestion.requester.key != retry.requester.key:
            raise NotAllowed(texts.ONLY_OWNER_REPHRASES)
        return replace(request, prompt=suggestion.prompt)

    async def _variation(self, vary: Vary, channel: ChannelDefaults) -> ImageRequest:
        """An edit of the job's first image: its prompt and options, told to vary it."""
        job = await self.store.get_job(vary.job_id)
        if job is None:
            raise JobNotFound(vary.job_id)
        request = await self.edit_request(job.id, vary.requester, texts.variation(job.prompt))
        options = self._in_channel(replace(request.options, n=job.options.n), channel)
        return replace(request, options=options)

    async def _parent_of(self, edit: Edit) -> str | None:
        if edit.job_id is not None:
            return edit.job_id
        if edit.on is None:
            return None
        job = await self.job_for(edit.on)
        # A failure message is linked too, but has no image to edit.
        return job.id if job is not None and job.status == "succeeded" else None

    @staticmethod
    async def _fetch(
        files: Downloader | None, wanted: Sequence[RemoteFile]
    ) -> tuple[SourceImage, ...]:
        if not wanted:
            return ()
        if files is None:
            raise AttachmentRejected(wanted[0].filename, "files can't be fetched here")
        return await files.fetch_all(wanted)

    # --- what the platforms keep about jobs ---------------------------------------------
    async def get_job(self, job_id: str) -> JobRecord | None:
        """A stored job, or None."""
        return await self.store.get_job(job_id)

    async def has_images(self, job_id: str) -> bool:
        """Whether the job's images are still kept (so it can be edited)."""
        return bool(await self.store.job_images(job_id))

    async def job_for(self, ref: MessageRef) -> JobRecord | None:
        """The job a message shows (its progress, result or failure), or None."""
        return await self.store.job_for_message(ref.platform, ref.key)

    async def link_message(self, ref: MessageRef, job_id: str) -> None:
        """Remember that a message shows this job, for replies and buttons."""
        await self.store.link_message(ref.platform, ref.key, job_id)

    async def set_platform_ref(self, job_id: str, ref: Mapping[str, object]) -> None:
        """Keep (merged) what a later process needs to find the job's message again."""
        await self.store.set_platform_ref(job_id, ref)

    async def first_time(self, event_key: str) -> bool:
        """True the first time a platform event is seen: handle it. Retries get False."""
        return await self.store.claim_event(event_key)

    async def run(
        self,
        request: ImageRequest,
        progress: ProgressCallback | None = None,
        *,
        on_admitted: AdmittedCallback | None = None,
    ) -> JobResult:
        """Make or edit images for one request, reporting progress; raises UserFacingError."""
        try:
            request = await self.validate(request)
            requester = request.requester
            standing = await self.policy.standing(requester)
            refuse_blocked(standing, requester)
            # Bigger than a whole limit or budget: say what would fit, not when to retry.
            check_never_fits(standing, request)
            key = requester.key
            waiting = self._slots.queued_for(key)
            if waiting >= self.settings.imagine_user_queue:
                raise QueueFull(waiting)
            # The place is taken before the first await, so requests arriving together each
            # count the others (for the cap and for the places they are shown).
            helper = self._helper_for(request)
            estimate = estimate_cost(request.options, len(request.sources), len(request.prompt))
            if helper is not None:
                # The rewrite is paid for too: reserved with the image, against the same rules.
                estimate += helper.estimate_cost(request.prompt)
            # A prompt to rewrite first takes its place in line, but no slot until it is rewritten.
            ticket = self._slots.join(key, ready=not request.enhance)
            try:
                job = await self.store.admit(
                    request, scopes=standing.counted, estimated_cost=estimate
                )
            except BaseException:
                self._slots.leave(ticket)
                raise
        except UserFacingError:
            metrics.job_refused(request)
            raise
        metrics.job_admitted(request)
        metrics.queue_depth(self._slots.waiting)
        started = self._clock()
        emit = _SafeEmitter(progress, job.id)
        audit = JobAudit(job.id, request, started, self._clock)
        live = _Live(asyncio.current_task())
        self._live[job.id] = live
        written = request.prompt
        try:
            try:
                if on_admitted is not None:
                    await on_admitted(job, self._slots.position(ticket))
                if helper is not None:
                    request = await self._rewrite(job, request, helper, emit, live)
            except BaseException:
                self._slots.leave(ticket)  # it ended before its turn: the place goes too
                raise
            result = await self._execute(job, request, emit, ticket, live)
        except UserFacingError as exc:
            live.ending = True  # Cancel can't interrupt recording how it ended
            cost = billed_cost(exc, request) + live.spent
            audit.log("failed", reason=type(exc).__name__, cost=cost)
            metrics.job_finished(request, "failed", self._clock() - started, cost)
            await asyncio.shield(self._fail(job.id, exc.user_message, emit, cost_usd=cost or None))
            raise
        except asyncio.CancelledError:
            by = live.cancelled_by
            task = live.task
            # Cancelled by a person (and not also by a shutdown): the job ends as cancelled.
            if by is not None and task is not None and task.uncancel() == 0:
                audit.log("cancelled", reason=f"by {by.key}")
                # The call was on the wire: OpenAI may bill it, so the ledger keeps the estimate.
                # A call on the wire (the rewrite or the image) may be billed: keep its estimate.
                billed = (live.spent + live.rewriting) or None
                if live.calling:
                    billed = live.spent + estimate_cost(
                        request.options, len(request.sources), len(request.prompt)
                    )
                metrics.job_finished(request, "cancelled", self._clock() - started, billed)
                await asyncio.shield(
                    self._fail(
                        job.id, f"cancelled by {by.key}", emit, cost_usd=billed, cancelled_by=by
                    )
                )
                raise JobCancelled(job.id, by.user_id) from None
            audit.log("cancelled")
            metrics.job_finished(request, "interrupted", self._clock() - started, live.spent)
            await asyncio.shield(self._fail(job.id, "cancelled", emit, cost_usd=live.spent or None))
            raise
        except Exception as exc:
            live.ending = True
            logger.exception("job %s failed unexpectedly", job.id)
            audit.log("failed", reason=type(exc).__name__)
            metrics.job_finished(request, "failed", self._clock() - started)
            error = f"internal error: {type(exc).__name__}"
            await asyncio.shield(self._fail(job.id, error, emit))
            raise InternalError(job.id) from exc
        finally:
            self._live.pop(job.id, None)
            metrics.queue_depth(self._slots.waiting)
        audit.log("succeeded", result=result)
        metrics.job_finished(request, "succeeded", self._clock() - started, result.cost_usd)
        await emit(Finished(job.id, "succeeded"))
        original = written if request.prompt != written else None
        return replace(result, elapsed_s=self._clock() - started, original_prompt=original)

    def _helper_for(self, request: ImageRequest) -> PromptHelper | None:
        if not request.enhance:
            return None
        if self.prompt_help is None:
            raise InvalidRequest(texts.NO_PROMPT_HELP, param="enhance")
        return self.prompt_help

    async def _rewrite(
        self,
        job: JobRecord,
        request: ImageRequest,
        helper: PromptHelper,
        emit: _SafeEmitter,
        live: _Live,
    ) -> ImageRequest:
        """The request with its prompt rewritten by prompt help; the rewrite's cost is kept."""
        # A rewrite that fails but was billed carries its cost_usd: billed_cost counts it.
        hashed = request.requester.hashed_id
        live.rewriting = helper.estimate_cost(request.prompt)
        try:
            enhanced = await helper.enhance(request.prompt, safety_identifier=hashed)
        finally:
            live.rewriting = 0.0
        live.spent += enhanced.cost_usd
        await self.store.set_prompt(job.id, enhanced.prompt)
        await emit(PromptRewritten(job.id, enhanced.prompt))
        return replace(request, prompt=enhanced.prompt, enhance=False)

    async def rephrase(self, job_id: str, requester: Requester) -> JobRecord:
        """After a safety block: prompt help's rewrite of the job's prompt, kept as a job of its
        own (its parent is the blocked job) so it is charged like any request, and shown to the
        requester to confirm before anything is sent again (``Retry(suggestion_id=...)``)."""
        helper = self.prompt_help
        if helper is None:
            raise InvalidRequest(texts.NO_PROMPT_HELP, param="enhance")
        job = await self.store.get_job(job_id)
        if job is None:
            raise JobNotFound(job_id)
        if job.requester.key != requester.key:
            raise NotAllowed(texts.ONLY_OWNER_REPHRASES)
        standing = await self.policy.standing(requester)
        refuse_blocked(standing, requester)
        # A job that makes no image: it counts dollars, not images.
        ask = ImageRequest(requester, job.prompt, replace(job.options, n=0), parent_job_id=job.id)
        estimate = helper.estimate_cost(job.prompt, after_block=True)
        suggestion = await self.store.admit(ask, scopes=standing.counted, estimated_cost=estimate)
        try:
            enhanced = await helper.enhance(
                job.prompt, after_block=True, safety_identifier=requester.hashed_id
            )
        except UserFacingError as exc:
            cost = float(getattr(exc, "cost_usd", 0.0))
            await record_failure(self.store, suggestion.id, exc.user_message, cost_usd=cost)
            raise
        except BaseException:
            await asyncio.shield(record_failure(self.store, suggestion.id, "cancelled"))
            raise
        await self.store.settle_text(suggestion.id, enhanced.prompt, enhanced.cost_usd)
        metrics.spent(requester, enhanced.cost_usd)
        found = await self.store.get_job(suggestion.id)
        assert found is not None
        return found

    async def _execute(
        self,
        job: JobRecord,
        request: ImageRequest,
        emit: _SafeEmitter,
        ticket: Ticket,
        live: _Live,
    ) -> JobResult:
        # Cancelled or failing while it waits, the ticket leaves the line by itself.
        await self._slots.wait(ticket, lambda position: emit(Queued(job.id, position)))
        metrics.queue_depth(self._slots.waiting)
        shared = self.store.database.shared
        try:
            if shared:
                await self._take_shared_slot(job.id, emit)
            await self.store.mark_running(job.id)
            # Before any money is spent: a folder that can't take the result refuses now.
            await self.store.check_writable(job.id)
            await emit(Started(job.id))

            async def on_partial(index: int, data: bytes, output_format: str) -> None:
                await emit(PartialImage(job.id, index, data, output_format))

            wants_partials = request.options.partial_images > 0 and emit.listening
            live.calling = True
            with metrics.provider_call():
                provided = await self.provider.create_images(
                    request, on_partial=on_partial if wants_partials else None
                )
            # Made (and billed): from here on it is finished, not cancelled.
            live.calling, live.made = False, True
        finally:
            self._slots.release()
            if shared:
                await asyncio.shield(self._give_shared_slot(job.id))
        if not provided.images:
            # Not the user's fault: an answer without images is a failed call (and refunded).
            raise ProviderUnavailable("the answer held no image")
        model = request.options.model
        cost = (
            cost_from_usage(model, provided.usage)
            if provided.usage is not None
            else estimate_cost(request.options, len(request.sources), len(request.prompt))
        )
        cost += live.spent  # the rewrite, if prompt help made one
        stored = await self.store.finish(job.id, provided, cost)
        return JobResult(
            job_id=job.id,
            request=request,
            images=stored,
            usage=provided.usage,
            cost_usd=cost,
            elapsed_s=0.0,
            size=provided.size,
            quality=provided.quality,
        )

    async def _take_shared_slot(self, job_id: str, emit: _SafeEmitter) -> None:
        """Wait for one of IMAGINE_MAX_CONCURRENCY slots counted over every instance."""
        cap = self.settings.imagine_max_concurrency
        remind = SHARED_SLOT_REMIND_INTERVALS * self.settings.imagine_progress_interval
        loop = asyncio.get_running_loop()
        pause = SHARED_SLOT_POLL_S
        told: float | None = None
        while not await self.store.take_slot(job_id, cap):
            if told is None:
                metrics.SLOT_WAITS.inc()
            if told is None or loop.time() - told >= remind:
                # Its own turn came, but other instances hold every slot: it is next.
                await emit(Queued(job_id, 1))
                told = loop.time()
            await asyncio.sleep(pause)
            pause = min(pause * 1.5, 2.0)

    async def _give_shared_slot(self, job_id: str) -> None:
        try:
            await self.store.give_slot(job_id)
        except Exception as exc:
            # The lease runs out by itself; until then it holds one slot too many.
            logger.warning("could not free the shared slot of job %s: %s", job_id, exc)

    async def _fail(
        self,
        job_id: str,
        error: str,
        emit: _SafeEmitter,
        *,
        cost_usd: float | None = None,
        cancelled_by: Requester | None = None,
    ) -> None:
        by = cancelled_by.key if cancelled_by is not None else None
        await record_failure(self.store, job_id, error, cost_usd=cost_usd, cancelled_by=by)
        await emit(Finished(job_id, "failed"))

    # --- cancelling -----------------------------------------------------------------------
    async def cancel(self, job_id: str, by: Requester, *, admin: bool = False) -> str:
        """Stop a job still waiting or being made; what to tell ``by`` (privately) if it can't.

        Its requester and admins (``admin``: the platform says so, or IMAGINE_ADMIN_USERS) may.
        The job then ends as cancelled in its own run (its message says by whom); an empty
        answer means that happened.
        """
        job = await self.store.get_job(job_id)
        if job is None:
            raise JobNotFound(job_id)
        admin = admin or self.settings.is_admin(by.platform, by.user_id)
        if job.requester.key != by.key and not admin:
            raise NotAllowed(texts.ONLY_OWNER_CANCELS)
        live = self._live.get(job_id)
        if not job.unfinished or live is None or live.made or live.ending:
            return texts.too_late_to_cancel(job.status)
        if live.cancelled_by is None and live.task is not None:
            live.cancelled_by = by
            live.task.cancel()
        return ""

    async def validate(self, request: ImageRequest) -> ImageRequest:
        """Check options and turn raw attachments into API-ready images (off the event loop)."""
        request = replace(request, prompt=request.prompt.strip())
        check_options(request, max_images=self.settings.imagine_max_images)
        if not request.sources:
            return request
        max_bytes = self.settings.max_attachment_bytes
        max_pixels = self.settings.imagine_max_input_pixels
        sources = tuple(
            await asyncio.gather(
                *(
                    decode_off_loop(
                        images.normalise_source,
                        source.data,
                        source.filename,
                        max_bytes=max_bytes,
                        max_pixels=max_pixels,
                    )
                    for source in request.sources
                )
            )
        )
        mask = request.mask
        if mask is not None:
            mask = await decode_off_loop(
                images.prepare_mask,
                mask.data,
                mask.filename,
                sources[0],
                max_bytes=max_bytes,
                max_pixels=max_pixels,
            )
        return replace(request, sources=sources, mask=mask)

    async def regenerate_request(self, job_id: str, requester: Requester) -> ImageRequest:
        """The same prompt, options and inputs as a stored job, asked by ``requester``."""
        job = await self.store.get_job(job_id)
        if job is None:
            raise JobNotFound(job_id)
        sources, mask = await self.store.job_sources(job_id)
        if job.source_count and not sources:
            raise JobNotFound(job_id)
        return ImageRequest(
            requester=requester,
            prompt=job.prompt,
            options=job.options,
            sources=sources,
            mask=mask,
            parent_job_id=job.parent_job_id,
        )

    async def edit_request(
        self,
        job_id: str,
        requester: Requester,
        prompt: str,
        extra: Sequence[SourceImage] = (),
        mask: SourceImage | None = None,
    ) -> ImageRequest:
        """An edit whose first input is the stored job's first output image."""
        job = await self.store.get_job(job_id)
        stored = await self.store.job_images(job_id) if job is not None else ()
        if job is None or not stored:
            raise JobNotFound(job_id)
        first = stored[0]
        try:
            data = await asyncio.to_thread(first.read_bytes)
        except OSError:
            raise JobNotFound(job_id) from None
        source = SourceImage(data=data, filename=first.path.name, mime=first.mime)
        # An edit keeps the result's look (size, quality, format) but makes one image.
        options = replace(job.options, n=1, partial_images=self.settings.imagine_partial_images)
        return ImageRequest(
            requester=requester,
            prompt=prompt,
            options=options,
            sources=(source, *extra),
            mask=mask,
            parent_job_id=job_id,
        )

    async def recover_interrupted(self) -> list[JobRecord]:
        """Interrupted jobs (refunded) whose users weren't told yet; the adapters tell them.

        Jobs whose process is gone are ended first; a live job of another process is never
        touched. Jobs interrupted earlier (found by any command that opened the store) are
        included until a process that runs their platform has announced them. Done once per
        process: every adapter that asks gets the same list and picks its own.
        """
        async with self._recover_lock:
            if self._recovered is None:
                await self.store.recover_interrupted()
                self._recovered = await self.store.claim_interrupted(self._announcing())
            return list(self._recovered)

    async def newly_interrupted(self, platform: str) -> list[JobRecord]:
        """Jobs of ``platform`` interrupted since the last look, claimed for telling, once each.

        For an adapter that runs beside other instances on one database: a job whose instance
        died is ended here (refunded) and handed to exactly one surviving adapter to announce.
        """
        await self.store.recover_interrupted()
        return await self.store.claim_interrupted({platform})

    def _announcing(self) -> set[str] | None:
        # Jobs of a platform this process doesn't run wait for one that does.
        settings = self.settings
        platforms = {
            name
            for name, token in (
                ("discord", settings.discord_token),
                ("slack", settings.slack_bot_token),
            )
            if token is not None
        }
        return platforms or None


@dataclass
class _Live:
    """A job this process runs: its task, and how far it got."""

    task: asyncio.Task[object] | None
    calling: bool = False  # the provider call is on the wire
    made: bool = False  # the provider returned the images
    cancelled_by: Requester | None = None
    spent: float = 0.0  # dollars already billed for it (a prompt rewrite)
    ending: bool = False  # it failed and its ending is being recorded
    rewriting: float = 0.0  # the estimate of a prompt rewrite on the wire


class _SafeEmitter:
    """Delivers progress events; a broken progress display never fails the job itself."""

    def __init__(self, progress: ProgressCallback | None, job_id: str) -> None:
        self._progress = progress
        self._job_id = job_id

    @property
    def listening(self) -> bool:
        return self._progress is not None

    async def __call__(self, event: ProgressEvent) -> None:
        if self._progress is None:
            return
        try:
            await self._progress(event)
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.warning(
                "progress display failed for job %s (%s)",
                self._job_id,
                type(event).__name__,
                exc_info=True,
            )
