"""A job's message deleted, the channel lost or the image service silent: the user still hears."""

from __future__ import annotations

import logging
import re
from typing import Any

import pytest

from tests.fakes.discord_server import (
    EPHEMERAL,
    BotFactory,
    Call,
    FakeDiscord,
    ProviderGate,
    job_of,
)
from tests.fakes.openai_server import FakeOpenAI


def posted_result_for(fake: FakeDiscord, user_id: str) -> list[dict[str, Any]]:
    """Results the bot posted afresh in the channel, naming the user first."""
    return [
        m
        for m in fake.channel_messages()
        if m["embeds"] and str(m["content"]).startswith(f"<@{user_id}>")
    ]


async def test_a_deleted_thinking_message_gets_the_result_posted_in_the_channel(
    discord_fake: FakeDiscord, discord_bot: BotFactory, openai_fake: FakeOpenAI
) -> None:
    app, _bot = await discord_bot()
    gate = ProviderGate.hold(app)
    it = await discord_fake.slash(discord_fake.alice, prompt="a lighthouse")
    await discord_fake.wait_until(lambda: it.callback_type == 5)
    assert it.original_id is not None
    discord_fake.delete_by_user(it.original_id)
    gate.release.set()

    [message] = await discord_fake.wait_until(
        lambda: posted_result_for(discord_fake, discord_fake.alice.id)
    )
    assert message["attachments"] and message["components"]
    assert "a lighthouse" in message["embeds"][0]["description"]
    job = await app.store.job_for_message("discord", message["id"])
    assert job is not None and job.id == job_of(message) and job.status == "succeeded"
    # Its buttons work: Regenerate on the new message makes another image.
    again = await discord_fake.click(
        discord_fake.bob, message["id"], f"imagine:regen:{job_of(message)}"
    )
    await discord_fake.result_of(again)
    assert len(openai_fake.requests) == 2


async def test_a_deleted_status_reply_gets_the_edit_posted_in_the_channel(
    discord_fake: FakeDiscord, discord_bot: BotFactory, openai_fake: FakeOpenAI
) -> None:
    app, _bot = await discord_bot()
    first = await discord_fake.generate(discord_fake.alice, "a red boat")
    gate = ProviderGate.hold(app)
    asked = await discord_fake.send_message(
        discord_fake.alice, "make it blue", reply_to=first["id"]
    )
    [status] = await discord_fake.wait_until(lambda: discord_fake.replies_to(asked["id"]))
    discord_fake.delete_by_user(status["id"])
    gate.release.set()

    [message] = await discord_fake.wait_until(
        lambda: posted_result_for(discord_fake, discord_fake.alice.id)
    )
    assert message["embeds"][0]["title"] == "Edited image" and message["attachments"]
    job = await app.store.job_for_message("discord", message["id"])
    assert job is not None and job.status == "succeeded" and job.prompt == "make it blue"
    # A reply to the new message edits this job's image.
    chained = await discord_fake.reply_result(
        await discord_fake.send_message(discord_fake.alice, "add a sail", reply_to=message["id"])
    )
    last = await app.store.job_for_message("discord", chained["id"])
    assert last is not None and last.parent_job_id == job.id


async def test_a_channel_the_bot_lost_access_to_ends_the_job_with_a_warning(
    discord_fake: FakeDiscord,
    discord_bot: BotFactory,
    openai_fake: FakeOpenAI,
    caplog: pytest.LogCaptureFixture,
) -> None:
    app, _bot = await discord_bot()
    first = await discord_fake.generate(discord_fake.alice, "a red boat")
    gate = ProviderGate.hold(app)
    asked = await discord_fake.send_message(
        discord_fake.alice, "make it blue", reply_to=first["id"]
    )
    await discord_fake.wait_until(lambda: discord_fake.replies_to(asked["id"]))
    discord_fake.channel_blocked = True  # the bot's role was removed from the channel
    gate.release.set()

    def told(call: Call) -> bool:
        return isinstance(call.json, dict) and "Your image was made" in str(
            call.json.get("content")
        )

    [telling] = await discord_fake.wait_until(lambda: [c for c in discord_fake.calls if told(c)])
    assert telling.status == 403
    result_edit = [
        c for c in discord_fake.calls if isinstance(c.json, dict) and c.json.get("embeds")
    ][-1]
    assert result_edit.status == 403
    job_id = re.search(r"job `([0-9a-z]+)`", str((telling.json or {})["content"]))
    assert job_id
    job = await app.store.get_job(job_id[1])
    assert job is not None and job.status == "succeeded" and job.prompt == "make it blue"
    warned = [
        r
        for r in caplog.records
        if r.name == "bot.presenting" and r.levelno == logging.WARNING and job.id in r.getMessage()
    ]
    assert warned


