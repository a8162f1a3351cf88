"""A fake Slack on 127.0.0.1: Web API, Socket Mode websocket, upload URLs, file host, response_url.

It is strict where real Slack is strict (tokens, trigger ids, block shapes, upload lengths), so a
bot that passes here speaks the protocol the real slack-bolt / slack-sdk clients speak. Tests drive
it through either transport: Socket Mode envelopes over the websocket, or signed HTTP requests to
the bot's ``/slack/events`` endpoint.

The workspace state and each server live in their own module (slack_workspace, slack_web_api,
slack_files_host, slack_payloads, slack_transport); this module joins them and holds the fixtures
pytest loads as a plugin.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from tests.fakes.slack_files_host import SlackFilesHost
from tests.fakes.slack_payloads import SlackPayloads
from tests.fakes.slack_transport import SlackTransport
from tests.fakes.slack_web_api import SlackWebApi
from tests.fakes.slack_workspace import (
    APP_ID,
    APP_TOKEN,
    BOT_ID,
    BOT_TOKEN,
    BOT_USER_ID,
    SIGNING_SECRET,
    TEAM_ID,
    Download,
    SlackCall,
    Upload,
)

__all__ = [
    "APP_ID",
    "APP_TOKEN",
    "BOT_ID",
    "BOT_TOKEN",
    "BOT_USER_ID",
    "SIGNING_SECRET",
    "TEAM_ID",
    "Download",
    "FakeSlack",
    "RunningBot",
    "SlackCall",
    "Upload",
    "slack_fake",
    "start_slack",
]


class FakeSlack(SlackTransport, SlackPayloads, SlackWebApi, SlackFilesHost):
    """The fake Slack workspace and its servers."""

    # --- lifecycle ----------------------------------------------------------------------
    async def start(self) -> None:
        """Serve on 127.0.0.1, port 0."""
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/api/{method}", self._web_api)
        app.router.add_get("/link", self._gated_socket)
        app.router.add_post("/upload/{file_id}", self._upload)
        app.router.add_get("/files-pri/{file_id}/{name}", self._file)
        app.router.add_post("/response/{rid}", self._response_url)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.port = int(self._runner.addresses[0][1])
        self._session = aiohttp.ClientSession()

    # Set to an unset Event to hold Socket Mode connections until it is set.
    socket_gate: asyncio.Event | None = None

    async def _gated_socket(self, request: web.Request) -> web.WebSocketResponse:
        if self.socket_gate is not None:
            await self.socket_gate.wait()
        return await self._socket(request)

    async def stop(self) -> None:
        """Close sockets and the server."""
        if self.socket_gate is not None:
            self.socket_gate.set()
        for ws in list(self._sockets):
            await ws.close()
        if self._session is not None:
            await self._session.close()
        if self._runner is not None:
            await self._runner.cleanup()


@pytest.fixture
async def slack_fake() -> AsyncIterator[FakeSlack]:
    """A running fake Slack for one test."""
    fake = FakeSlack()
    await fake.start()
    try:
        yield fake
    finally:
        await fake.stop()


@dataclass
class RunningBot:
    """A started Slack bot, its core app, and the transport it listens on."""

    bot: Any
    app: Any
    mode: str

    async def stop(self) -> None:
        """Stop the bot and close its core app (a restart builds both again)."""
        await self.bot.stop()
        await self.app.aclose()


@pytest.fixture
async def start_slack(
    slack_fake: FakeSlack, make_app: Callable[..., Any]
) -> AsyncIterator[Callable[..., Any]]:
    """``await start_slack("socket" | "http", rate_scale=1.0, **settings)``: the real bot on the
    fake Slack; ``rate_scale`` shrinks the rate-limit windows of both (a test burst in seconds).
    """
    from adapters.slack.bot import SlackBot

    running: list[RunningBot] = []

    async def start(mode: str = "socket", rate_scale: float = 1.0, **overrides: Any) -> RunningBot:
        settings: dict[str, Any] = {
            "slack_bot_token": BOT_TOKEN,
            "slack_signing_secret": SIGNING_SECRET,
            "slack_api_url": slack_fake.api_url,
        }
        if mode == "socket":
            settings["slack_app_token"] = APP_TOKEN
        settings.update(overrides)
        app = await make_app(**settings)
        slack_fake.rate_scale = rate_scale
        bot = SlackBot(app, rate_scale=rate_scale)
        slack_fake.mode = mode
        if mode == "socket":
            await bot.start_socket_mode()
            await slack_fake.wait_connected()
        else:
            port = await bot.start_http(host="127.0.0.1", port=0)
            slack_fake.events_url = f"http://127.0.0.1:{port}/slack/events"
        handle = RunningBot(bot, app, mode)
        running.append(handle)
        return handle

    yield start
    for handle in running:
        await handle.bot.stop()
