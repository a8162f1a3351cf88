"""Refusals and failures reach the user as private, plain-words messages; big results still fit."""

from __future__ import annotations

import io
import logging
import re
import time

import pytest
from PIL import Image

from bot.app import App
from tests.fakes.discord_server import (
    EPHEMERAL,
    BotFactory,
    Call,
    FakeDiscord,
    FakeInteraction,
    ProviderGate,
    png,
)
from tests.fakes.openai_server import FakeOpenAI


def assert_private_and_plain(fake: FakeDiscord, reply: dict[str, object]) -> None:
    assert isinstance(reply["flags"], int) and reply["flags"] & EPHEMERAL
    assert "Traceback" not in str(reply["content"])
    # The public "thinking…" message made way for the private answer.
    assert not [m for m in fake.channel_messages() if m.get("_token") and not m["embeds"]]


def assert_resets_within_a_day(content: str) -> None:
    """The refusal names its reset as a live Discord timestamp, within the day-long window."""
    stamp = re.search(r"<t:(\d+):R>", content)
    assert stamp, content
    assert time.time() < int(stamp[1]) <= time.time() + 24 * 3600 + 1


async def expired_while_queued(
    fake: FakeDiscord, discord_bot: BotFactory, prompt: str
) -> tuple[App, ProviderGate, FakeInteraction]:
    """A /imagine whose job is held until its interaction token has expired."""
    app, _bot = await discord_bot()
    gate = ProviderGate.hold(app)
    it = await fake.slash(fake.alice, prompt=prompt)
    await fake.wait_until(lambda: it.callback_type == 5)
    fake.expire(it)  # 15 minutes in the queue
    return app, gate, it


async def test_over_the_limit_says_when_it_resets(
    discord_fake: FakeDiscord, discord_bot: BotFactory, openai_fake: FakeOpenAI
) -> None:
    await discord_bot(imagine_user_limit="1/day")
    await discord_fake.result_of(await discord_fake.slash(discord_fake.alice, prompt="first"))
    it = await discord_fake.slash(discord_fake.alice, prompt="second")
    reply = await discord_fake.private_reply(it)

    assert_private_and_plain(discord_fake, reply)
    assert "limit of 1 image per day" in str(reply["content"])
    assert_resets_within_a_day(str(reply["content"]))
    assert len(openai_fake.requests) == 1


async def test_over_the_budget_says_when_it_resets(
    discord_fake: FakeDiscord, discord_bot: BotFactory, openai_fake: FakeOpenAI
) -> None:
    # One high-quality image reserves about $0.21: one fits in $0.30 a day, two do not.
    await discord_bot(imagine_user_budget="0.30/day")
    await discord_fake.generate(discord_fake.alice, "a gold coin", quality="high")
    it = await discord_fake.slash(discord_fake.alice, prompt="a silver coin", quality="high")
    reply = await discord_fake.private_reply(it)

    assert_private_and_plain(discord_fake, reply)
    assert "budget of $0.30 per day" in str(reply["content"])
    assert_resets_within_a_day(str(reply["content"]))
    assert len(openai_fake.requests) == 1


async def test_a_request_over_the_whole_budget_is_not_told_to_wait(
    discord_fake: FakeDiscord, discord_bot: BotFactory, openai_fake: FakeOpenAI
) -> None:
    await discord_bot(imagine_user_budget="0.01/day")
    it = await discord_fake.slash(discord_fake.alice, prompt="a gold coin", quality="high")
    reply = await discord_fake.private_reply(it)

    assert_private_and_plain(discord_fake, reply)
    assert "budget of $0.01 per day" in str(reply["content"])
    assert "resets" not in str(reply["content"]) and "<t:" not in str(reply["content"])
    assert openai_fake.requests == []


async def test_more_images_than_the_setting_allows_is_refused(
    discord_fake: FakeDiscord, discord_bot: BotFactory, openai_fake: FakeOpenAI
) -> None:
    await discord_bot(imagine_max_images=2)
    it = await discord_fake.slash(discord_fake.alice, prompt="three cats", count=3)
    reply = await discord_fake.private_reply(it)
    assert_private_and_plain(discord_fake, reply)
    assert "You can ask for 1 to 2 images at once." in str(reply["content"])
    assert openai_fake.requests == []


