"""The Discord bot: connection, command registration, restart recovery, and the invite link."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

import aiohttp
import discord
import yarl
from discord import app_commands
from discord.gateway import DiscordWebSocket
from discord.http import Route

from adapters.discord import api_calls, gateway_log
from adapters.discord.commands import COMMANDS, DYNAMIC_ITEMS, handle_modal_submit, result_view
from adapters.discord.handlers import DiscordImagine
from adapters.discord.invite import discord_invite_url
from adapters.discord.render import MARKUP, interrupted, warning
from adapters.discord.targets import Display
from bot import texts
from bot.app import App
from bot.errors import ConfigError, unreachable
from bot.models import JobRecord

logger = logging.getLogger("adapters.discord")

__all__ = ["ImagineDiscordBot", "ShardedImagineDiscordBot", "discord_bot_for", "run_discord"]

# Interaction tokens work for 15 minutes; leave a margin for the edit itself.
INTERACTION_TOKEN_LIFETIME = 15 * 60 - 30
# Discord docs (Gateway, close codes): the shard sent was invalid / the app must use shards.
INVALID_SHARD, SHARDING_REQUIRED = 4010, 4011


class ImagineDiscordBot(discord.Client):
    """discord.py client wired to the core app."""

    def __init__(self, app: App, *, guild_ready_timeout: float = 2.0) -> None:
        settings = app.settings
        intents = discord.Intents.none()
        intents.guilds = True
        intents.guild_messages = True
        intents.dm_messages = True
        # Privileged: without it, only replies that mention the bot carry their text.
        intents.message_content = settings.discord_message_content_intent
        # Before the client's constructor, which is where discord.py warns about voice.
        gateway_log.install()
        super().__init__(
            intents=intents,
            allowed_mentions=discord.AllowedMentions(everyone=False, roles=False, users=True),
            guild_ready_timeout=guild_ready_timeout,
            max_messages=None,
            http_trace=api_calls.http_trace(),
            **self._shard_options(app),
        )
        self.app = app
        self.imagine = DiscordImagine(app, result_view)
        self.tree = app_commands.CommandTree(self)
        for command in COMMANDS:
            self.tree.add_command(command)
        self.tree.on_error = self._command_error  # type: ignore[method-assign]
        self._gateway_task: asyncio.Task[None] | None = None
        self._recovery: asyncio.Task[None] | None = None
        self._gateway_down = False
        self._watcher: asyncio.Task[None] | None = None
        # Connections (shard ids; None for an unsharded one) that dropped and are not back yet.
        self._lost: set[int | None] = set()

    def _shard_options(self, app: App) -> dict[str, Any]:
        """Extra client arguments: none for one connection."""
        return {}

    async def setup_hook(self) -> None:
        """Register buttons and commands, then tell users about jobs a restart cut short."""
        self.add_dynamic_items(*DYNAMIC_ITEMS)
        guild_ids = self.app.settings.discord_guild_ids
        if guild_ids:
            # Guild commands appear at once; global ones can take a while to reach every client.
            for guild_id in guild_ids:
                guild = discord.Object(id=guild_id)
                self.tree.copy_global_to(guild=guild)
                await self.tree.sync(guild=guild)
            # Global copies from an earlier run would show every command twice in these guilds.
            self.tree.clear_commands(guild=None)
            await self.tree.sync()
        else:
            await self.tree.sync()
        self._recovery = asyncio.create_task(self.recover_interrupted())
        self._watcher = asyncio.create_task(self.watch_interrupted())

    async def start_bot(self, *, timeout: float = 30.0) -> None:  # noqa: ASYNC109
        """Log in, connect in the background and wait until the gateway says READY."""
        token = self.app.settings.discord_token
        if token is None or not token.get_secret_value().strip():
            raise ConfigError("DISCORD_TOKEN", "not set; copy the bot token into .env")
        settings = self.app.settings
        self.app.readiness.set("discord", False)
        # The configured (proxy) URLs: discord.py keeps both as class attributes, process-wide.
        Route.BASE = settings.discord_api_base_url.rstrip("/")
        DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(settings.discord_gateway_url)
        try:
            await self.login(token.get_secret_value().strip())
        except discord.LoginFailure:
            raise ConfigError(
                "DISCORD_TOKEN", "Discord refused this token; copy it again from the Bot page"
            ) from None
        except aiohttp.ClientConnectionError as exc:
            raise unreachable("DISCORD_API_BASE_URL", settings.discord_api_base_url, exc) from None
        self._gateway_task = asyncio.create_task(self.connect(reconnect=True))
        ready = asyncio.create_task(self.wait_until_ready())
        done, _ = await asyncio.wait(
            {ready, self._gateway_task}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
        )
        if ready in done:
            return
        ready.cancel()
        if self._gateway_task in done:
            try:
                self._gateway_task.result()
            except discord.PrivilegedIntentsRequired:
                raise ConfigError(
                    "DISCORD_MESSAGE_CONTENT_INTENT",
                    "Discord refused the Message Content intent; turn it on under Bot > "
                    "Privileged Gateway Intents in the Developer Portal, or set this to false",
                ) from None
            except discord.ConnectionClosed as exc:
                if exc.code == SHARDING_REQUIRED:
                    raise ConfigError(
                        "DISCORD_SHARD_COUNT",
                        "Discord says this bot is in too many servers for one connection; "
                        "set DISCORD_SHARD_COUNT (about one shard per 1000 servers)",
                    ) from None
                if exc.code == INVALID_SHARD:
                    raise ConfigError(
                        "DISCORD_SHARD_IDS",
                        "Discord refused the shard; check DISCORD_SHARD_COUNT and "
                        "DISCORD_SHARD_IDS",
                    ) from None
                raise
        raise TimeoutError("Discord did not say READY in time")

    async def wait_recovered(self) -> None:
        """Until the start-up notices about interrupted jobs have been sent."""
        if self._recovery is not None:
            await asyncio.shield(self._recovery)

    async def wait_closed(self) -> None:
        """Until the gateway connection ends (raises what ended it)."""
        if self._gateway_task is not None:
            await self._gateway_task

    async def close(self) -> None:
        """Stop jobs in flight, disconnect and release everything the bot opened."""
        self.app.readiness.set("discord", False)
        await self.imagine.shutdown()
        await super().close()
        for task in (self._watcher, self._recovery, self._gateway_task):
            if task is not None and not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        await self.imagine.aclose()

    async def on_message(self, message: discord.Message) -> None:
        """Replies to results (and mentions on images) start edits."""
        if self.user is not None:
            await self.imagine.on_message(message, self.user)

    async def on_disconnect(self) -> None:
        """One WARNING when the gateway connection drops; discord.py reconnects and resumes."""
        reason = gateway_log.GATEWAY_LOG.take_reason()
        if self.is_closed():
            return
        if not self.sharded:
            self._connection_lost(None)
        if self._gateway_down:
            logger.info("Discord gateway still unreachable (%s)", reason or "closed again")
            return
        self._gateway_down = True
        logger.warning(
            "Discord gateway connection lost (%s); reconnecting", reason or "closed by Discord"
        )

    async def on_resumed(self) -> None:
        """The session survived the reconnect: events missed meanwhile are replayed."""
        self._gateway_back()
        if not self.sharded:
            self._connection_back(None)

    async def on_ready(self) -> None:
        """Connected with a new session (at start, or when a resume was refused).

        A sharded client says this once every shard it runs is ready.
        """
        self._gateway_back()
        if not self.sharded:
            self._lost.clear()
        self._show_readiness()

    # Overridden by the sharded client, which follows each shard's own events.
    sharded = False

    def _connection_lost(self, shard_id: int | None) -> None:
        self._lost.add(shard_id)
        self._show_readiness()

    def _connection_back(self, shard_id: int | None) -> None:
        self._lost.discard(shard_id)
        self._show_readiness()

    def _show_readiness(self) -> None:
        """/readyz: ready while every connection this process runs is up."""
        up = self.is_ready() and not self._lost and not self.is_closed()
        self.app.readiness.set("discord", up)

    def _gateway_back(self) -> None:
        if self._gateway_down:
            self._gateway_down = False
            logger.info("Discord gateway connection is back")

    async def on_interaction(self, interaction: discord.Interaction) -> None:
        """Modal submissions are routed by custom_id, so they survive restarts."""
        if interaction.type is discord.InteractionType.modal_submit:
            await handle_modal_submit(interaction)

    async def _command_error(
        self, interaction: discord.Interaction, error: app_commands.AppCommandError
    ) -> None:
        name = gateway_log.command_name(interaction)
        logger.error("command %s failed", name, exc_info=error)
        text = warning(texts.bug(None, MARKUP))
        try:
            if interaction.response.is_done():
                await interaction.followup.send(text, ephemeral=True)
            else:
                await interaction.response.send_message(text, ephemeral=True)
        except discord.HTTPException as exc:
            api_calls.failed_call(exc, "interaction_response")

    # --- restart recovery ------------------------------------------------------------------------
    async def recover_interrupted(self) -> None:
        """Edit (or, once the token expired, post) a notice for each interrupted Discord job."""
        try:
            jobs = await self.app.service.recover_interrupted()
        except Exception:
            logger.exception("could not look up interrupted jobs")
            return
        await self._announce(jobs)

    async def watch_interrupted(self) -> None:
        """Every IMAGINE_RECOVERY_CHECK_S, tell the users of jobs another instance left behind.

        With several instances on one database, one that dies leaves its jobs running; the
        store ends them (refunded) and hands each to exactly one surviving instance to announce.
        """
        if self._recovery is not None:
            with contextlib.suppress(Exception):
                await asyncio.shield(self._recovery)  # the start-up notices go first
        every = self.app.settings.imagine_recovery_check_s
        while True:
            await asyncio.sleep(every)
            try:
                jobs = await self.app.service.newly_interrupted("discord")
            except Exception as exc:
                logger.warning("could not look for interrupted jobs: %s", exc)
                continue
            await self._announce(jobs)

    async def _announce(self, jobs: list[JobRecord]) -> None:
        for job in jobs:
            if job.requester.platform != "discord":
                continue
            try:
                await self._tell_interrupted(job)
            except discord.HTTPException as exc:
                api_calls.failed_call(exc, "send_message")
                logger.warning("could not tell the user about interrupted job %s: %s", job.id, exc)

    async def _tell_interrupted(self, job: JobRecord) -> None:
        ref = job.platform_ref
        notice = Display(interrupted(job.prompt))
        message_id = str(ref.get("message_id") or "")
        channel_id = str(ref.get("channel_id") or job.requester.channel_id or "")
        token = str(ref.get("interaction_token") or "")
        created = float(str(ref.get("created_at") or 0))
        fresh = time.time() - created < INTERACTION_TOKEN_LIFETIME
        if ref.get("kind") == "interaction" and token and message_id.isdigit() and fresh:
            webhook = discord.Webhook.partial(int(str(ref["application_id"])), token, client=self)
            try:
                await webhook.edit_message(int(message_id), **notice.edit_args())
                return
            except discord.HTTPException as exc:  # the token expired: post in the channel
                api_calls.failed_call(exc, "edit_webhook_message")
        if not channel_id.isdigit():
            return
        channel = self.get_partial_messageable(int(channel_id))
        if ref.get("kind") == "message" and message_id.isdigit():
            try:
                await channel.get_partial_message(int(message_id)).edit(**notice.edit_args())
                return
            except discord.HTTPException as exc:  # deleted: post afresh
                api_calls.failed_call(exc, "edit_message")
        await channel.send(f"{MARKUP.mention(job.requester.user_id)} {notice.content}")


class ShardedImagineDiscordBot(ImagineDiscordBot, discord.AutoShardedClient):
    """The same bot on some of the app's shards (DISCORD_SHARD_COUNT, DISCORD_SHARD_IDS).

    Discord sends a guild's events only on shard ``(guild_id >> 22) % shard_count``, so processes
    running different shard ids split the guilds between them.
    """

    sharded = True

    def _shard_options(self, app: App) -> dict[str, Any]:
        settings = app.settings
        return {
            "shard_count": settings.discord_shard_count,
            "shard_ids": list(settings.discord_shard_ids) or None,  # None: every shard
        }

    async def on_shard_disconnect(self, shard_id: int) -> None:
        """One shard's connection dropped; discord.py reconnects it."""
        if not self.is_closed():
            self._connection_lost(shard_id)

    async def on_shard_ready(self, shard_id: int) -> None:
        """A shard connected with a new session."""
        self._connection_back(shard_id)

    async def on_shard_resumed(self, shard_id: int) -> None:
        """A shard's session survived its reconnect."""
        self._connection_back(shard_id)


def discord_bot_for(app: App, *, guild_ready_timeout: float = 2.0) -> ImagineDiscordBot:
    """The bot as the settings ask: sharded when DISCORD_SHARD_COUNT is set, else one connection."""
    if app.settings.discord_shard_count is not None:
        return ShardedImagineDiscordBot(app, guild_ready_timeout=guild_ready_timeout)
    return ImagineDiscordBot(app, guild_ready_timeout=guild_ready_timeout)


async def run_discord(app: App) -> None:
    """Run the Discord bot until cancelled (or the connection fails), then close it cleanly."""
    bot = discord_bot_for(app)
    try:
        await bot.start_bot()
        logger.info(
            "Discord bot ready as %s; invite it with %s",
            bot.user,
            discord_invite_url(str(bot.application_id)),
        )
        await bot.wait_closed()
    finally:
        await bot.close()
