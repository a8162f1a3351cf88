"""A fake Discord for the real discord.py: REST, gateway websocket and CDN on 127.0.0.1 (aiohttp).

It keeps the state a user would see (messages, their attachments, embeds and buttons, which
interaction responses are ephemeral) and enforces the rules the real service enforces and a bot can
break: answer an interaction once and within 3 s, message and embed limits, the upload size limit,
no message content without the privileged intent unless the bot is mentioned, expired tokens.

It is split by concern: discord_payloads (objects and rules), discord_state (what tests inspect),
discord_gateway (the websocket and user actions), discord_rest (REST and CDN). This module puts
them together and holds the pytest fixtures (tests/conftest.py loads it as a plugin).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest_asyncio
from aiohttp import web
from discord.gateway import DiscordWebSocket
from discord.http import Route

from adapters.discord.bot import ImagineDiscordBot, discord_bot_for
from bot.app import App
from tests.fakes.app_fixtures import ProviderGate
from tests.fakes.discord_gateway import DiscordGateway
from tests.fakes.discord_payloads import (
    EPHEMERAL,
    Call,
    FakeInteraction,
    FakeUser,
    UploadedFile,
    edit_inputs,
    job_of,
    png,
)
from tests.fakes.discord_rest import DiscordRest


class FakeDiscord(DiscordGateway, DiscordRest):
    """Discord for one test: start(), drive with slash()/send_message()/click(), inspect."""

    # --- lifecycle ----------------------------------------------------------------------------
    async def start(self) -> None:
        """Listen on a free 127.0.0.1 port."""
        app = web.Application(client_max_size=100 * 1024 * 1024)
        app.router.add_get("/gateway", self._gateway)
        app.router.add_get("/attachments/{path:.*}", self._serve_cdn)
        app.router.add_route("*", "/api/v10/{path:.*}", self._rest)
        self._runner = web.AppRunner(app, shutdown_timeout=0.5, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.base = f"http://127.0.0.1:{port}"
        self.api_url = f"{self.base}/api/v10"
        self.gateway_url = f"ws://127.0.0.1:{port}/gateway"

    async def close(self) -> None:
        """Drop the gateway connection and stop the server."""
        for ws in {*self.sockets.values(), *([self._ws] if self._ws is not None else [])}:
            await ws.close()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


@pytest_asyncio.fixture
async def discord_fake() -> AsyncIterator[FakeDiscord]:
    """A started fake Discord; the test fails if the bot broke one of Discord's rules."""
    fake = FakeDiscord()
    await fake.start()
    try:
        yield fake
    finally:
        with contextlib.suppress(Exception):
            await fake.close()
    assert not fake.problems, "the bot broke Discord's rules:\n" + "\n".join(fake.problems)


BotFactory = Callable[..., Awaitable[tuple[App, ImagineDiscordBot]]]


@pytest_asyncio.fixture
async def discord_bot(
    discord_fake: FakeDiscord, make_app: Callable[..., Awaitable[App]]
) -> AsyncIterator[BotFactory]:
    """``await discord_bot(**settings)`` builds an app and a connected bot on the fake Discord.

    Calling it again after closing both is a restart on the same data directory.
    """
    saved = (Route.BASE, DiscordWebSocket.DEFAULT_GATEWAY)
    bots: list[ImagineDiscordBot] = []

    async def factory(**overrides: object) -> tuple[App, ImagineDiscordBot]:
        values: dict[str, object] = {
            "discord_token": discord_fake.token,
            "discord_api_base_url": discord_fake.api_url,
            "discord_gateway_url": discord_fake.gateway_url,
            **overrides,
        }
        app = await make_app(**values)
        bot = discord_bot_for(app, guild_ready_timeout=0.05)
        bots.append(bot)
        await bot.start_bot(timeout=10)
        await discord_fake.wait_connected()
        # Jobs a test seeds next must not be caught by this start's look for interrupted ones.
        await bot.wait_recovered()
        return app, bot

    try:
        yield factory
    finally:
        for bot in bots:
            await bot.close()
        Route.BASE, DiscordWebSocket.DEFAULT_GATEWAY = saved


__all__ = [
    "EPHEMERAL",
    "BotFactory",
    "Call",
    "FakeDiscord",
    "FakeInteraction",
    "FakeUser",
    "ProviderGate",
    "UploadedFile",
    "discord_bot",
    "discord_fake",
    "edit_inputs",
    "job_of",
    "png",
]
