"""The Slack bot: a slack-bolt AsyncApp over Socket Mode or HTTP, wired to the image service."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import aiohttp
from aiohttp import web
from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler
from slack_bolt.async_app import AsyncApp
from slack_bolt.authorization import AuthorizeResult
from slack_sdk.errors import SlackApiError
from slack_sdk.socket_mode.aiohttp import SocketModeClient
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.web.async_slack_response import AsyncSlackResponse

from adapters.slack import blocks
from adapters.slack.files import slack_downloader
from adapters.slack.handlers import SlackHandlers
from adapters.slack.rate import PacedWebClient, RateBudget
from bot import texts
from bot.errors import ConfigError, unreachable

if TYPE_CHECKING:
    from bot.app import App
    from bot.models import JobRecord

logger = logging.getLogger("adapters.slack")

EVENTS_PATH = "/slack/events"


def api_base_url(url: str) -> str:
    """The Web API base with a trailing slash: slack_sdk joins method names with urljoin."""
    return url if url.endswith("/") else url + "/"


class WatchedSocketModeClient(SocketModeClient):
    """The Socket Mode client, telling ``on_up`` when Slack said hello and when the link dropped."""

    def __init__(self, like: SocketModeClient, on_up: Callable[[bool], None]) -> None:
        super().__init__(
            app_token=like.app_token,
            logger=like.logger,
            web_client=like.web_client,
            proxy=like.proxy,
            ping_interval=like.ping_interval,
        )
        self._on_up = on_up
        on_up(False)
        self.on_message_listeners.append(self._saw_message)

    async def _saw_message(self, message: aiohttp.WSMessage) -> None:
        try:
            kind = json.loads(message.data).get("type")
        except (ValueError, TypeError, AttributeError):
            return
        if kind == "hello":
            self._on_up(True)
        elif kind == "disconnect":  # Slack asks for a fresh connection
            self._on_up(False)

    async def connect_to_new_endpoint(self, force: bool = False) -> None:
        """Not ready from the moment the link is found down until the next hello."""
        if force or not await self.is_connected():
            self._on_up(False)
        await super().connect_to_new_endpoint(force)

    async def close(self) -> None:
        """Closed on purpose: not ready either."""
        self._on_up(False)
        await super().close()  # type: ignore[no-untyped-call]


class SlackBot:
    """One Slack connection: build it, ``start_socket_mode()`` or ``start_http()``, ``stop()``."""

    def __init__(self, app: App, *, rate_scale: float = 1.0) -> None:
        settings = app.settings
        if settings.slack_bot_token is None or not settings.slack_bot_token.get_secret_value():
            raise ConfigError("SLACK_BOT_TOKEN", "not set; copy the Bot User OAuth Token (xoxb-…)")
        token = settings.slack_bot_token.get_secret_value()
        secret = settings.slack_signing_secret
        self.app = app
        base_url = api_base_url(settings.slack_api_url)
        # Every job's calls share Slack's per-method limits; ``rate_scale`` shrinks the windows
        # for a test Slack whose clock runs faster.
        self.budget = RateBudget(scale=rate_scale)
        self.client = PacedWebClient(token=token, base_url=base_url, budget=self.budget)
        self._token = token
        self._auth: AsyncSlackResponse | None = None
        self._auth_lock = asyncio.Lock()
        # Given a token, bolt checks it with auth.test on the first events; a burst of events
        # all arrive before the first answer, so each makes its own call. An authorize
        # function answered from the one auth.test of start-up costs nothing per event, and
        # bolt's own client then needs no token of its own.
        self.bolt = AsyncApp(
            client=AsyncWebClient(base_url=base_url),
            authorize=self._authorize_function(),
            signing_secret=secret.get_secret_value() if secret is not None else "",
            name="imagine-bot",
        )
        downloader = slack_downloader(settings.slack_api_url, token, settings.max_attachment_bytes)
        self.handlers = SlackHandlers(settings, app.service, self.client, downloader)
        self.handlers.register(self.bolt)
        self._socket: AsyncSocketModeHandler | None = None
        self._runner: web.AppRunner | None = None
        self._watcher: asyncio.Task[None] | None = None

    async def prepare(self) -> None:
        """Check the token (auth.test) and repair placeholders of jobs a restart interrupted."""
        try:
            auth = await self.auth_test()
        except SlackApiError as exc:
            raise ConfigError(
                "SLACK_BOT_TOKEN", f"Slack refused it ({exc.response.get('error')})"
            ) from None
        self.handlers.bot_user_id = str(auth.get("user_id") or "")
        self.handlers.workspace_url = str(auth.get("url") or "")
        await self._mark_interrupted()

    async def auth_test(self) -> AsyncSlackResponse:
        """The token's auth.test answer, asked once per process."""
        async with self._auth_lock:
            if self._auth is None:
                self._auth = await self.client.auth_test()
            return self._auth

    def _authorize_function(self) -> Callable[[], Awaitable[AuthorizeResult]]:
        # bolt passes arguments by the names a function declares; this one needs none.
        async def authorize() -> AuthorizeResult:
            return AuthorizeResult.from_auth_test_response(
                bot_token=self._token, auth_test_response=await self.auth_test()
            )

        return authorize

    async def _mark_interrupted(self) -> None:
        await self._announce(await self.app.service.recover_interrupted())

    async def watch_interrupted(self) -> None:
        """Every IMAGINE_RECOVERY_CHECK_S, tell the users of jobs another instance left behind.

        With several instances on one database, one that dies leaves its jobs running; the
        store ends them and hands each to exactly one surviving instance to announce.
        """
        every = self.app.settings.imagine_recovery_check_s
        while True:
            await asyncio.sleep(every)
            try:
                jobs = await self.app.service.newly_interrupted("slack")
            except Exception as exc:
                logger.warning("could not look for interrupted jobs: %s", type(exc).__name__)
                continue
            await self._announce(jobs)

    async def _announce(self, jobs: list[JobRecord]) -> None:
        for job in jobs:
            ref = job.platform_ref
            channel, ts = ref.get("channel"), ref.get("ts")
            if job.requester.platform != "slack" or not channel or not ts:
                continue
            text = blocks.headline(job.requester.user_id, job.prompt, texts.INTERRUPTED)
            try:
                await self.client.chat_update(
                    channel=str(channel),
                    ts=str(ts),
                    text=text,
                    blocks=blocks.progress_blocks(text, None),
                )
            except SlackApiError as exc:
                logger.warning(
                    "couldn't mark job %s interrupted: %s", job.id, exc.response.get("error")
                )
            except (aiohttp.ClientError, TimeoutError) as exc:
                logger.warning("couldn't mark job %s interrupted: %s", job.id, type(exc).__name__)

    async def start_socket_mode(self, app_token: str | None = None) -> None:
        """Connect over Socket Mode (``SLACK_APP_TOKEN``); no public URL needed."""
        if app_token is None:
            secret = self.app.settings.slack_app_token
            app_token = secret.get_secret_value() if secret is not None else ""
        if not app_token:
            raise ConfigError("SLACK_APP_TOKEN", "not set; create an app-level token (xapp-…)")
        await self.prepare()
        self._socket = AsyncSocketModeHandler(self.bolt, app_token)
        client = self._socket.client = WatchedSocketModeClient(
            self._socket.client, lambda up: self.app.readiness.set("slack", up)
        )
        client.socket_mode_request_listeners.append(self._socket.handle)  # type: ignore[arg-type]
        await self._socket.connect_async()  # type: ignore[no-untyped-call]
        self._start_watching()
        logger.info("Slack: connected over Socket Mode")

    async def start_http(self, host: str = "0.0.0.0", port: int | None = None) -> int:
        """Serve the Events API on ``host:port`` at /slack/events; returns the bound port."""
        secret = self.app.settings.slack_signing_secret
        if secret is None or not secret.get_secret_value():
            raise ConfigError(
                "SLACK_SIGNING_SECRET",
                "not set; HTTP mode needs it (or set SLACK_APP_TOKEN for Socket Mode)",
            )
        await self.prepare()
        chosen = self.app.settings.imagine_http_port if port is None else port
        self._runner = web.AppRunner(self.bolt.web_app(path=EVENTS_PATH, port=chosen))
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, chosen)
        await site.start()
        bound = int(self._runner.addresses[0][1])
        self.app.readiness.set("slack", True)  # auth.test passed in prepare()
        self._start_watching()
        logger.info("Slack: listening for events on port %d at %s", bound, EVENTS_PATH)
        return bound

    async def start(self) -> None:
        """Socket Mode when SLACK_APP_TOKEN is set, otherwise HTTP mode."""
        if self.app.settings.slack_app_token is not None:
            await self.start_socket_mode()
        else:
            await self.start_http()

    def _start_watching(self) -> None:
        if self._watcher is None:
            self._watcher = asyncio.create_task(self.watch_interrupted(), name="slack-recovery")

    async def stop(self) -> None:
        """Disconnect, stop jobs in flight and close connections."""
        self.app.readiness.set("slack", False)
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._watcher
            self._watcher = None
        if self._socket is not None:
            await self._socket.close_async()  # type: ignore[no-untyped-call]
            self._socket = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        await self.handlers.aclose()


async def run_slack(app: App) -> None:
    """Run the Slack bot until cancelled."""
    bot = SlackBot(app)
    try:
        try:
            await bot.start()
        except aiohttp.ClientConnectionError as exc:
            raise unreachable("SLACK_API_URL", app.settings.slack_api_url, exc) from None
        await asyncio.Event().wait()
    finally:
        await bot.stop()
