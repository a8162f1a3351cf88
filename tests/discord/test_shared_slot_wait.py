"""A Discord job waiting for a provider slot another instance holds (a shared PostgreSQL store)."""

from __future__ import annotations

import asyncio
import itertools

from bot.store import Store
from tests.fakes.discord_server import BotFactory, FakeDiscord
from tests.fakes.openai_server import FakeOpenAI

INTERVAL = 0.05  # seconds between progress edits; the place in line is said again every 10


async def test_a_job_behind_another_instance_says_next_in_line_once_then_runs(
    discord_fake: FakeDiscord, discord_bot: BotFactory, openai_fake: FakeOpenAI, pg_url: str
) -> None:
    app, _bot = await discord_bot(
        imagine_database_url=pg_url,
        imagine_max_concurrency=1,
        imagine_progress_interval=INTERVAL,
        imagine_partial_images=0,
    )
    # Another instance, alive (its store is open), holds the one slot of the whole bot.
    other = await Store.open(app.store.path, database_url=pg_url)
    try:
        assert await other.take_slot("01otherinstance1", 1)
        it = await discord_fake.slash(discord_fake.alice, prompt="a heron in the reeds")

        def said_next() -> list[dict[str, object]]:
            edits = discord_fake.webhook_edits(it)
            return [e for e in edits if "next in line" in str(e.get("content"))]

        await discord_fake.wait_until(said_next, timeout=30)
        # Several reminders of the place in line (one per 10 intervals) pass meanwhile.
        await asyncio.sleep(60 * INTERVAL)
        assert openai_fake.requests == []
        await other.give_slot("01otherinstance1")
        result = await discord_fake.result_of(it)
    finally:
        await other.close()

    assert result["attachments"] and len(openai_fake.requests) == 1
    # The same words are never sent twice in a row: one edit said "next in line".
    assert len(said_next()) == 1
    contents = [e.get("content") for e in discord_fake.webhook_edits(it) if "content" in e]
    assert all(a != b for a, b in itertools.pairwise(contents)), contents
