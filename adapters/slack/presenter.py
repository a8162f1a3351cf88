"""One job in Slack: its placeholder (posted when admitted), progress, result or failure.

Every job of a workspace shares Slack's per-method limits (chat.update is Tier 3, about 50 calls
a minute), so progress is cosmetic and cheap: an edit is made only from spare capacity (never
ahead of a call that must land, such as another job's final edit), and each job spends at most
``PROGRESS_CALLS`` calls on it. A preview (upload, edit, and the delete afterwards) is shown only
while the workspace is quiet. The core's Throttle merges the views; ``show`` says "not now".
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import aiohttp
from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.web.async_slack_response import AsyncSlackResponse
from slack_sdk.webhook.async_client import AsyncWebhookClient

from adapters.slack import blocks
from adapters.slack.rate import METHOD_TIERS, Deferred, PacedWebClient, best_effort
from adapters.slack.text import MARKUP
from bot import images, texts
from bot.commands import MessageRef
from bot.errors import ContentBlocked, count_images
from bot.models import JobResult
from bot.presenting import CantPost, Failure, JobView, Links, NotShown

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
# What Slack answers when a thread's root message is gone.
THREAD_GONE = frozenset({"invalid_thread_ts", "thread_not_found", "message_not_found"})
# Slack docs (Block Kit image block): "png, jpg, jpeg, or gif". Other formats get a rendition.
_INLINE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".gif"})
# Long side of the rendition shown inline for other formats (the uploaded files are untouched).
_INLINE_SIDE = 2048


@dataclass(frozen=True)
class Reply:
    """Where a job is shown and how to tell its user something only they see."""

    user: str
    channel: str
    thread_ts: str | None = None
    response_url: str | None = None


def _error(exc: SlackApiError) -> str:
    return str(exc.response.get("error"))


async def tell(
    client: PacedWebClient, reply: Reply, text: str, content: list[blocks.Block] | None = None
) -> None:
    """Show ``text`` (or ``content``) to one user only (ephemeral), else via the response URL."""
    try:
        await client.chat_postEphemeral(
            channel=reply.channel,
            user=reply.user,
            text=text,
            blocks=content,
            thread_ts=reply.thread_ts,
        )
        return
    except SlackApiError as exc:
        if not reply.response_url:
            logger.warning("couldn't tell %s in %s: %s", reply.user, reply.channel, _error(exc))
            return
    # Outside channels the bot is in, only the command's response URL reaches the user.
    response = await AsyncWebhookClient(reply.response_url).send(
        text=text, blocks=content, response_type="ephemeral"
    )
    if response.status_code != 200:
        logger.warning(
            "couldn't tell %s via response_url: HTTP %s", reply.user, response.status_code
        )


class SlackPresenter:
    """``bot.presenting.Presenter`` for one job in a Slack channel or thread."""

    platform: str = "Slack"
    markup: texts.Markup = MARKUP

    def __init__(
        self, client: PacedWebClient, service: ImageService, reply: Reply, interval: float
    ) -> None:
        self.client = client
        self.budget = client.budget
        self.service = service
        self.reply = reply
        self.channel = reply.channel
        self.thread_ts = reply.thread_ts
        self.interval = interval
        self.user = reply.user
        self.prompt = ""
        self.job_id: str | None = None
        self.ts: str | None = None
        self.preview_file: str | None = None
        self.preview_files: list[str] = []
        self.image_refusals = 0
        self.progress_calls = 0
        self.uploaded = False  # the result's files are in the thread
        self._allowance = PROGRESS_CALLS
        self._checked_format = False
        self._shown_state = ""
        self._preview_tried = False
        self._posted_at = 0.0
        self._gone = False  # someone deleted the placeholder while the job ran
        self._final = False  # the placeholder already says how the job ended

    def _headline(self, state: str) -> str:
        return blocks.headline(self.user, self.prompt, state)

    # --- the placeholder ------------------------------------------------------------------
    async def open(self, view: JobView, links: Links) -> None:
        """Post the placeholder (joining a public channel if needed), record where it is."""
        self.job_id, self.user, self.prompt = view.job_id, view.requester.user_id, view.prompt
        state = texts.queued(view.position)
        text = self._headline(state)
        posted = await self._post(text, blocks.progress_blocks(text, None, self.job_id))
        self.ts = str(posted["ts"])
        self._shown_state = state
        self._posted_at = asyncio.get_running_loop().time()
        await links.record({"channel": self.channel, "ts": self.ts, "thread_ts": self.thread_ts})

    async def _post(self, text: str, content: list[blocks.Block] | None) -> AsyncSlackResponse:
        async def post() -> AsyncSlackResponse:
            return await self.client.chat_postMessage(
                channel=self.channel, thread_ts=self.thread_ts, text=text, blocks=content
            )

        try:
            return await post()
        except SlackApiError as exc:
            error = _error(exc)
            if error != "not_in_channel":
                raise CantPost(error) if error in CANT_POST_HERE else exc from None
        # /imagine works in any public channel: join it rather than fail.
        try:
            await self.client.conversations_join(channel=self.channel)
            return await post()
        except SlackApiError as exc:
            error = _error(exc)
            if error == "method_not_supported_for_channel_type":
                error = "not_in_channel"  # a private channel: only an invite helps
            raise CantPost(error) if error in CANT_POST_HERE else exc from None

    async def _update(self, text: str, content: list[blocks.Block]) -> None:
        assert self.ts is not None
        try:
            await self.client.chat_update(
                channel=self.channel, ts=self.ts, text=text, blocks=content
            )
        except SlackApiError as exc:
            # Slack can refuse an image block while it still processes the file: show text.
            plain = blocks.text_only(content)
            if _error(exc) != "invalid_blocks" or content == plain:
                raise
            self.image_refusals += 1
            await self.client.chat_update(channel=self.channel, ts=self.ts, text=text, blocks=plain)

    @property
    def images_ok(self) -> bool:
        """False once Slack refused image blocks twice (it may not show app files here)."""
        return self.image_refusals < 2

    # --- progress -------------------------------------------------------------------------
    async def show(self, view: JobView) -> bool:
        """Show the newest state if it differs and the budgets allow; False: try again later."""
        if self.ts is None or self._gone:
            return True
        if view.prompt:
            self.prompt = view.prompt  # prompt help's rewrite, once it is made
        try:
            return await self._render(view)
        except Deferred:
            return False
        except SlackApiError as exc:
            if _error(exc) == "message_not_found":
                # Someone deleted the placeholder; the result is posted afresh at the end.
                logger.info("placeholder of job %s was deleted", self.job_id)
                self._gone = True
                return True
            logger.info("progress update for job %s skipped: %s", self.job_id, exc)
            return bool(exc.response.status_code != 429)

    def _state(self, view: JobView) -> str | None:
        """What the placeholder should say now; None if a queue position is not worth an edit."""
        if view.started_at is not None:
            return texts.working(view.started_at, view.previews if self.preview_file else 0, MARKUP)
        waited = asyncio.get_running_loop().time() - self._posted_at
        if waited < self.interval * _POSITION_PATIENCE:
            return None
        if self.progress_calls >= self._allowance - 1:
            return None  # the job's last progress call is kept for "working"
        return texts.queued(view.position)

    async def _render(self, view: JobView) -> bool:
        if not self._checked_format:
            self._checked_format = True
            job = await self.service.get_job(str(self.job_id))
            # A format image blocks can't show costs a JPEG upload at the end: no calls here.
            if job is not None and job.options.output_format not in ("png", "jpeg"):
                self._allowance = 0
        preview = view.preview if self._preview_affordable(view) else None
        state = self._state(view)
        if preview is None and (state is None or state == self._shown_state):
            return True
        cost = 1 + (PREVIEW_CALLS - 1 if preview is not None else 0)
        allowance = self._allowance + (PREVIEW_CALLS if preview is not None else 0)
        if self.progress_calls + cost > allowance:
            return True
        with best_effort(keep=FINAL_EDIT_RESERVE):
            if preview is not None:
                self._preview_tried = True
                self._allowance = allowance
                await self._upload_preview(preview)
            state = self._state(view) or self._shown_state
            text = self._headline(state)
            self.progress_calls += 1
            await self._update(text, blocks.progress_blocks(text, self.preview_file, self.job_id))
        self._shown_state = state
        return True

    def _preview_affordable(self, view: JobView) -> bool:
        """One preview per job, and only while the workspace has half its budget to spare."""
        if view.preview is None or view.started_at is None or self._preview_tried:
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

    async def _delete_previews(self) -> None:
        # Previews are private to the bot; once the job has ended they are clutter.
        for file_id in self.preview_files:
            try:
                await self.client.files_delete(file=file_id)
            except SlackApiError as exc:
                logger.info("preview %s not deleted: %s", file_id, _error(exc))
        self.preview_files.clear()

    # --- the ending -----------------------------------------------------------------------
    async def show_result(self, result: JobResult, links: Links) -> None:
        """Upload the images into the thread and finish the placeholder with the buttons."""
        self.job_id, self.prompt = result.job_id, result.request.prompt
        try:
            await self._deliver(result, links)
        except Exception as exc:
            error = _error(exc) if isinstance(exc, SlackApiError) else None
            if isinstance(exc, CantPost):  # a new message for the result was refused
                error = exc.reason
            if error in CANT_POST_HERE:
                # Access was lost while the job ran: it was made (and counted), just not shown.
                self._final = True
                raise NotShown("lost_access", str(error)) from exc
            if not isinstance(exc, SlackClientError | aiohttp.ClientError | TimeoutError):
                raise
            # Slack's error code, or for a transfer that broke off, a few plain words.
            reason = error or "the connection failed"
            self._final = True
            if self.uploaded:
                logger.warning("Slack job %s: finishing its message failed: %s", self.job_id, exc)
                raise NotShown("unfinished", reason) from exc
            logger.warning("Slack job %s: uploading the result failed: %s", self.job_id, exc)
            await self._show_unposted(result, links)
            raise NotShown("refused", reason) from exc
        finally:
            await self._delete_previews()

    async def _deliver(self, result: JobResult, links: Links) -> None:
        # Link before anything of the result is visible: a reply in the thread the moment
        # the images appear must edit this job, not the one before it.
        await self._link(links)
        file_ids = await self._upload(result, links)
        self.uploaded = True
        root = self.thread_ts or self.ts
        inline = await self._inline_file(result, file_ids)
        kept = [*file_ids, inline] if inline is not None and inline not in file_ids else file_ids
        # Delete removes every file listed here, the inline rendition too.
        await links.record({"files": kept, "root": root})
        text = self._headline(texts.done(result.elapsed_s))
        content = self._result_blocks(text, result, inline)
        await self._show_final(
            links, text, content if self.images_ok else blocks.text_only(content)
        )

    def _result_blocks(
        self, text: str, result: JobResult, image_file_id: str | None
    ) -> list[blocks.Block]:
        original = result.original_prompt
        return blocks.result_blocks(
            text,
            _details(result),
            result.job_id,
            image_file_id,
            rewritten=(result.request.prompt, original) if original is not None else None,
            enhance_button=self.service.prompt_help is not None,
        )

    async def _link(self, links: Links) -> None:
        # The thread root points at the newest image, so a reply edits that one.
        keys = dict.fromkeys((self.ts, self.thread_ts or self.ts))
        await links.link(*(MessageRef("slack", f"{self.channel}:{ts}") for ts in keys))

    async def _upload(self, result: JobResult, links: Links) -> list[str]:
        """Upload the images into the job's thread; the ids of the files Slack made."""
        assert self.ts is not None
        try:
            response = await self._upload_into(result, self.thread_ts or self.ts)
        except SlackApiError as exc:
            if self.thread_ts is not None or _error(exc) not in THREAD_GONE:
                raise
            # The placeholder was the thread root and someone deleted it: start a new thread.
            logger.info("placeholder of job %s was deleted; posting anew", result.job_id)
            await self._repost(links)
            response = await self._upload_into(result, self.ts)
        return [str(f["id"]) for f in response.get("files") or []]

    async def _upload_into(self, result: JobResult, root: str) -> AsyncSlackResponse:
        uploads: list[dict[str, Any]] = []
        for stored in result.images:
            data = await asyncio.to_thread(stored.read_bytes)
            name = f"imagine-{result.job_id}-{stored.index + 1}{stored.path.suffix}"
            uploads.append({"file": data, "filename": name, "title": result.request.prompt[:200]})
        return await self.client.files_upload_v2(
            file_uploads=uploads,
            channel=self.channel,
            thread_ts=root,
            initial_comment=self._headline(count_images(len(uploads))),
        )

    async def _inline_file(self, result: JobResult, file_ids: list[str]) -> str | None:
        """The file the result's image block shows: the first image, or a JPEG of it."""
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

    async def _repost(self, links: Links) -> None:
        posted = await self._post(self._headline(texts.FINISHING), None)
        self.ts = str(posted["ts"])
        await self._link(links)
        await links.record({"channel": self.channel, "ts": self.ts, "thread_ts": self.thread_ts})

    async def _show_final(self, links: Links, text: str, content: list[blocks.Block]) -> None:
        try:
            await self._update(text, content)
        except SlackApiError as exc:
            if _error(exc) != "message_not_found":
                raise
            # Deleted after the upload: post the result (and its buttons) as a new message.
            await self._repost(links)
            await self._update(text, content)

    async def _show_unposted(self, result: JobResult, links: Links) -> None:
        """The images could not be uploaded: show the job's details and buttons without them."""
        # Buttons and thread replies still reach the job: its images are kept.
        text = self._headline(Failure("unshown", "", result.job_id).state)
        content = self._result_blocks(text, result, None)
        try:
            await self._show_final(links, text, content)
        except SlackApiError as exc:
            logger.warning("couldn't show job %s without its images: %s", result.job_id, exc)

    async def show_failure(self, failure: Failure, view: JobView) -> None:
        """Close the placeholder (if any) with the job's state and no buttons; tell the user why."""
        # An interruption or a cancellation is told on the placeholder, for everyone to see.
        self.prompt, self.user = view.prompt, view.requester.user_id
        shown = False
        if self.ts is not None and not self._final:
            text = self._headline(failure.state)
            try:
                # Not best effort: this edit waits for its turn and outlasts 429s.
                await self._update(text, blocks.progress_blocks(text, None))
                shown = True
            except SlackApiError as exc:
                logger.warning("couldn't update placeholder of job %s: %s", self.job_id, exc)
        await self._delete_previews()
        if not (shown and failure.in_place):
            await tell(self.client, self.reply, failure.message, self._refusal_blocks(failure))

    def _refusal_blocks(self, failure: Failure) -> list[blocks.Block] | None:
        """After a safety block, with prompt help on: the refusal offers a rewording."""
        blocked = isinstance(failure.error, ContentBlocked) and failure.kind == "refused"
        if not blocked or failure.job_id is None or self.service.prompt_help is None:
            return None
        return blocks.refusal_blocks(failure.message, failure.job_id)


def _details(result: JobResult) -> str:
    options = result.request.options
    return texts.result_details(
        size=result.size or options.size,
        quality=result.quality or options.quality,
        images=len(result.images),
        cost_usd=result.cost_usd,
        job_id=result.job_id,
        is_edit=result.request.is_edit,
    )
