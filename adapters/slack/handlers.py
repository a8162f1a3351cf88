"""Slack listeners: ack at once, then turn the event into a command run in a background task."""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any

from slack_bolt.async_app import AsyncApp
from slack_sdk.errors import SlackApiError
from slack_sdk.webhook.async_client import AsyncWebhookClient

from adapters.slack import blocks
from adapters.slack.files import SlackFiles, is_image_file
from adapters.slack.presenter import Reply, SlackPresenter, tell
from adapters.slack.rate import PacedWebClient
from adapters.slack.spend import SlackDirectory, UserGroups, tell_answer, tier_groups
from adapters.slack.text import HELP, MARKUP, FlagError, clean_prompt, escape, parse_prompt
from bot import texts
from bot.commands import (
    Command,
    Edit,
    Generate,
    MessageRef,
    Regenerate,
    Retry,
    Vary,
    split_mask,
)
from bot.errors import InvalidRequest, JobNotFound, NotAllowed, UserFacingError
from bot.models import Requester
from bot.pacing import EditBudget
from bot.presenting import JobTasks, run_job
from bot.provider import MAX_SOURCES
from bot.spend_commands import AdminArgs, Answer, Asker, SpendCommands, parse_admin, parse_usage

if TYPE_CHECKING:
    from bot.config import Settings
    from bot.downloads import Downloader
    from bot.service import ImageService

logger = logging.getLogger("adapters.slack")

Json = dict[str, Any]
# Message subtypes a person produces; everything else (edits, joins, bots) is ignored.
_PERSON_SUBTYPES = {None, "file_share", "thread_broadcast"}
USAGE_COMMAND = "/imagine-usage"
HISTORY_COMMAND = "/imagine-history"
ADMIN_COMMAND = "/imagine-admin"
SENT_SUGGESTION = "Sent. The reworded prompt is being made where you first asked."


