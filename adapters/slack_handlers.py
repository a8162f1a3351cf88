"""Slack listeners: ack at once, then turn the event into an ImageRequest in a background task."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from slack_bolt.async_app import AsyncApp
from slack_sdk.errors import SlackApiError

from adapters import slack_blocks as blocks
from adapters.slack_files import SlackFiles, is_image_file
from adapters.slack_jobs import SlackJobs, generic_error
from adapters.slack_text import HELP, FlagError, ParsedPrompt, clean_prompt, parse_prompt
from bot.errors import AttachmentRejected, InvalidRequest, JobNotFound, NotAllowed, UserFacingError
from bot.models import ImageOptions, ImageRequest, Requester
from bot.service import MAX_SOURCES

if TYPE_CHECKING:
    from bot.config import Settings
    from bot.service import ImageService

logger = logging.getLogger("adapters.slack")

Json = dict[str, Any]
# Message subtypes a person produces; everything else (edits, joins, bots) is ignored.
_PERSON_SUBTYPES = {None, "file_share", "thread_broadcast"}


@dataclass(frozen=True)
class _Reply:
    """Where to tell a user about a problem with what they asked."""

    user: str
    channel: str
    thread_ts: str | None = None
    response_url: str | None = None


class SlackHandlers:
    """Everything the bot does in reaction to Slack; state lives in the store, not here."""

    def __init__(
        self, settings: Settings, service: ImageService, jobs: SlackJobs, files: SlackFiles
    ) -> None:
        self.settings = settings
        self.service = service
        self.store = service.store
        self.jobs = jobs
        self.files = files
        self.client = jobs.client
        self.bot_user_id = ""
        self._tasks: set[asyncio.Task[None]] = set()

    # --- wiring ---------------------------------------------------------------------------
    def register(self, app: AsyncApp) -> None:
        """Attach every listener to the bolt app."""
        app.command("/imagine")(self._on_command)
        app.event("app_mention")(self._on_message)
        app.event("message")(self._on_message)
        app.shortcut(blocks.SHORTCUT)(self._on_shortcut)
        app.action(blocks.REGENERATE)(self._on_regenerate)
        app.action(blocks.EDIT)(self._on_edit_button)
        app.action(blocks.DELETE)(self._on_delete)
        app.view(blocks.EDIT_MODAL)(self._on_edit_submit)

    async def aclose(self) -> None:
        """Stop work in flight; unfinished jobs are marked interrupted at the next start."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _spawn(self, work: Callable[[], Awaitable[None]], reply: _Reply) -> None:
        task = asyncio.create_task(self._guarded(work, reply))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _guarded(self, work: Callable[[], Awaitable[None]], reply: _Reply) -> None:
        try:
            await work()
        except UserFacingError as exc:
            await self._tell(reply, exc.user_message)
        except FlagError as exc:
            await self._tell(reply, f"{exc}\n\n{HELP}")
        except Exception:
            logger.exception("handling a Slack request from %s failed", reply.user)
            await self._tell(reply, generic_error(None))

    async def _tell(self, reply: _Reply, text: str) -> None:
        await self.jobs.tell(
            reply.user,
            reply.channel,
            text,
            thread_ts=reply.thread_ts,
            response_url=reply.response_url,
        )

    def _allowed(self, channel: str) -> bool:
        allowed = self.settings.slack_allowed_channels
        return not allowed or channel in allowed

    def _requester(self, user: str, team: str, channel: str, name: str = "") -> Requester:
        return Requester("slack", user, team, channel, name or user)

    def _request(self, requester: Requester, parsed: ParsedPrompt, **kw: Any) -> ImageRequest:
        return ImageRequest(
            requester, parsed.prompt, self.service.options(**parsed.overrides()), **kw
        )

    # --- /imagine -------------------------------------------------------------------------
    async def _on_command(self, ack: Any, body: Json) -> None:
        await ack()
        reply = _Reply(body["user_id"], body["channel_id"], None, body.get("response_url"))

        async def work() -> None:
            if not self._allowed(reply.channel):
                raise NotAllowed(NOT_HERE)
            if not await self.store.claim_event(f"slack:trigger:{body.get('trigger_id')}"):
                return
            text = clean_prompt(body.get("text") or "")
            if not text or text.lower() in ("help", "--help", "-h"):
                await self._tell(reply, HELP)
                return
            parsed = parse_prompt(text)
            requester = self._requester(
                reply.user, body.get("team_id", ""), reply.channel, body.get("user_name", "")
            )
            await self.jobs.run(
                self._request(requester, parsed),
                channel=reply.channel,
                thread_ts=None,
                response_url=reply.response_url,
            )

        self._spawn(work, reply)

    # --- mentions, DMs and thread replies ------------------------------------------------
    async def _on_message(self, ack: Any, event: Json, body: Json) -> None:
        await ack()
        if event.get("bot_id") or event.get("subtype") not in _PERSON_SUBTYPES:
            return
        user, channel, ts = event.get("user"), event.get("channel"), event.get("ts")
        if not user or not channel or not ts or user == self.bot_user_id:
            return
        thread_ts = event.get("thread_ts")
        reply = _Reply(user, channel, thread_ts)
        self._spawn(lambda: self._handle_message(event, body, reply), reply)

    async def _handle_message(self, event: Json, body: Json, reply: _Reply) -> None:
        channel, ts, thread_ts = reply.channel, str(event["ts"]), event.get("thread_ts")
        text = event.get("text") or ""
        mentioned = bool(self.bot_user_id) and f"<@{self.bot_user_id}" in text
        direct = event.get("channel_type") == "im" or channel.startswith("D")
        in_thread = bool(thread_ts) and thread_ts != ts
        parent = (
            await self.store.job_for_message("slack", f"{channel}:{thread_ts}")
            if in_thread
            else None
        )
        if not (mentioned or direct or parent is not None):
            return  # people talking among themselves
        if not self._allowed(channel):
            return
        # app_mention and message both arrive for one mention; retries repeat either.
        if not await self.store.claim_event(f"slack:msg:{channel}:{ts}"):
            return
        prompt = clean_prompt(text, self.bot_user_id)
        if not prompt:
            if mentioned or direct:
                await self._tell(reply, HELP)
            return
        parsed = parse_prompt(prompt)
        team = str(event.get("team") or body.get("team_id") or "")
        requester = self._requester(reply.user, team, channel)
        sources, mask = await self.files.sources(event.get("files") or [])
        if parent is not None:
            request = await self.service.edit_request(
                parent.id, requester, parsed.prompt, extra=sources, mask=mask
            )
            request = replace(request, options=_with_overrides(request.options, parsed))
        else:
            request = self._request(requester, parsed, sources=sources, mask=mask)
        await self.jobs.run(request, channel=channel, thread_ts=thread_ts or ts)

    # --- the "Edit image" shortcut and the edit modal -------------------------------------
    async def _on_shortcut(self, ack: Any, body: Json) -> None:
        await ack()
        user, channel = body["user"]["id"], body["channel"]["id"]
        message = body.get("message") or {}
        ts = str(message.get("ts") or body.get("message_ts"))
        reply = _Reply(user, channel, message.get("thread_ts"), body.get("response_url"))
        try:
            if not self._allowed(channel):
                raise NotAllowed(NOT_HERE)
            job = await self.store.job_for_message("slack", f"{channel}:{ts}")
            files = message.get("files") or []
            images = [f for f in files if is_image_file(f) and f.get("id")]
            if job is None and not images:
                await self._tell(reply, "That message has no image I can edit.")
                return
            # Only ids go into the modal (its metadata holds 3000 characters); the files are
            # looked up again on submit.
            metadata: Json = {"c": channel, "t": message.get("thread_ts") or ts}
            if job is not None:
                metadata["j"] = job.id
                described = "Editing the image in this message."
            else:
                if len(images) > MAX_SOURCES + 1:  # the images and one mask
                    raise InvalidRequest(
                        f"That message has {len(images)} images; at most {MAX_SOURCES} can be "
                        "edited together (and a mask).",
                        param="image",
                    )
                metadata["f"] = [str(f["id"]) for f in images]
                described = blocks.editing_files([str(f.get("name") or "") for f in images])
            await self._open_modal(body["trigger_id"], metadata, described)
        except UserFacingError as exc:
            await self._tell(reply, exc.user_message)
        except Exception:
            logger.exception("opening the edit modal for %s failed", user)
            await self._tell(reply, generic_error(None))

    async def _open_modal(self, trigger_id: str, metadata: Json, described: str) -> None:
        await self.client.views_open(
            trigger_id=trigger_id, view=blocks.edit_modal(metadata, described)
        )

    async def _on_edit_submit(self, ack: Any, body: Json, view: Json) -> None:
        values = view.get("state", {}).get("values", {})
        prompt = ((values.get(blocks.PROMPT_BLOCK) or {}).get(blocks.PROMPT_ACTION) or {}).get(
            "value"
        ) or ""
        if not prompt.strip():
            await ack(response_action="errors", errors={blocks.PROMPT_BLOCK: "Say what to change."})
            return
        await ack()
        metadata: Json = json.loads(view.get("private_metadata") or "{}")
        user = body["user"]["id"]
        reply = _Reply(user, metadata.get("c", ""), metadata.get("t"))

        async def work() -> None:
            if not await self.store.claim_event(f"slack:view:{view.get('id')}"):
                return
            if not self._allowed(reply.channel):
                raise NotAllowed(NOT_HERE)
            parsed = parse_prompt(clean_prompt(prompt))
            team = str(body.get("team", {}).get("id") or "")
            requester = self._requester(user, team, reply.channel, body["user"].get("name", ""))
            if metadata.get("j"):
                request = await self.service.edit_request(metadata["j"], requester, parsed.prompt)
                request = replace(request, options=_with_overrides(request.options, parsed))
            else:
                shared = await self._shared_files(metadata.get("f") or [])
                sources, mask = await self.files.sources(shared)
                if not sources:
                    raise JobNotFound()
                request = self._request(requester, parsed, sources=sources, mask=mask)
            await self.jobs.run(request, channel=reply.channel, thread_ts=reply.thread_ts)

        self._spawn(work, reply)

    async def _shared_files(self, refs: list[Any]) -> list[Json]:
        """The file objects Slack has now for the ids the edit modal carried."""
        found: list[Json] = []
        for ref in refs:
            # A modal opened by an older version carried file objects, not ids.
            file_id = str(ref.get("id") if isinstance(ref, Mapping) else ref)
            try:
                info = await self.client.files_info(file=file_id)
            except SlackApiError as exc:
                raise AttachmentRejected(
                    "an image of that message",
                    f"Slack can't find it any more ({exc.response.get('error')}); it may have "
                    "been deleted. Share it again and use Edit image once more.",
                ) from None
            found.append(dict(info.get("file") or {"id": file_id}))
        return found

    # --- result buttons -------------------------------------------------------------------
    def _button(self, body: Json) -> tuple[str, _Reply, str, Json]:
        user = body["user"]["id"]
        channel = str(body.get("channel", {}).get("id") or body["container"]["channel_id"])
        message = body.get("message") or {}
        root = str(message.get("thread_ts") or message.get("ts") or "")
        reply = _Reply(user, channel, root or None, body.get("response_url"))
        return str(body["actions"][0]["value"]), reply, root, message

    async def _on_regenerate(self, ack: Any, body: Json) -> None:
        await ack()
        job_id, reply, root, _ = self._button(body)

        async def work() -> None:
            if not self._allowed(reply.channel):
                raise NotAllowed(NOT_HERE)
            team = str(body.get("team", {}).get("id") or "")
            requester = self._requester(
                reply.user, team, reply.channel, body["user"].get("name", "")
            )
            request = await self.service.regenerate_request(job_id, requester)
            await self.jobs.run(
                request, channel=reply.channel, thread_ts=root, response_url=reply.response_url
            )

        self._spawn(work, reply)

    async def _on_edit_button(self, ack: Any, body: Json) -> None:
        await ack()
        job_id, reply, root, _ = self._button(body)
        try:
            if not self._allowed(reply.channel):
                raise NotAllowed(NOT_HERE)
            if not await self.store.job_images(job_id):
                raise JobNotFound(job_id)
            metadata = {"c": reply.channel, "t": root, "j": job_id}
            await self._open_modal(body["trigger_id"], metadata, "Editing this image.")
        except UserFacingError as exc:
            await self._tell(reply, exc.user_message)
        except Exception:
            logger.exception("opening the edit modal for job %s failed", job_id)
            await self._tell(reply, generic_error(job_id))

    async def _on_delete(self, ack: Any, body: Json) -> None:
        await ack()
        job_id, reply, _, message = self._button(body)

        async def work() -> None:
            job = await self.store.get_job(job_id)
            if job is None:
                raise JobNotFound(job_id)
            owner = job.requester.user_id
            if reply.user != owner and not await self._is_admin(reply.user):
                raise NotAllowed(f"Only <@{owner}> or a workspace admin can delete this image.")
            for file_id in _as_list(job.platform_ref.get("files")):
                try:
                    await self.client.files_delete(file=str(file_id))
                except SlackApiError as exc:  # already gone, or removed by an admin
                    logger.info("file %s of job %s: %s", file_id, job_id, exc.response.get("error"))
            try:
                await self.client.chat_delete(channel=reply.channel, ts=str(message.get("ts")))
            except SlackApiError as exc:
                # Two clicks at once, or someone deleted it first: what was asked has happened.
                if exc.response.get("error") != "message_not_found":
                    raise

        self._spawn(work, reply)

    async def _is_admin(self, user: str) -> bool:
        if self.settings.is_admin("slack", user):
            return True
        try:
            info = await self.client.users_info(user=user)
        except SlackApiError:
            return False
        person: Mapping[str, Any] = info.get("user") or {}
        return any(person.get(k) for k in ("is_admin", "is_owner", "is_primary_owner"))


NOT_HERE = "I'm not enabled in this channel."


def _as_list(value: object) -> list[object]:
    return list(value) if isinstance(value, list) else []


def _with_overrides(options: ImageOptions, parsed: ParsedPrompt) -> ImageOptions:
    """A reply's own flags (``--quality high``) win over the edited job's options."""
    chosen: dict[str, Any] = {k: v for k, v in parsed.overrides().items() if v is not None}
    return replace(options, **chosen)
