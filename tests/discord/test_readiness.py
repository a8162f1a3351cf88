"""/readyz for Discord: ready while the gateway is connected, not while it reconnects."""

from __future__ import annotations

import asyncio

from bot.app import App
from bot.metrics import Readiness
from tests.fakes.discord_server import BotFactory, FakeDiscord


class WatchedReadiness(Readiness):
    """The app's readiness checks, with a way to wait for a change."""

    def __init__(self) -> None:
        super().__init__()
        self._changed = asyncio.Event()

    def set(self, name: str, ok: bool) -> None:
        super().set(name, ok)
        self._changed.set()

    async def until(self, name: str, ok: bool, timeout: float = 10.0) -> None:  # noqa: ASYNC109
        async with asyncio.timeout(timeout):
            while self().get(name) is not ok:
                self._changed.clear()
                await self._changed.wait()


def watch(app: App) -> WatchedReadiness:
    """Swap in a watched readiness, starting from what the bot has said so far."""
    watched = WatchedReadiness()
    for name, ok in app.readiness().items():
        if name != "store":
            watched.set(name, ok)
    app.readiness = watched
    return watched


def discord_ready(app: App) -> bool | None:
    return app.readiness().get("discord")


async def test_readiness_follows_the_gateway_connection(
    discord_fake: FakeDiscord, discord_bot: BotFactory
) -> None:
    app, bot = await discord_bot()
    assert discord_ready(app) is True
    readiness = watch(app)

    # The connection drops and Discord stays unreachable until the outage is over.
    discord_fake.refuse_connections = 1000
    await discord_fake.drop_connection(1001)
    await discord_fake.wait_until(lambda: discord_fake.refused >= 1)
    assert discord_ready(app) is False
    discord_fake.refuse_connections = 0
    await discord_fake.wait_until(lambda: discord_fake.resumes == 1)
    await readiness.until("discord", True)
    assert (await discord_fake.generate(discord_fake.alice, "after the storm"))["attachments"]

    await bot.close()
    assert discord_ready(app) is False


async def test_a_sharded_bot_is_ready_only_while_every_shard_is_connected(
    discord_fake: FakeDiscord, discord_bot: BotFactory
) -> None:
    discord_fake.put_guild_on_shard(1, 2)
    app, _bot = await discord_bot(discord_shard_count=2)  # both shards in this process
    await discord_fake.wait_until(lambda: {0, 1} <= set(discord_fake.sockets))
    readiness = watch(app)
    await readiness.until("discord", True)  # once both shards are ready
    assert sorted(s for s in discord_fake.identified_shards if s) == [[0, 2], [1, 2]]

    discord_fake.refuse_connections = 1000
    await discord_fake.drop_shard(0, 1001)  # not the guild's shard: /imagine still works there
    await discord_fake.wait_until(lambda: discord_fake.refused >= 1)
    assert discord_ready(app) is False
    discord_fake.refuse_connections = 0
    await discord_fake.wait_until(lambda: 0 in discord_fake.sockets)
    await readiness.until("discord", True)
    assert (await discord_fake.generate(discord_fake.alice, "after the storm"))["attachments"]
