"""Sharding: DISCORD_SHARD_COUNT / DISCORD_SHARD_IDS split the guilds between processes."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import aiohttp
import discord
import pytest

from bot.errors import ConfigError
from tests.discord.test_startup import logged_line
from tests.fakes.cli_process import start_cli
from tests.fakes.discord_server import BotFactory, FakeDiscord
from tests.fakes.openai_server import FakeOpenAI


async def test_a_bot_on_shard_1_of_2_identifies_so_and_serves_its_guild(
    discord_fake: FakeDiscord, discord_bot: BotFactory
) -> None:
    discord_fake.put_guild_on_shard(1, 2)
    _app, bot = await discord_bot(discord_shard_count=2, discord_shard_ids=[1])

    assert isinstance(bot, discord.AutoShardedClient)
    assert discord_fake.identified_shards == [[1, 2]]
    assert bot.get_guild(int(discord_fake.guild_id)) is not None
    # A slash command and a reply to its result: both reach the bot on the guild's shard.
    result = await discord_fake.generate(discord_fake.alice, "a lighthouse")
    assert result["attachments"] and result["components"]
    asked = await discord_fake.send_message(
        discord_fake.alice, "make it night", reply_to=result["id"]
    )
    edited = await discord_fake.reply_result(asked)
    assert edited["attachments"]


async def test_without_shard_settings_the_bot_identifies_with_no_shard(
    discord_fake: FakeDiscord, discord_bot: BotFactory
) -> None:
    _app, bot = await discord_bot()

    assert not isinstance(bot, discord.AutoShardedClient)
    assert discord_fake.identified_shards == [None]
    assert "shard" not in (discord_fake.identify or {})
    assert (await discord_fake.generate(discord_fake.alice, "a lighthouse"))["attachments"]


async def test_two_bots_on_one_database_split_the_shards(
    discord_fake: FakeDiscord, discord_bot: BotFactory
) -> None:
    discord_fake.put_guild_on_shard(1, 2)
    _app1, on_1 = await discord_bot(discord_shard_count=2, discord_shard_ids=[1])
    _app0, on_0 = await discord_bot(discord_shard_count=2, discord_shard_ids=[0])
    await discord_fake.wait_until(lambda: 0 in discord_fake.sockets)

    assert sorted(s for s in discord_fake.identified_shards if s) == [[0, 2], [1, 2]]
    guild = int(discord_fake.guild_id)
    assert on_1.get_guild(guild) is not None and on_0.get_guild(guild) is None
    assert (await discord_fake.generate(discord_fake.alice, "two moons"))["attachments"]


async def test_discord_requiring_shards_is_a_config_error(
    discord_fake: FakeDiscord, discord_bot: BotFactory
) -> None:
    discord_fake.min_shards = 2
    with pytest.raises(ConfigError) as caught:
        await discord_bot()
    assert caught.value.variable == "DISCORD_SHARD_COUNT"
    assert discord_fake.identified_shards == [None]


async def _identify(fake: FakeDiscord, shard: list[int] | None) -> int | None:
    """Identify on the fake gateway with a raw websocket; the close code it answers, if any."""
    data: dict[str, object] = {"token": fake.token, "intents": 1, "properties": {}}
    if shard is not None:
        data["shard"] = shard
    async with aiohttp.ClientSession() as http, http.ws_connect(fake.gateway_url) as ws:
        hello = await ws.receive_json()
        assert hello["op"] == 10
        await ws.send_str(json.dumps({"op": 2, "d": data}))
        message = await ws.receive()
        if message.type == aiohttp.WSMsgType.TEXT:
            return None
        return ws.close_code


async def test_the_fake_gateway_refuses_shards_as_discord_does(discord_fake: FakeDiscord) -> None:
    assert await _identify(discord_fake, [2, 2]) == 4010  # shard id must be below the count
    assert await _identify(discord_fake, [-1, 2]) == 4010
    assert await _identify(discord_fake, [0, 0]) == 4010
    assert await _identify(discord_fake, [1, 2]) is None
    discord_fake.min_shards = 4
    assert await _identify(discord_fake, None) == 4011
    assert await _identify(discord_fake, [1, 2]) == 4011
    assert await _identify(discord_fake, [3, 4]) is None
    assert discord_fake.identified_shards == [[2, 2], [-1, 2], [0, 0], [1, 2], None, [1, 2], [3, 4]]


async def test_imagine_bot_run_discord_on_one_shard(
    discord_fake: FakeDiscord, openai_fake: FakeOpenAI, tmp_path: Path
) -> None:
    discord_fake.put_guild_on_shard(1, 2)
    process = await start_cli(
        "run",
        "discord",
        cwd=tmp_path,
        DISCORD_TOKEN=discord_fake.token,
        DISCORD_API_BASE_URL=discord_fake.api_url,
        DISCORD_GATEWAY_URL=discord_fake.gateway_url,
        DISCORD_SHARD_COUNT="2",
        DISCORD_SHARD_IDS="1",
        OPENAI_API_KEY=openai_fake.api_key,
        OPENAI_BASE_URL=openai_fake.base_url,
        IMAGINE_PARTIAL_IMAGES="0",
    )
    try:
        _ready, before = await logged_line(process, "invite it with")
        assert " WARNING " not in before and " ERROR " not in before, before
        assert discord_fake.identified_shards == [[1, 2]]
        message = await discord_fake.generate(discord_fake.alice, "a kite over the sea")
        assert message["attachments"]
    finally:
        if process.returncode is None:
            process.terminate()
        _out, err = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode == 0, err.decode()
    assert "Traceback" not in err.decode()
