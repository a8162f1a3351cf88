"""A job's placeholder while it waits and runs: posted on Queued, edited within a call budget.

Every job of a workspace shares Slack's per-method limits (chat.update is Tier 3, about 50 calls
a minute), so progress is cosmetic and cheap: only the newest state is shown, an edit is made only
from spare capacity (never ahead of a call that must land, such as another job's final edit),
and each job spends at most ``PROGRESS_CALLS`` calls on it. A preview (upload, edit, and the
delete afterwards) is shown only while the workspace is quiet.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_slack_response import AsyncSlackResponse

from adapters import slack_blocks as blocks
from adapters.slack_rate import METHOD_TIERS, Deferred, PacedWebClient, best_effort
from bot import images
from bot.models import (
    Finished,
    ImageRequest,
    PartialImage,
    ProgressEvent,
    Queued,
    Started,
)

if TYPE_CHECKING:
    from bot.service import ImageService

logger = logging.getLogger("adapters.slack")

# Web API calls one job may spend on progress edits (the placeholder, its upload and its final
# edit are not counted: they always happen). With those four, a job costs at most six calls.
PROGRESS_CALLS = 2
# One preview: files.getUploadURLExternal, files.completeUploadExternal, chat.update, files.delete.
PREVIEW_CALLS = 4
_PREVIEW_METHODS = (
    "files.getUploadURLExternal",
    "files.completeUploadExternal",
    "chat.update",
    "files.delete",
)
# chat.update calls left free for final edits that may come at any moment.
FINAL_EDIT_RESERVE = 10
# A place in line is worth an edit only after this many progress intervals of waiting.
_POSITION_PATIENCE = 10

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


def working_state(started_epoch: float, previews: int) -> str:
    """``working since 12:03:15`` in the reader's own time zone (Slack formats the date)."""
    stamp = int(started_epoch)
    fallback = datetime.fromtimestamp(stamp, UTC).strftime("%H:%M:%S UTC")
    preview = f", preview {previews}" if previews else ""
    return f"working since <!date^{stamp}^{{time_secs}}|{fallback}>{preview}"


class ProgressMessage:
    """The placeholder of one job until its result or failure is shown."""

    def __init__(
        self,
        client: PacedWebClient,
        service: ImageService,
        request: ImageRequest,
        channel: str,
        thread_ts: str | None,
        interval: float,
    ) -> None:
        self.client = client
        self.budget = client.budget
        self.service = service
        self.store = service.store
        self.request = request
        self.channel = channel
        self.thread_ts = thread_ts
        self.interval = interval
        # A deferred edit is tried again this often.
        self.retry_every = max(interval, 0.05)
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
        self.progress_calls = 0
        # A format image blocks can't show costs a JPEG upload at the end: two calls fewer here.
        inline = request.options.output_format in ("png", "jpeg")
        self._allowance = PROGRESS_CALLS if inline else 0
        self._shown_state = ""
        self._preview_tried = False
        self._posted_at = 0.0
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
            self.started = time.time()
        elif isinstance(event, PartialImage):
            self.previews += 1
            self.pending_preview = event.data
        elif isinstance(event, Finished):
            return
        self._wake.set()

    async def _post_placeholder(self) -> None:
        state = blocks.queued_state(self.position)
        text = self._headline(state)
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
        self._shown_state = state
        self._last = self._posted_at = asyncio.get_running_loop().time()
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
        deferred = False
        while not self._closing.is_set():
            if deferred:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._closing.wait(), self.retry_every)
            else:
                await self._wake.wait()
            delay = self._last + self.interval - loop.time()
            if delay > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._closing.wait(), delay)
            if self._closing.is_set():
                return
            self._wake.clear()
            deferred = False
            try:
                deferred = await self._render_progress()
            except SlackApiError as exc:
                if exc.response.get("error") == "message_not_found":
                    # Someone deleted the placeholder; the result is posted afresh at the end.
                    logger.info("placeholder of job %s was deleted", self.job_id)
                    return
                deferred = exc.response.status_code == 429
                logger.info("progress update for job %s skipped: %s", self.job_id, exc)
            except Deferred:
                deferred = True
            except Exception as exc:  # progress is cosmetic; the job goes on
                logger.warning("progress update for job %s failed: %s", self.job_id, exc)
            self._last = loop.time()

    def _state(self) -> str | None:
        """What the placeholder should say now; None if a queue position is not worth an edit."""
        if self.started is not None:
            return working_state(self.started, self.previews if self.preview_file else 0)
        waited = asyncio.get_running_loop().time() - self._posted_at
        if waited < self.interval * _POSITION_PATIENCE:
            return None
        if self.progress_calls >= self._allowance - 1:
            return None  # the job's last progress call is kept for "working"
        return blocks.queued_state(self.position)

    async def _render_progress(self) -> bool:
        """Show the newest state if it differs and the budgets allow; True if it must wait."""
        preview = self.pending_preview if self._preview_affordable() else None
        state = self._state()
        if preview is None and (state is None or state == self._shown_state):
            return False
        cost = 1 + (PREVIEW_CALLS - 1 if preview is not None else 0)
        allowance = self._allowance + (PREVIEW_CALLS if preview is not None else 0)
        if self.progress_calls + cost > allowance:
            return False
        with best_effort(keep=FINAL_EDIT_RESERVE):
            if not self.budget.try_acquire("progress", self.channel):
                return True
            if preview is not None:
                self.pending_preview = None
                self._preview_tried = True
                self._allowance = allowance
                await self._upload_preview(preview)
            state = self._state() or self._shown_state
            text = self._headline(state)
            self.progress_calls += 1
            await self._update(text, blocks.progress_blocks(text, self.preview_file))
        self._shown_state = state
        return False

    def _preview_affordable(self) -> bool:
        """One preview per job, and only while the workspace has half its budget to spare."""
        if self.pending_preview is None or self.started is None or self._preview_tried:
            return False
        if not self.images_ok:
            return False
        return all(self.budget.spare(m) * 2 >= METHOD_TIERS[m] for m in _PREVIEW_METHODS)

    async def _upload_preview(self, data: bytes) -> None:
        small = await asyncio.to_thread(images.preview_jpeg, data)
        self.progress_calls += 3  # the upload's two calls and the delete at the end
        uploaded = await self.client.files_upload_v2(
            file=small, filename=f"preview-{self.job_id}.jpg", title="Preview"
        )
        self.preview_file = str(uploaded["files"][0]["id"])
        self.preview_files.append(self.preview_file)

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
