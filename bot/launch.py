"""The composition root: builds the app and each platform's bot, and runs them together.

The only module of ``bot`` that knows the adapters exist (the import-boundary check in
pyproject.toml holds every other one to that).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal

from bot import metrics, retention
from bot.app import build
from bot.config import Settings
from bot.errors import ConfigError

logger = logging.getLogger("bot.cli")


def discord_invite(settings: Settings) -> str:
    """The link that adds the configured Discord bot to a server."""
    from adapters.discord.invite import application_id_from_token, discord_invite_url

    token = settings.discord_token.get_secret_value() if settings.discord_token else ""
    application_id = application_id_from_token(token) if token else None
    if application_id is None:
        raise ConfigError("DISCORD_TOKEN", "not set or not a bot token; copy it from the Bot page")
    return discord_invite_url(application_id)


def slack_manifest() -> str:
    """The Slack app manifest (YAML)."""
    from adapters.slack.manifest import slack_manifest as manifest

    return manifest()


async def run(settings: Settings, platform: str | None) -> int:
    """Run the chosen platform (or every configured one) until cancelled or SIGTERM."""
    discord_ready = settings.discord_token is not None
    slack_ready = settings.slack_bot_token is not None
    wanted = {"discord": discord_ready, "slack": slack_ready}
    if platform is not None:
        if not wanted[platform]:
            variable = "DISCORD_TOKEN" if platform == "discord" else "SLACK_BOT_TOKEN"
            raise ConfigError(variable, f"not set; it is needed to run the {platform} bot")
        wanted = {platform: True}
    chosen = [name for name, ready in wanted.items() if ready]
    if not chosen:
        raise ConfigError(
            "DISCORD_TOKEN / SLACK_BOT_TOKEN",
            "neither is set, so there is nothing to run; set DISCORD_TOKEN for Discord, "
            "SLACK_BOT_TOKEN plus SLACK_APP_TOKEN (or SLACK_SIGNING_SECRET) for Slack",
        )
    app = await build(settings)
    # Before any adapter admits a job: what a previous process left running is now interrupted.
    await app.service.recover_interrupted()
    sweeper = asyncio.create_task(retention.keep_sweeping(app.store, settings), name="retention")
    watchers: list[asyncio.Task[None]] = [sweeper]
    server: metrics.MetricsServer | None = None
    if settings.imagine_metrics_port is not None:
        readiness = app.readiness
        for name in chosen:
            # Not ready until the adapter says its platform is connected.
            readiness.set(name, False)
        watchers.append(
            asyncio.create_task(
                metrics.watch_store(lambda: app.store.get_job(""), readiness), name="store-check"
            )
        )
        try:
            server = metrics.serve(settings.imagine_metrics_port, readiness)
        except OSError as exc:
            for task in watchers:
                task.cancel()
            await app.aclose()
            raise ConfigError(
                "IMAGINE_METRICS_PORT",
                f"port {settings.imagine_metrics_port} can't be opened ({exc.strerror}); "
                "free it or choose another",
            ) from None
        logger.info("metrics on port %d: /metrics, /healthz, /readyz", server.port)
    main_task = asyncio.current_task()
    loop = asyncio.get_running_loop()
    if main_task is not None:
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(signal.SIGTERM, main_task.cancel)
    logger.info("starting: %s", ", ".join(chosen))
    tasks: list[asyncio.Task[None]] = []
    try:
        if "discord" in chosen:
            from adapters.discord.bot import run_discord

            tasks.append(asyncio.create_task(run_discord(app), name="discord"))
        if "slack" in chosen:
            from adapters.slack.bot import run_slack

            tasks.append(asyncio.create_task(run_slack(app), name="slack"))
        # One platform failing to start (a bad token) stops the whole process with its reason.
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        for task in done:
            error = task.exception()
            if error is not None:
                raise error
    except asyncio.CancelledError:
        logger.info("stopping")
    finally:
        for task in (*tasks, *watchers):
            task.cancel()
        await asyncio.gather(*tasks, *watchers, return_exceptions=True)
        if server is not None:
            server.close()
        await app.aclose()
    return 0