async def test_an_image_service_timeout_ends_in_a_private_try_again(
    discord_fake: FakeDiscord, discord_bot: BotFactory, openai_fake: FakeOpenAI
) -> None:
    app, _bot = await discord_bot(openai_timeout=0.2, openai_max_retries=0)
    openai_fake.fail_next("timeout", seconds=30)
    it = await discord_fake.slash(discord_fake.alice, prompt="a slow sunset")
    reply = await discord_fake.private_reply(it)

    assert reply["flags"] & EPHEMERAL
    assert "unavailable right now" in reply["content"]
    assert "Nothing was charged" in reply["content"] and "try again" in reply["content"]
    # Nothing public is left saying "thinking…".
    assert not [m for m in discord_fake.channel_messages() if m.get("_token")]
    [usage] = await app.store.usage_summary(f"discord:{discord_fake.alice.id}")
    assert usage.images_today == 0 and usage.cost_today == 0


async def test_an_image_service_timeout_ends_the_status_reply(
    discord_fake: FakeDiscord, discord_bot: BotFactory, openai_fake: FakeOpenAI
) -> None:
    await discord_bot(openai_timeout=0.2, openai_max_retries=0)
    first = await discord_fake.generate(discord_fake.alice, "a red boat")
    openai_fake.fail_next("timeout", seconds=30)
    asked = await discord_fake.send_message(
        discord_fake.alice, "make it blue", reply_to=first["id"]
    )
    [status] = await discord_fake.wait_until(
        lambda: [m for m in discord_fake.replies_to(asked["id"]) if "⚠️" in m["content"]]
    )
    assert "unavailable right now" in status["content"]
    assert "Nothing was charged" in status["content"] and "try again" in status["content"]
    assert not status["embeds"] and not status["attachments"]


async def test_an_expired_token_and_a_lost_channel_end_the_job_with_a_warning(
    discord_fake: FakeDiscord,
    discord_bot: BotFactory,
    openai_fake: FakeOpenAI,
    caplog: pytest.LogCaptureFixture,
) -> None:
    app, _bot = await discord_bot()
    gate = ProviderGate.hold(app)
    it = await discord_fake.slash(discord_fake.alice, prompt="a long wait")
    await discord_fake.wait_until(lambda: it.callback_type == 5)
    discord_fake.expire(it)  # 15 minutes in the queue...
    discord_fake.channel_blocked = True  # ...and the bot lost the channel meanwhile
    gate.release.set()

    def told(call: Call) -> bool:
        return isinstance(call.json, dict) and "Your image was made" in str(
            call.json.get("content")
        )

    # The private followup needs the expired token; the channel refuses the bot: both fail.
    [telling] = await discord_fake.wait_until(
        lambda: [c for c in discord_fake.calls if told(c) and c.status == 403]
    )
    assert [c.status for c in discord_fake.calls if told(c)] == [401, 403]
    found = re.search(r"job `([0-9a-z]+)`", str((telling.json or {})["content"]))
    assert found
    job = await app.store.get_job(found[1])
    assert job is not None and job.status == "succeeded"
    assert [r for r in caplog.records if r.levelno == logging.WARNING and job.id in r.getMessage()]


async def test_an_interaction_acknowledged_too_late_starts_nothing_and_logs_a_warning(
    discord_fake: FakeDiscord,
    discord_bot: BotFactory,
    openai_fake: FakeOpenAI,
    caplog: pytest.LogCaptureFixture,
) -> None:
    await discord_bot()

    def acknowledging(call: Call) -> bool:
        return call.path.endswith("/callback")

    # The bot's answer arrived after Discord's 3 seconds (a stalled loop or network).
    discord_fake.reject_next(acknowledging, 404, 10062, "Unknown interaction")
    late = await discord_fake.slash(discord_fake.alice, prompt="a missed chance")
    await discord_fake.wait_until(lambda: [c for c in discord_fake.calls if c.status == 404])
    # The next command is answered as usual, and the late one never reached the image service.
    await discord_fake.generate(discord_fake.alice, "a second chance")
    assert [r.json["prompt"] for r in openai_fake.requests if r.json] == ["a second chance"]
    assert late.callback_type is None
    warned = [
        r for r in caplog.records if r.levelno == logging.WARNING and late.id in r.getMessage()
    ]
    assert warned
