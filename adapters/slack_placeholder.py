"""A job's placeholder message: posted when queued, updated with progress, finished with buttons."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from typing import TYPE_CHECKING, Any

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.web.async_slack_response import AsyncSlackResponse

from adapters import slack_blocks as blocks
from bot import images
from bot.models import (
    Finished,
    ImageRequest,
    JobResult,
    PartialImage,
    ProgressEvent,
    Queued,
    Started,
)

if TYPE_CHECKING:
    from bot.service import ImageService

logger = logging.getLogger("adapters.slack")

FAILED_STATE = "not made — nothing was charged"
UNAVAILABLE_STATE = (
    "not made — the image service is unavailable right now; nothing was charged, please try again"
)
INTERRUPTED_STATE = "interrupted because the bot restarted — nothing was charged; please try again"


# What Slack answers when a thread's root message is gone.
THREAD_GONE = frozenset({"invalid_thread_ts", "thread_not_found", "message_not_found"})

# Slack errors that mean "the bot may not post here", which the user (not a bug) can fix.
CANT_POST_HERE = frozenset(
    {
        "not_in_channel",
        "channel_not_found",
        "is_archived",
        "restricted_action",
        "method_not_supported_for_channel_type",
    }
)


class Placeholder:
    """One job's placeholder message: posted on Queued, then updated at most once per interval."""

    def __init__(
        self,
        client: AsyncWebClient,
        service: ImageService,
        request: ImageRequest,
        channel: str,
        thread_ts: str | None,
        interval: float,
    ) -> None:
        self.client = client
        self.service = service
        self.store = service.store
        self.request = request
        self.channel = channel
        self.thread_ts = thread_ts
        self.interval = interval
        # Elapsed time should tick even when no event arrives, but not spam chat.update.
        self.tick = max(interval, 1.0) * 5
        self.job_id: str | None = None
        self.ts: str | None = None
        self.position = 0
        self.started: float | None = None
        self.previews = 0
        self.pending_preview: bytes | None = None
        self.preview_file: str | None = None
        self.preview_files: list[str] = []
        self.image_refusals = 0
        self.cant_post: str | None = None
        self.uploaded = False  # the result's files are in the thread
        self.owner = asyncio.current_task()
        self._wake = asyncio.Event()
        self._closing = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._last = -math.inf

    @property
    def user(self) -> str:
        return self.request.requester.user_id

    def _headline(self, state: str) -> str:
        return blocks.headline(self.user, self.request.prompt, state)

    async def on_event(self, event: ProgressEvent) -> None:
        """Progress callback: cheap, so the provider's stream is never held up by Slack."""
        if isinstance(event, Queued):
            self.job_id = event.job_id
            self.position = event.position
            if self.ts is None:
                await self._post_placeholder()
        elif isinstance(event, Started):
            self.started = asyncio.get_running_loop().time()
        elif isinstance(event, PartialImage):
            self.previews += 1
            self.pending_preview = event.data
        elif isinstance(event, Finished):
            return
        self._wake.set()

    async def _post_placeholder(self) -> None:
        text = self._headline(blocks.queued_state(self.position))
        content = blocks.progress_blocks(text, None)
        posted: AsyncSlackResponse | None
        try:
            posted = await self.client.chat_postMessage(
                channel=self.channel, thread_ts=self.thread_ts, text=text, blocks=content
            )
        except SlackApiError as exc:
            posted = await self._join_and_post(exc, text, content)
        if posted is None:
            return
        response = posted
        self.ts = str(response["ts"])
        self._last = asyncio.get_running_loop().time()
        assert self.job_id is not None
        await self.store.set_platform_ref(
            self.job_id, {"channel": self.channel, "ts": self.ts, "thread_ts": self.thread_ts}
        )
        self._task = asyncio.create_task(self._loop(), name=f"slack-progress-{self.job_id}")

    async def _join_and_post(
        self, exc: SlackApiError, text: str, content: list[blocks.Block]
    ) -> AsyncSlackResponse | None:
        error = str(exc.response.get("error"))
        if error == "not_in_channel":
            # /imagine works in any public channel: join it rather than fail.
            try:
                await self.client.conversations_join(channel=self.channel)
                return await self.client.chat_postMessage(
                    channel=self.channel, thread_ts=self.thread_ts, text=text, blocks=content
                )
            except SlackApiError as again:
                error = str(again.response.get("error"))
                if error == "method_not_supported_for_channel_type":
                    error = "not_in_channel"  # a private channel: only an invite helps
        if error not in CANT_POST_HERE or self.owner is None:
            raise exc
        # The progress callback can't fail the job, so stop it before the image is paid for.
        self.cant_post = error
        self.owner.cancel()
        return None

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while not self._closing.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.tick)
            delay = self._last + self.interval - loop.time()
            if delay > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._closing.wait(), delay)
            if self._closing.is_set():
                return
            self._wake.clear()
            try:
                await self._render_progress()
            except SlackApiError as exc:
                if exc.response.get("error") == "message_not_found":
                    # Someone deleted the placeholder; the result is posted afresh at the end.
                    logger.info("placeholder of job %s was deleted", self.job_id)
                    return
                logger.warning("progress update for job %s failed: %s", self.job_id, exc)
            except Exception as exc:  # progress is cosmetic; the job goes on
                logger.warning("progress update for job %s failed: %s", self.job_id, exc)
            self._last = loop.time()

    async def _render_progress(self) -> None:
        if self.pending_preview is not None:
            data, self.pending_preview = self.pending_preview, None
            if self.images_ok:
                small = await asyncio.to_thread(images.preview_jpeg, data)
                uploaded = await self.client.files_upload_v2(
                    file=small, filename=f"preview-{self.job_id}.jpg", title="Preview"
                )
                self.preview_file = str(uploaded["files"][0]["id"])
                self.preview_files.append(self.preview_file)
        if self.started is None:
            state = blocks.queued_state(self.position)
        else:
            elapsed = asyncio.get_running_loop().time() - self.started
            state = blocks.running_state(elapsed, self.previews)
        text = self._headline(state)
        await self._update(text, blocks.progress_blocks(text, self.preview_file))

    async def _update(self, text: str, content: list[blocks.Block]) -> None:
        assert self.ts is not None
        try:
            await self.client.chat_update(
                channel=self.channel, ts=self.ts, text=text, blocks=content
            )
        except SlackApiError as exc:
            # Slack can refuse an image block while it still processes the file: show text.
            if exc.response.get("error") != "invalid_blocks" or content == blocks.text_only(
                content
            ):
                raise
            self.image_refusals += 1
            await self.client.chat_update(
                channel=self.channel, ts=self.ts, text=text, blocks=blocks.text_only(content)
            )

    async def _stop(self) -> None:
        self._closing.set()
        self._wake.set()
        if self._task is not None:
            await self._task
            self._task = None

    async def close(self, state: str) -> None:
        """Put the placeholder (if any) in a final, non-result state."""
        await self._stop()
        if self.ts is None:
            return
        text = self._headline(state)
        try:
            await self._update(text, blocks.progress_blocks(text, None))
        except SlackApiError as exc:
            logger.warning("couldn't update placeholder of job %s: %s", self.job_id, exc)
        await self._delete_previews()

    async def deliver(self, result: JobResult) -> None:
        """Upload the images into the thread, finish the placeholder, link both to the job."""
        await self._stop()
        if self.ts is None:  # the service always reports Queued first; this is a safety net
            self.job_id = result.job_id
            self.owner = None  # too late to stop the job: a failure here must raise
            await self._post_placeholder()
            await self._stop()
        file_ids = await self._upload(result)
        self.uploaded = True
        root = self.thread_ts or self.ts
        assert root is not None and self.ts is not None
        # Link before showing "done", so a reply or click right after it finds this job.
        await self.store.link_message("slack", f"{self.channel}:{self.ts}", result.job_id)
        # The thread root points at the newest image, so a reply edits that one.
        await self.store.link_message("slack", f"{self.channel}:{root}", result.job_id)
        await self.store.set_platform_ref(result.job_id, {"files": file_ids, "root": root})
        text = self._headline(f"done in {result.elapsed_s:.0f} s")
        content = blocks.result_blocks(
            text, self._details(result), result.job_id, file_ids[0] if file_ids else None
        )
        await self._show_result(
            result.job_id, text, content if self.images_ok else blocks.text_only(content)
        )
        await self._delete_previews()

    async def _upload(self, result: JobResult) -> list[str]:
        """Upload the images into the job's thread; the ids of the files Slack made."""
        assert self.ts is not None
        try:
            response = await self._upload_into(result, self.thread_ts or self.ts)
        except SlackApiError as exc:
            if self.thread_ts is not None or exc.response.get("error") not in THREAD_GONE:
                raise
            # The placeholder was the thread root and someone deleted it: start a new thread.
            logger.info("placeholder of job %s was deleted; posting anew", result.job_id)
            await self._repost(result.job_id)
            assert self.ts is not None
            response = await self._upload_into(result, self.ts)
        return [str(f["id"]) for f in response.get("files") or []]

    async def _upload_into(self, result: JobResult, root: str) -> AsyncSlackResponse:
        uploads: list[dict[str, Any]] = []
        for stored in result.images:
            data = await asyncio.to_thread(stored.read_bytes)
            name = f"imagine-{result.job_id}-{stored.index + 1}{stored.path.suffix}"
            uploads.append({"file": data, "filename": name, "title": self.request.prompt[:200]})
        return await self.client.files_upload_v2(
            file_uploads=uploads,
            channel=self.channel,
            thread_ts=root,
            initial_comment=self._headline(_count(len(uploads))),
        )

    async def _repost(self, job_id: str) -> None:
        text = self._headline("finishing…")
        posted = await self.client.chat_postMessage(
            channel=self.channel, thread_ts=self.thread_ts, text=text
        )
        self.ts = str(posted["ts"])
        await self.store.set_platform_ref(
            job_id, {"channel": self.channel, "ts": self.ts, "thread_ts": self.thread_ts}
        )

    async def _show_result(self, job_id: str, text: str, content: list[blocks.Block]) -> None:
        try:
            await self._update(text, content)
        except SlackApiError as exc:
            if exc.response.get("error") != "message_not_found":
                raise
            # Deleted after the upload: post the result (and its buttons) as a new message.
            await self._repost(job_id)
            assert self.ts is not None
            await self.store.link_message("slack", f"{self.channel}:{self.ts}", job_id)
            await self._update(text, content)

    async def show_unposted(self, result: JobResult, reason: str) -> None:
        """The images could not be uploaded: show the job's details and buttons without them."""
        await self._stop()
        text = self._headline(f"made, but Slack wouldn't take the upload ({reason})")
        content = blocks.result_blocks(text, self._details(result), result.job_id, None)
        try:
            if self.ts is None:
                await self._repost(result.job_id)
            assert self.ts is not None
            # Buttons and thread replies still reach the job: its images are kept.
            await self.store.link_message("slack", f"{self.channel}:{self.ts}", result.job_id)
            root = self.thread_ts or self.ts
            await self.store.link_message("slack", f"{self.channel}:{root}", result.job_id)
            await self._show_result(result.job_id, text, content)
        except SlackApiError as exc:
            logger.warning("couldn't show job %s without its images: %s", result.job_id, exc)
        await self._delete_previews()

    @property
    def images_ok(self) -> bool:
        """False once Slack refused image blocks twice (it may not show app files here)."""
        return self.image_refusals < 2

    async def _delete_previews(self) -> None:
        # Previews are private to the bot; once the result is shown they are clutter.
        for file_id in self.preview_files:
            try:
                await self.client.files_delete(file=file_id)
            except SlackApiError as exc:
                logger.info("preview %s not deleted: %s", file_id, exc.response.get("error"))
        self.preview_files.clear()

    def _details(self, result: JobResult) -> str:
        parts = [
            result.size or self.request.options.size,
            f"{result.quality or self.request.options.quality} quality",
            _count(len(result.images)),
            f"${result.cost_usd:.3f}",
            f"job {result.job_id}",
        ]
        if self.request.is_edit:
            parts.insert(0, "edit")
        return " · ".join(parts)


def _count(n: int) -> str:
    return "1 image" if n == 1 else f"{n} images"