class SlackHandlers:
    """Everything the bot does in reaction to Slack; state lives in the service, not here."""

    def __init__(
        self,
        settings: Settings,
        service: ImageService,
        client: PacedWebClient,
        downloader: Downloader,
    ) -> None:
        self.settings = settings
        self.service = service
        self.client = client
        self.downloader = downloader
        self.files = SlackFiles(client)
        self.bot_user_id = ""
        # From the one auth.test of start-up: the workspace's address, for message links.
        self.workspace_url = ""
        self.groups = UserGroups(client)
        self.known_channels: dict[str, float] = {}
        self.tasks = JobTasks()
        self.rephrasing: set[str] = set()  # blocked jobs whose rewording is being asked
        # One progress edit per channel per interval, so a busy channel doesn't flicker.
        self.edits = EditBudget(1, settings.imagine_progress_interval)

    # --- wiring ---------------------------------------------------------------------------
    def register(self, app: AsyncApp) -> None:
        """Attach every listener to the bolt app."""
        app.command("/imagine")(self._on_command)
        app.command(USAGE_COMMAND)(self._on_usage)
        app.command(HISTORY_COMMAND)(self._on_history)
        app.command(ADMIN_COMMAND)(self._on_admin)
        app.event("app_mention")(self._on_message)
        app.event("message")(self._on_message)
        app.shortcut(blocks.SHORTCUT)(self._on_shortcut)
        app.action(blocks.REGENERATE)(self._on_regenerate)
        app.action(blocks.VARY)(self._on_vary)
        app.action(blocks.CANCEL)(self._on_cancel)
        app.action(blocks.EDIT)(self._on_edit_button)
        app.action(blocks.DELETE)(self._on_delete)
        app.action(blocks.ENHANCE_RETRY)(self._on_enhance_retry)
        app.action(blocks.REPHRASE)(self._on_rephrase)
        app.action(blocks.SEND_SUGGESTION)(self._on_send_suggestion)
        app.action(blocks.DROP_SUGGESTION)(self._on_drop_suggestion)
        app.view(blocks.EDIT_MODAL)(self._on_edit_submit)

    async def aclose(self) -> None:
        """Stop work in flight (each user is told); the downloads' connections close."""
        await self.tasks.shutdown()
        self.edits.close()
        await self.downloader.aclose()

    def _spawn(self, work: Callable[[], Awaitable[None]], reply: Reply) -> None:
        self.tasks.spawn(self._guarded(work, reply))

    async def _guarded(self, work: Callable[[], Awaitable[None]], reply: Reply) -> None:
        try:
            await work()
        except UserFacingError as exc:
            await self._tell(reply, texts.refusal(exc, MARKUP))
        except FlagError as exc:
            await self._tell(reply, f"{exc}\n\n{HELP}")
        except Exception:
            logger.exception("handling a Slack request from %s failed", reply.user)
            await self._tell(reply, texts.bug(None, MARKUP))

    async def _tell(self, reply: Reply, text: str) -> None:
        await tell(self.client, reply, text)

    def _allowed(self, channel: str) -> bool:
        allowed = self.settings.slack_allowed_channels
        return not allowed or channel in allowed

    def _check_allowed(self, channel: str) -> None:
        if not self._allowed(channel):
            raise NotAllowed(texts.NOT_HERE)

    async def _requester(self, reply: Reply, body: Json, team: object = None) -> Requester:
        """Who asked: the payload's team, the user's name where Slack sends it, and their user
        groups when a tier has rules."""
        team = team or body.get("team_id") or (body.get("team") or {}).get("id")
        user = body.get("user")
        name = user.get("name") if isinstance(user, dict) else body.get("user_name")
        groups = await tier_groups(self.service, self.groups, reply.user)
        return Requester(
            "slack", reply.user, str(team or ""), reply.channel, name or reply.user, groups
        )

    async def _run(self, command: Command, reply: Reply) -> None:
        """Run one command, shown in ``reply``'s channel and thread."""
        interval = self.settings.imagine_progress_interval
        presenter = SlackPresenter(self.client, self.service, reply, interval)
        pacer = self.edits.channel(reply.channel)
        await run_job(self.service, command, presenter, files=self.downloader, pacer=pacer)

    # --- /imagine -------------------------------------------------------------------------
    async def _on_command(self, ack: Any, body: Json) -> None:
        await ack()
        reply = Reply(body["user_id"], body["channel_id"], None, body.get("response_url"))

        async def work() -> None:
            self._check_allowed(reply.channel)
            if not await self.service.first_time(f"slack:trigger:{body.get('trigger_id')}"):
                return
            text = clean_prompt(body.get("text") or "")
            if not text or text.lower() in ("help", "--help", "-h"):
                await self._tell(reply, HELP)
                return
            parsed = parse_prompt(text)
            requester = await self._requester(reply, body)
            command = Generate(requester, parsed.prompt, parsed.overrides, parsed.enhance)
            await self._run(command, reply)

        self._spawn(work, reply)

    # --- /imagine-usage, /imagine-history, /imagine-admin --------------------------------
    def _spend(self, body: Json) -> SpendCommands:
        team = str(body.get("team_id") or "")
        directory = SlackDirectory(
            self.client,
            self.service,
            self.groups,
            self.known_channels,
            team_id=team,
            workspace_url=self.workspace_url,
        )
        return SpendCommands(self.service, MARKUP, directory)

    def _spend_command(
        self, body: Json, answer: Callable[[SpendCommands, Reply, str], Awaitable[Answer]]
    ) -> None:
        reply = Reply(body["user_id"], body["channel_id"], None, body.get("response_url"))

        async def work() -> None:
            if not await self.service.first_time(f"slack:trigger:{body.get('trigger_id')}"):
                return
            text = (body.get("text") or "").strip()
            shown = await answer(self._spend(body), reply, text)
            await tell_answer(self.client, reply, shown)

        self._spawn(work, reply)

    async def _asker(self, reply: Reply, body: Json, *, admin_matters: bool) -> Asker:
        requester = await self._requester(reply, body)
        admin = admin_matters and await self._is_admin(reply.user)
        return Asker(requester, admin)

    async def _on_usage(self, ack: Any, body: Json) -> None:
        await ack()

        async def answer(commands: SpendCommands, reply: Reply, text: str) -> Answer:
            user, report = parse_usage(text)
            asker = await self._asker(reply, body, admin_matters=bool(user or report))
            return await commands.usage(asker, user=user, report=report)

        self._spend_command(body, answer)

    async def _on_history(self, ack: Any, body: Json) -> None:
        await ack()

        async def answer(commands: SpendCommands, reply: Reply, text: str) -> Answer:
            asker = await self._asker(reply, body, admin_matters=bool(text))
            return await commands.history(asker, text.strip("`") or None)

        self._spend_command(body, answer)

    async def _on_admin(self, ack: Any, body: Json) -> None:
        await ack()

        async def answer(commands: SpendCommands, reply: Reply, text: str) -> Answer:
            asker = await self._asker(reply, body, admin_matters=True)
            try:
                args = parse_admin(text)
            except InvalidRequest as exc:
                if not asker.admin:  # the refusal, not the usage, is what a non-admin needs
                    return await commands.admin(asker, AdminArgs())
                return Answer(exc.user_message, refused=True)
            return await commands.admin(asker, args)

        self._spend_command(body, answer)

    # --- mentions, DMs and thread replies ------------------------------------------------
    async def _on_message(self, ack: Any, event: Json, body: Json) -> None:
        await ack()
        if event.get("bot_id") or event.get("subtype") not in _PERSON_SUBTYPES:
            return
        user, channel, ts = event.get("user"), event.get("channel"), event.get("ts")
        if not user or not channel or not ts or user == self.bot_user_id:
            return
        reply = Reply(user, channel, event.get("thread_ts"))
        self._spawn(lambda: self._handle_message(event, body, reply), reply)

    async def _handle_message(self, event: Json, body: Json, reply: Reply) -> None:
        channel, ts, thread_ts = reply.channel, str(event["ts"]), event.get("thread_ts")
        text = event.get("text") or ""
        mentioned = bool(self.bot_user_id) and f"<@{self.bot_user_id}" in text
        direct = event.get("channel_type") == "im" or channel.startswith("D")
        root = MessageRef("slack", f"{channel}:{thread_ts}")
        in_thread = bool(thread_ts) and thread_ts != ts
        ours = in_thread and await self.service.job_for(root) is not None
        if not (mentioned or direct or ours):
            return  # people talking among themselves
        if not self._allowed(channel):
            return
        # app_mention and message both arrive for one mention; retries repeat either.
        if not await self.service.first_time(f"slack:msg:{channel}:{ts}"):
            return
        prompt = clean_prompt(text, self.bot_user_id)
        if not prompt:
            if mentioned or direct:
                await self._tell(reply, HELP)
            return
        parsed = parse_prompt(prompt)
        requester = await self._requester(reply, body, event.get("team"))
        files, mask = split_mask(
            await self.files.remote(event.get("files") or []), images_only=False
        )
        command: Command = Generate(requester, parsed.prompt, parsed.overrides, parsed.enhance)
        if ours or files or mask:
            command = Edit(
                requester,
                parsed.prompt,
                on=root if in_thread else None,
                files=files,
                mask=mask,
                overrides=parsed.overrides,
                enhance=parsed.enhance,
            )
        await self._run(command, Reply(reply.user, channel, thread_ts or ts))

    # --- the "Edit image" shortcut and the edit modal -------------------------------------
    async def _on_shortcut(self, ack: Any, body: Json) -> None:
        await ack()
        user, channel = body["user"]["id"], body["channel"]["id"]
        message = body.get("message") or {}
        ts = str(message.get("ts") or body.get("message_ts"))
        reply = Reply(user, channel, message.get("thread_ts"), body.get("response_url"))

        async def work() -> None:
            self._check_allowed(channel)
            job = await self.service.job_for(MessageRef("slack", f"{channel}:{ts}"))
            files = message.get("files") or []
            images = [f for f in files if is_image_file(f) and f.get("id")]
            if job is None and not images:
                await self._tell(reply, texts.NO_IMAGE)
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
                        texts.too_many_files(len(images), MAX_SOURCES), param="image"
                    )
                metadata["f"] = [str(f["id"]) for f in images]
                described = escape(texts.editing([str(f.get("name") or "") for f in images]))
            await self._open_modal(body["trigger_id"], metadata, described)

        # The trigger id expires in three seconds: open the modal before answering anything else.
        await self._guarded(work, reply)

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
        reply = Reply(user, metadata.get("c", ""), metadata.get("t"))

        async def work() -> None:
            if not await self.service.first_time(f"slack:view:{view.get('id')}"):
                return
            self._check_allowed(reply.channel)
            parsed = parse_prompt(clean_prompt(prompt))
            requester = await self._requester(reply, body)
            overrides, enhance = parsed.overrides, parsed.enhance
            if metadata.get("j"):
                command = Edit(
                    requester,
                    parsed.prompt,
                    job_id=metadata["j"],
                    overrides=overrides,
                    enhance=enhance,
                )
            else:
                shared = await self.files.shared(metadata.get("f") or [])
                theirs, mask = split_mask(shared, images_only=False)
                command = Edit(
                    requester,
                    parsed.prompt,
                    their_files=theirs,
                    mask=mask,
                    overrides=overrides,
                    enhance=enhance,
                )
            await self._run(command, reply)

        self._spawn(work, reply)

    # --- result buttons -------------------------------------------------------------------
    def _button(self, body: Json) -> tuple[str, Reply, Json]:
        user = body["user"]["id"]
        channel = str(body.get("channel", {}).get("id") or body["container"]["channel_id"])
        message = body.get("message") or {}
        root = str(message.get("thread_ts") or message.get("ts") or "")
        reply = Reply(user, channel, root or None, body.get("response_url"))
        return str(body["actions"][0]["value"]), reply, message

    async def _on_regenerate(self, ack: Any, body: Json) -> None:
        await ack()
        job_id, reply, _ = self._button(body)

        async def work() -> None:
            self._check_allowed(reply.channel)
            requester = await self._requester(reply, body)
            await self._run(Regenerate(requester, job_id), reply)

        self._spawn(work, reply)

    async def _on_vary(self, ack: Any, body: Json) -> None:
        await ack()
        job_id, reply, _ = self._button(body)

        async def work() -> None:
            self._check_allowed(reply.channel)
            requester = await self._requester(reply, body)
            await self._run(Vary(requester, job_id), reply)

        self._spawn(work, reply)

    async def _on_enhance_retry(self, ack: Any, body: Json) -> None:
        await ack()
        job_id, reply, _ = self._button(body)

        async def work() -> None:
            self._check_allowed(reply.channel)
            requester = await self._requester(reply, body)
            await self._run(Retry(requester, job_id, enhance=True), reply)

        self._spawn(work, reply)

    # --- after a safety block: Rephrase and retry, then Send it or Never mind -------------
    async def _origin(self, job_id: str, click: Reply) -> Reply:
        """Where the blocked job was shown (its channel and thread), for ``click``'s user."""
        job = await self.service.get_job(job_id)
        if job is None:
            raise JobNotFound(job_id)
        ref = job.platform_ref
        channel = str(ref.get("channel") or click.channel)
        thread = ref.get("thread_ts") if ref.get("channel") else click.thread_ts
        return Reply(click.user, channel, str(thread) if thread else None, click.response_url)

    def _private_click(self, body: Json) -> tuple[str, Reply]:
        """A click on a private message: the button's value and where it was (no ``message``:
        Slack sends none for an ephemeral one)."""
        user = body["user"]["id"]
        container = body.get("container") or {}
        channel = str((body.get("channel") or {}).get("id") or container.get("channel_id"))
        thread = container.get("thread_ts")
        reply = Reply(user, channel, str(thread) if thread else None, body.get("response_url"))
        return str(body["actions"][0]["value"]), reply

    async def _replace_private(
        self, reply: Reply, text: str, content: list[blocks.Block] | None = None
    ) -> None:
        """Replace the private message clicked (through its response URL), else post anew."""
        if reply.response_url:
            hook = AsyncWebhookClient(reply.response_url)
            response = await hook.send(text=text, blocks=content, replace_original=True)
            if response.status_code == 200:
                return
            logger.info("response URL for %s answered HTTP %s", reply.user, response.status_code)
        await tell(self.client, reply, text, content)

    async def _on_rephrase(self, ack: Any, body: Json) -> None:
        await ack()
        job_id, click = self._private_click(body)

        async def work() -> None:
            reply = await self._origin(job_id, click)
            self._check_allowed(reply.channel)
            # A second click while the first is asked would pay for a second rewording.
            if job_id in self.rephrasing:
                return
            self.rephrasing.add(job_id)
            try:
                requester = await self._requester(reply, body)
                suggestion = await self.service.rephrase(job_id, requester)
            finally:
                self.rephrasing.discard(job_id)
            shown = blocks.suggestion_blocks(suggestion.prompt, job_id, suggestion.id)
            await self._replace_private(reply, blocks.suggestion_text(suggestion.prompt), shown)

        self._spawn(work, click)

    async def _suggestion(self, value: str, user: str) -> tuple[str, str]:
        """The blocked job and the suggestion a "Send it" button names, if ``user`` owns it."""
        job_id, _, suggestion_id = value.partition(":")
        suggestion = await self.service.get_job(suggestion_id)
        if suggestion is None or suggestion.parent_job_id != job_id:
            raise JobNotFound(suggestion_id or value)
        if suggestion.requester.user_id != user:
            raise NotAllowed(texts.ONLY_OWNER_REPHRASES)
        return job_id, suggestion_id

    async def _on_send_suggestion(self, ack: Any, body: Json) -> None:
        await ack()
        value, click = self._private_click(body)

        async def work() -> None:
            job_id, suggestion_id = await self._suggestion(value, click.user)
            reply = await self._origin(job_id, click)
            self._check_allowed(reply.channel)
            if not await self.service.first_time(f"slack:suggestion:{suggestion_id}"):
                return  # a second click on the same Send it
            await self._replace_private(reply, SENT_SUGGESTION)
            requester = await self._requester(reply, body)
            await self._run(Retry(requester, job_id, suggestion_id=suggestion_id), reply)

        self._spawn(work, click)

    async def _on_drop_suggestion(self, ack: Any, body: Json) -> None:
        await ack()
        _, click = self._private_click(body)

        async def work() -> None:
            if not click.response_url:
                return  # nothing to tidy up, and nothing is sent either way
            response = await AsyncWebhookClient(click.response_url).send(delete_original=True)
            if response.status_code != 200:
                logger.info("suggestion not removed: HTTP %s", response.status_code)

        self._spawn(work, click)

    async def _on_cancel(self, ack: Any, body: Json) -> None:
        await ack()
        job_id, button, message = self._button(body)
        # Answer where the button is (the placeholder's own place), not inside its thread.
        reply = Reply(button.user, button.channel, message.get("thread_ts"), button.response_url)

        async def work() -> None:
            requester = await self._requester(reply, body)
            job = await self.service.get_job(job_id)
            if job is None:
                raise JobNotFound(job_id)
            # Only someone else's job needs the users.info look-up.
            admin = job.requester.key != requester.key and await self._is_admin(reply.user)
            answer = await self.service.cancel(job_id, requester, admin=admin)
            if answer:
                await self._tell(reply, answer)

        self._spawn(work, reply)

    async def _on_edit_button(self, ack: Any, body: Json) -> None:
        await ack()
        job_id, reply, _ = self._button(body)

        async def work() -> None:
            self._check_allowed(reply.channel)
            if not await self.service.has_images(job_id):
                raise JobNotFound(job_id)
            metadata = {"c": reply.channel, "t": reply.thread_ts or "", "j": job_id}
            await self._open_modal(body["trigger_id"], metadata, "Editing this image.")

        await self._guarded(work, reply)

    async def _on_delete(self, ack: Any, body: Json) -> None:
        await ack()
        job_id, reply, message = self._button(body)

        async def work() -> None:
            job = await self.service.get_job(job_id)
            if job is None:
                raise JobNotFound(job_id)
            owner = job.requester.user_id
            if reply.user != owner and not await self._is_admin(reply.user):
                raise NotAllowed(texts.only_owner_deletes(owner, "a workspace admin", MARKUP))
            files = job.platform_ref.get("files")
            for file_id in files if isinstance(files, list) else []:
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
