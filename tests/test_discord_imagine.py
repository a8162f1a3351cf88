"""/imagine end to end: the real discord.py against the fake Discord and the fake OpenAI."""

from __future__ import annotations

from tests.fakes.discord_server import BotFactory, FakeDiscord
from tests.fakes.openai_server import FakeOpenAI


async def test_imagine_generates_and_shows_result(
    discord_fake: FakeDiscord, discord_bot: BotFactory, openai_fake: FakeOpenAI
) -> None:
    app, bot = await discord_bot()
    it = await discord_fake.slash(discord_fake.alice, prompt="a lighthouse in fog")
    message = await discord_fake.wait_until(
        lambda: it.original_id
        and discord_fake.messages.get(it.original_id, {}).get("embeds")
        and discord_fake.original(it)
    )
    assert it.callback_type == 5
    assert message["attachments"][0]["filename"].endswith(".png")
    print(message)
