"""A job's placeholder message: posted when queued, updated with progress, finished with buttons."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_slack_response import AsyncSlackResponse

from adapters import slack_blocks as blocks
from adapters.slack_progress import CANT_POST_HERE, ProgressMessage
from bot import images
from bot.models import JobResult

__all__ = [
    "CANT_POST_HERE",
    "FAILED_STATE",
    "INTERRUPTED_STATE",
    "THREAD_GONE",
    "UNAVAILABLE_STATE",
    "Placeholder",
]

logger = logging.getLogger("adapters.slack")

FAILED_STATE = "not made — nothing was charged"
UNAVAILABLE_STATE = (
    "not made — the image service is unavailable right now; nothing was charged, please try again"
)
INTERRUPTED_STATE = "interrupted because the bot restarted — nothing was charged; please try again"


# What Slack answers when a thread's root message is gone.
THREAD_GONE = frozenset({"invalid_thread_ts", "thread_not_found", "message_not_found"})

# Slack docs (Block Kit image block): "png, jpg, jpeg, or gif". Other formats get a rendition.
_INLINE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".gif"})
# Long side of the rendition shown inline for other formats (the uploaded files are untouched).
_INLINE_SIDE = 2048


class Placeholder(ProgressMessage):
    """One job's placeholder message, from "queued" to its result (or why there is none)."""

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
        # Link before anything of the result is visible: a reply in the thread the moment
        # the images appear must edit this job, not the one before it.
        await self._link(result.job_id)
        file_ids = await self._upload(result)
        self.uploaded = True
        root = self.thread_ts or self.ts
        assert root is not None and self.ts is not None
        inline = await self._inline_file(result, file_ids)
        kept = [*file_ids, inline] if inline is not None and inline not in file_ids else file_ids
        # Delete removes every file listed here, the inline rendition too.
        await self.store.set_platform_ref(result.job_id, {"files": kept, "root": root})
        text = self._headline(f"done in {result.elapsed_s:.0f} s")
        content = blocks.result_blocks(text, self._details(result), result.job_id, inline)
        await self._show_result(
            result.job_id, text, content if self.images_ok else blocks.text_only(content)
        )
        await self._delete_previews()

    async def _link(self, job_id: str) -> None:
        assert self.ts is not None
        await self.store.link_message("slack", f"{self.channel}:{self.ts}", job_id)
        # The thread root points at the newest image, so a reply edits that one.
        root = self.thread_ts or self.ts
        await self.store.link_message("slack", f"{self.channel}:{root}", job_id)

    async def _inline_file(self, result: JobResult, file_ids: list[str]) -> str | None:
        """The file the result's image block shows: the first image, or a PNG/JPEG of it."""
        if not file_ids or not result.images or not self.images_ok:
            return None
        first = result.images[0]
        if first.path.suffix.lower() in _INLINE_SUFFIXES:
            return file_ids[0]
        # Image blocks show only PNG, JPEG and GIF: show a JPEG, private to the bot like the
        # previews, and keep the asked format in the thread.
        try:
            data = await asyncio.to_thread(first.read_bytes)
            shown = await asyncio.to_thread(images.preview_jpeg, data, _INLINE_SIDE)
            uploaded = await self.client.files_upload_v2(
                file=shown, filename=f"imagine-{result.job_id}-shown.jpg", title="Result"
            )
        except Exception as exc:  # the result is still shown, as text
            logger.info("no inline image for job %s: %s", result.job_id, exc)
            return None
        return str(uploaded["files"][0]["id"])

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
        await self._link(job_id)
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
            await self._update(text, content)

    async def show_unposted(self, result: JobResult, reason: str) -> None:
        """The images could not be uploaded: show the job's details and buttons without them."""
        await self._stop()
        text = self._headline(f"made, but Slack wouldn't take the upload ({reason})")
        content = blocks.result_blocks(text, self._details(result), result.job_id, None)
        try:
            if self.ts is None:
                await self._repost(result.job_id)
            # Buttons and thread replies still reach the job: its images are kept.
            await self._link(result.job_id)
            await self._show_result(result.job_id, text, content)
        except SlackApiError as exc:
            logger.warning("couldn't show job %s without its images: %s", result.job_id, exc)
        await self._delete_previews()

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