async def test_a_blocked_prompt_names_the_category_and_refunds(
    discord_fake: FakeDiscord, discord_bot: BotFactory, openai_fake: FakeOpenAI
) -> None:
    app, _bot = await discord_bot()
    openai_fake.fail_next("moderation_blocked", categories=["violence"])
    it = await discord_fake.slash(discord_fake.alice, prompt="something nasty")
    reply = await discord_fake.private_reply(it)

    assert_private_and_plain(discord_fake, reply)
    assert "safety system" in str(reply["content"]) and "violence" in str(reply["content"])
    [usage] = await app.store.usage_summary(f"discord:{discord_fake.alice.id}")
    assert usage.images_today == 0 and usage.cost_today == 0


async def test_provider_outage_is_explained(
    discord_fake: FakeDiscord, discord_bot: BotFactory, openai_fake: FakeOpenAI
) -> None:
    await discord_bot(openai_max_retries=1)
    openai_fake.fail_next("server_error", times=2)
    it = await discord_fake.slash(discord_fake.alice, prompt="a calm lake")
    reply = await discord_fake.private_reply(it)
    assert_private_and_plain(discord_fake, reply)
    assert "unavailable right now" in str(reply["content"])


async def test_refused_attachments_are_named_with_the_reason(
    discord_fake: FakeDiscord, discord_bot: BotFactory, openai_fake: FakeOpenAI
) -> None:
    await discord_bot(imagine_max_attachment_mb=1)
    notes = discord_fake.upload(b"shopping list", "notes.txt", "text/plain")
    it = await discord_fake.slash(discord_fake.alice, prompt="edit", image=notes)
    reply = await discord_fake.private_reply(it)
    assert "Can't use notes.txt: it isn't an image (it's a plain file)" in str(reply["content"])

    elsewhere = {
        **discord_fake.upload(png(colour=(10, 10, 10)), "evil.png"),
        "url": "https://example.com/evil.png",
    }
    it = await discord_fake.slash(discord_fake.alice, prompt="edit", image=elsewhere)
    reply = await discord_fake.private_reply(it)
    assert "Can't use evil.png: it isn't stored on Discord, so I won't download it" in str(
        reply["content"]
    )

    huge = discord_fake.upload(b"\x89PNG" + bytes(2 * 1024 * 1024), "huge.png")
    it = await discord_fake.slash(discord_fake.alice, prompt="edit", image=huge)
    reply = await discord_fake.private_reply(it)
    assert "Can't use huge.png: it is 2.0 MB and the limit is 1 MB" in str(reply["content"])

    assert discord_fake.cdn_requests == []  # nothing was downloaded
    assert openai_fake.requests == []


async def test_a_result_over_ten_megabytes_is_delivered_under_the_limit(
    discord_fake: FakeDiscord, discord_bot: BotFactory, openai_fake: FakeOpenAI
) -> None:
    await discord_bot()
    openai_fake.noise = True  # incompressible: the PNG is well over 10 MiB
    it = await discord_fake.slash(discord_fake.alice, prompt="static", size="2048x2048")
    message = await discord_fake.result_of(it)

    [attachment] = message["attachments"]
    delivered = discord_fake.cdn_bytes(attachment)
    assert len(delivered) <= discord_fake.attachment_size_limit
    assert Image.open(io.BytesIO(delivered)).size[0] >= 1024
    uploads = [c for c in discord_fake.calls_to("PATCH", it.token) if c.files]
    assert all(c.status == 200 for c in uploads)  # never a 413 from Discord


