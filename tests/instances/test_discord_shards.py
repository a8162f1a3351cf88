"""Two ``imagine-bot run discord`` processes on one PostgreSQL database, one shard each.

Discord routes a guild's events to one shard only (shard_id = (guild_id >> 22) % num_shards),
so each process serves the guilds of its shard; the database (and the data folder) they
share is how the one left standing learns what a dead one left unfinished.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from tests.fakes.cli_process import start_cli
from tests.fakes.discord_server import FakeDiscord, job_of
from tests.fakes.openai_server import FakeOpenAI
from tests.instances.harness import (
    START_TIMEOUT,
    Instance,
    assert_clean_exit,
    assert_refunded_interruption,
    finished_job,
    kill_all,
    prompts,
)

WAIT = 30.0
READY_LINE = "Discord bot ready as"


class Shards:
    """Bot processes on the one fake Discord and fake OpenAI, sharing a database and data folder."""

    def __init__(
        self, tmp_path: Path, discord: FakeDiscord, openai: FakeOpenAI, database_url: str
    ) -> None:
        self.tmp_path = tmp_path
        self.discord = discord
        self.openai = openai
        self.database_url = database_url
        self.data_dir = tmp_path / "shared-data"
        self.instances: list[Instance] = []

    async def start(self, shard_count: int, *shard_ids: int, **settings: str) -> list[Instance]:
        """One process per shard id (in parallel); wait until each is ready on the gateway."""
        started = await asyncio.gather(
            *(self._start(shard_count, shard, settings) for shard in shard_ids)
        )
        await asyncio.gather(*(i.wait_log(READY_LINE, START_TIMEOUT) for i in started))
        return list(started)

    async def _start(self, shard_count: int, shard: int, settings: dict[str, str]) -> Instance:
        name = f"shard-{shard}"
        cwd = self.tmp_path / name
        cwd.mkdir(exist_ok=True)
        process = await start_cli(
            "run",
            "discord",
            cwd=cwd,
            DISCORD_TOKEN=self.discord.token,
            DISCORD_API_BASE_URL=self.discord.api_url,
            DISCORD_GATEWAY_URL=self.discord.gateway_url,
            DISCORD_SHARD_COUNT=str(shard_count),
            DISCORD_SHARD_IDS=str(shard),
            OPENAI_API_KEY=self.openai.api_key,
            OPENAI_BASE_URL=self.openai.base_url,
            IMAGINE_PARTIAL_IMAGES="0",
            IMAGINE_DATA_DIR=str(self.data_dir),
            IMAGINE_DATABASE_URL=self.database_url,
            **settings,
        )
        instance = Instance(name, process, 0)
        self.instances.append(instance)
        return instance

    async def job_rows(self) -> list[Any]:
        """Every job row in the shared database (read directly, registering no owner)."""
        conn = await asyncpg.connect(self.database_url, timeout=10)
        try:
            return list(await conn.fetch("SELECT id, status FROM jobs"))
        finally:
            await conn.close()

    async def aclose(self) -> None:
        """Kill whatever a failed test left running."""
        await kill_all(self.instances)


@pytest.fixture
async def shards(
    tmp_path: Path, discord_fake: FakeDiscord, openai_fake: FakeOpenAI, pg_url: str
) -> AsyncIterator[Shards]:
    """No process started yet (``await shards.start(2, 0, 1)``); the guild is on shard 1 of 2."""
    discord_fake.put_guild_on_shard(1, 2)
    made = Shards(tmp_path, discord_fake, openai_fake, pg_url)
    try:
        yield made
    finally:
        await made.aclose()


async def test_two_processes_split_the_shards_and_only_the_guilds_shard_runs_its_job(
    shards: Shards, discord_fake: FakeDiscord, openai_fake: FakeOpenAI
) -> None:
    on_0, on_1 = await shards.start(2, 0, 1)
    await discord_fake.wait_until(lambda: 0 in discord_fake.sockets and 1 in discord_fake.sockets)
    assert sorted(s for s in discord_fake.identified_shards if s) == [[0, 2], [1, 2]]

    prompt = "a lighthouse on shard one"
    asked = await discord_fake.slash(discord_fake.alice, prompt=prompt)
    shown = await discord_fake.wait_until(
        lambda: (m := discord_fake.messages.get(asked.original_id or "")) and m["embeds"] and m,
        timeout=WAIT,
    )
    assert shown["attachments"], shown
    job_id = job_of(shown)
    await on_1.wait_log(f"job finished job={job_id} ", WAIT)

    codes = await asyncio.gather(on_0.stop(), on_1.stop())
    for instance, code in zip((on_0, on_1), codes, strict=True):
        assert_clean_exit(instance, code)
    # The guild's events reached shard 1 only: the other process never heard of the job.
    assert finished_job(on_1, job_id) and not finished_job(on_0, job_id)
    assert prompts(openai_fake) == [prompt]


async def test_the_other_shard_ends_and_announces_the_job_of_a_process_killed_mid_call(
    shards: Shards, discord_fake: FakeDiscord, openai_fake: FakeOpenAI
) -> None:
    openai_fake.answer_gate = asyncio.Event()  # the call is on the wire when shard 1 dies
    on_0, on_1 = await shards.start(2, 0, 1, IMAGINE_RECOVERY_CHECK_S="1")
    prompt = "a windmill in a storm"
    asked = await discord_fake.slash(discord_fake.alice, prompt=prompt)
    await openai_fake.wait_until(lambda: openai_fake.in_flight == 1, timeout=WAIT)
    ((job_id, status),) = await shards.job_rows()
    assert status == "running"

    on_1.kill()
    assert await on_1.wait() == -signal.SIGKILL
    # Shard 0 looks every second: the user's message now says the job was interrupted.
    shown = await discord_fake.wait_until(
        lambda: "interrupted" in (m := discord_fake.original(asked))["content"] and m,
        timeout=60,
    )
    assert prompt in shown["content"] and "Nothing was charged" in shown["content"]
    await assert_refunded_interruption(shards.data_dir, shards.database_url, job_id)

    openai_fake.answer_gate.set()  # the dead call's answer reaches nobody
    assert_clean_exit(on_0, await on_0.stop())
    # The job ran once: nobody sent its image call again, and its user was told once.
    assert prompts(openai_fake) == [prompt]
    told = [e for e in discord_fake.webhook_edits(asked) if "interrupted" in e.get("content", "")]
    assert len(told) == 1
    assert not finished_job(on_0, job_id)
