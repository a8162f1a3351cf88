"""A result whose images retention removed: its buttons say so at once, privately."""

from __future__ import annotations

import time

from bot import retention
from tests.fakes.discord_server import EPHEMERAL, BotFactory, FakeDiscord, job_of
from tests.fakes.openai_server import FakeOpenAI

DAY = 86_400.0


async def test_a_pruned_results_vary_and_edit_answer_privately_that_the_image_is_gone(
    discord_fake: FakeDiscord, discord_bot: BotFactory, openai_fake: FakeOpenAI
) -> None:
    fake = discord_fake
    app, _bot = await discord_bot()
    first = await fake.generate(fake.alice, "a lost kite")
    # Retention's sweep, as if the result were 100 days old (images are kept 90 by default).
    report = await retention.sweep(app.store, app.settings, now=time.time() + 100 * DAY)
    assert report.folders == 1

    for action in ("vary", "edit"):
        click = await fake.click(fake.alice, first["id"], f"imagine:{action}:{job_of(first)}")
        answer = await fake.private_reply(click)
        assert click.callback_type == 4  # answered at once: no "thinking", no form
        assert answer["flags"] & EPHEMERAL
        assert "no longer kept" in answer["content"], answer["content"]
        assert "nothing was charged" in answer["content"]
    assert len(openai_fake.requests) == 1
