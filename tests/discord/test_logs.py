"""What the operator reads in the log: command names, no voice noise, reconnects in one line."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import pytest
from discord.voice_client import VoiceClient

from adapters.discord.bot import ImagineDiscordBot
from adapters.discord.render import MARKUP
from bot import texts
from bot.app import App
from tests.fakes.discord_server import BotFactory, FakeDiscord


@pytest.mark.allow_error_logs
async def test_a_failing_command_is_logged_by_its_name(
    discord_fake: FakeDiscord, discord_bot: BotFactory, caplog: pytest.LogCaptureFixture
) -> None:
    await discord_bot()
    discord_fake.reject_next(
        lambda c: c.path.endswith("/callback"), 400, 50035, "Invalid Form Body"
    )
    it = await discord_fake.slash(discord_fake.alice, prompt="a lighthouse")
    reply = await discord_fake.private_reply(it)

    assert reply["content"] == "⚠️ " + texts.bug(None, MARKUP)
    [logged] = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert logged.name == "adapters.discord"
    assert logged.getMessage() == "command /imagine failed"
    assert logged.exc_info is not None  # the operator still gets the traceback of a real bug


async def test_the_missing_voice_libraries_are_not_warned_about(
    make_app: Callable[..., Awaitable[App]],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # discord.py warns once per process; these flags say it has not warned yet.
    monkeypatch.setattr(VoiceClient, "warn_nacl", True)
    monkeypatch.setattr(VoiceClient, "warn_dave", True)
    caplog.set_level(logging.INFO)
    bot = ImagineDiscordBot(await make_app())
    logging.getLogger("discord.client").warning("a warning the operator should see")
    await bot.close()

    lines = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert lines == ["a warning the operator should see"]


@pytest.mark.parametrize(
    "how",
    [
        "close 1000",  # discord.py: "sometimes, discord sends us 1000 for unknown reasons"
        "close 4000",  # Discord docs: 4000 Unknown error, "try reconnecting"
        "op 7",  # Discord docs: Reconnect, "you should attempt to reconnect and resume"
        "outage",  # the connection drops and the next attempt to connect fails
    ],
)
async def test_a_gateway_reconnect_is_one_warning_and_the_bot_keeps_working(
    how: str,
    discord_fake: FakeDiscord,
    discord_bot: BotFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    await discord_bot()
    caplog.clear()
    caplog.set_level(logging.INFO)
    if how == "op 7":
        await discord_fake.ask_to_reconnect()
    elif how == "outage":
        discord_fake.refuse_connections = 1
        await discord_fake.drop_connection(1001)
    else:
        await discord_fake.drop_connection(int(how.split()[1]))
    await discord_fake.wait_until(lambda: discord_fake.resumes == 1)
    message = await discord_fake.generate(discord_fake.alice, "a kite after the storm")

    assert message["attachments"]
    noticed = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert [(r.name, r.levelname) for r in noticed] == [("adapters.discord", "WARNING")]
    assert noticed[0].getMessage().startswith("Discord gateway connection lost (")
    assert not [r for r in caplog.records if r.exc_info or r.exc_text]
    if how == "outage":
        retried = [r.getMessage() for r in caplog.records if "still unreachable" in r.getMessage()]
        assert len(retried) == 1 and "503" in retried[0], retried