async def test_a_result_fits_the_upload_limit_the_interaction_names(
    discord_fake: FakeDiscord, discord_bot: BotFactory, openai_fake: FakeOpenAI
) -> None:
    # A server without boosts on a small plan: the interaction says 2 MiB, not the default 10.
    discord_fake.attachment_size_limit = 2 * 1024 * 1024
    await discord_bot()
    openai_fake.noise = True  # about 3 MiB as PNG
    it = await discord_fake.slash(discord_fake.alice, prompt="static", size="1024x1024")
    message = await discord_fake.result_of(it)

    [attachment] = message["attachments"]
    delivered = discord_fake.cdn_bytes(attachment)
    assert len(delivered) <= discord_fake.attachment_size_limit
    Image.open(io.BytesIO(delivered)).verify()
    assert all(c.status == 200 for c in discord_fake.calls_to("PATCH", it.token) if c.files)


async def test_a_rate_limited_edit_is_retried(
    discord_fake: FakeDiscord, discord_bot: BotFactory
) -> None:
    await discord_bot()

    def final_edit(call: Call) -> bool:
        return call.method == "PATCH" and bool((call.json or {}).get("embeds"))

    discord_fake.rate_limit_next(final_edit, retry_after=0.05)
    it = await discord_fake.slash(discord_fake.alice, prompt="a teapot")
    message = await discord_fake.result_of(it)
    assert message["attachments"]
    assert [c.status for c in discord_fake.calls if final_edit(c)] == [429, 200]


async def test_a_result_that_outlives_the_interaction_token_is_posted_in_the_channel(
    discord_fake: FakeDiscord, discord_bot: BotFactory
) -> None:
    app, gate, _it = await expired_while_queued(discord_fake, discord_bot, "a very patient snail")

    def posted(with_result: bool) -> list[dict[str, object]]:
        mention = f"<@{discord_fake.alice.id}>"
        return [
            m
            for m in discord_fake.channel_messages()
            if str(m["content"]).startswith(mention) and bool(m["embeds"]) == with_result
        ]

    # The progress display moves to the channel while the job waits...
    [waiting] = await discord_fake.wait_until(lambda: posted(False))
    assert "a very patient snail" in str(waiting["content"])
    gate.release.set()
    # ...and the result replaces it there.
    [message] = await discord_fake.wait_until(lambda: posted(True))
    assert message["id"] == waiting["id"]
    assert str(message["content"]).startswith(f"<@{discord_fake.alice.id}>")
    assert message["attachments"] and message["components"]
    job = await app.store.job_for_message("discord", str(message["id"]))
    assert job is not None and job.prompt == "a very patient snail"


async def test_a_refusal_after_the_token_expired_is_said_in_the_channel(
    discord_fake: FakeDiscord, discord_bot: BotFactory, openai_fake: FakeOpenAI
) -> None:
    _app, gate, _it = await expired_while_queued(discord_fake, discord_bot, "a battle")
    openai_fake.fail_next("moderation_blocked", categories=["violence"])
    gate.release.set()

    [said] = await discord_fake.wait_until(
        lambda: [m for m in discord_fake.channel_messages() if "safety system" in m["content"]]
    )
    assert said["content"].startswith(f"<@{discord_fake.alice.id}>")
    assert "violence" in said["content"]


@pytest.mark.allow_error_logs
async def test_an_unexpected_failure_shows_a_job_id_and_is_logged(
    discord_fake: FakeDiscord,
    discord_bot: BotFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    await discord_bot()

    def final_edit(call: Call) -> bool:
        return call.method == "PATCH" and bool((call.json or {}).get("embeds"))

    discord_fake.reject_next(final_edit, 400, 50035, "Invalid Form Body")
    it = await discord_fake.slash(discord_fake.alice, prompt="a teapot")
    reply = await discord_fake.private_reply(it)

    match = re.search(r"job `([0-9a-z]+)`", str(reply["content"]))
    assert match, reply["content"]
    assert "Traceback" not in str(reply["content"]) and "50035" not in str(reply["content"])
    # The image was made and charged: the user is told so, not invited to pay again.
    assert "was made and saved" in str(reply["content"])
    assert "try again" not in str(reply["content"])
    logged = [
        r for r in caplog.records if r.name == "bot.presenting" and r.levelno == logging.ERROR
    ]
    assert logged and match[1] in logged[0].getMessage()
