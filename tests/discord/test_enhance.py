"""Prompt help on Discord: the enhance option, Enhance & retry, and Rephrase and retry."""

from __future__ import annotations

import re
from typing import Any

import pytest

from bot import texts
from tests.fakes.discord_payloads import LOADING
from tests.fakes.discord_server import (
    EPHEMERAL,
    BotFactory,
    FakeDiscord,
    FakeInteraction,
    edit_inputs,
    job_of,
    png,
)
from tests.fakes.openai_server import FakeOpenAI, chat_reply

HELP = {"imagine_prompt_model": "gpt-4.1-mini", "imagine_prompt_price": "0.40,1.60"}
ENHANCED_FROM = "✨ Enhanced from"
REPHRASE = re.compile(r"^imagine:rephrase:([0-9a-z]+)$")
SEND = re.compile(r"^imagine:send:([0-9a-z]+):([0-9a-z]+)$")
DROP = re.compile(r"^imagine:drop:([0-9a-z]+):([0-9a-z]+)$")


def buttons(message: dict[str, Any]) -> list[str]:
    """The custom_ids of a message's buttons, in order."""
    return [b["custom_id"] for row in message["components"] for b in row["components"]]


def labels(message: dict[str, Any]) -> list[str]:
    """The labels of a message's buttons, in order."""
    return [b["label"] for row in message["components"] for b in row["components"]]


def fields(message: dict[str, Any]) -> dict[str, str]:
    """The result embed's fields by name."""
    return {f["name"]: f["value"] for f in message["embeds"][0]["fields"]}


def served(openai_fake: FakeOpenAI) -> list[str]:
    """The prompts the image API received, in order."""
    return [str((r.json or r.form)["prompt"]) for r in openai_fake.requests]


def asked_to_rewrite(openai_fake: FakeOpenAI) -> list[str]:
    """The prompts prompt help was asked to rewrite, in order."""
    return [str((r.json or {})["messages"][-1]["content"]) for r in openai_fake.chat_requests]


async def settled_private(fake: FakeDiscord, it: FakeInteraction) -> dict[str, Any]:
    """Wait for the interaction's private message past "thinking"; the newest such."""
    found: list[dict[str, Any]] = await fake.wait_until(
        lambda: [m for m in fake.ephemeral_followups(it) if not m["flags"] & LOADING]
    )
    return found[-1]


def button_matching(message: dict[str, Any], pattern: re.Pattern[str]) -> re.Match[str]:
    """The match of the message's one button whose custom_id fits ``pattern``."""
    [found] = [m for custom_id in buttons(message) if (m := pattern.match(custom_id))]
    return found


async def blocked_refusal(fake: FakeDiscord, openai_fake: FakeOpenAI, prompt: str) -> Any:
    """/imagine ``prompt``, blocked by the safety system: the private refusal."""
    openai_fake.fail_next("moderation_blocked", categories=["violence"])
    it = await fake.slash(fake.alice, prompt=prompt)
    refusal = await settled_private(fake, it)
    assert "safety system" in refusal["content"]
    return refusal


async def rephrased(fake: FakeDiscord, refusal: dict[str, Any]) -> tuple[FakeInteraction, Any]:
    """Alice presses "Rephrase and retry": the click and the private suggestion it brings."""
    click = await fake.click(fake.alice, refusal["id"], button_matching(refusal, REPHRASE)[0])
    return click, await settled_private(fake, click)


# --- the enhance option ----------------------------------------------------------------------
async def test_the_enhance_option_rewrites_first_and_the_result_shows_the_rewrite_and_original(
    discord_fake: FakeDiscord, discord_bot: BotFactory, openai_fake: FakeOpenAI
) -> None:
    fake = discord_fake
    app, _bot = await discord_bot(**HELP)
    result = await fake.generate(fake.alice, "a fox in *snow*", enhance=True)

    assert asked_to_rewrite(openai_fake) == ["a fox in *snow*"]
    assert served(openai_fake) == [chat_reply("a fox in *snow*")]
    [embed] = result["embeds"]
    # Markdown in the user's words stays literal, in the rewrite and in the original.
    assert embed["description"] == chat_reply("a fox in \\*snow\\*")
    assert fields(result)[ENHANCED_FROM] == "a fox in \\*snow\\*"
    job_id = job_of(result)
    job = await app.store.get_job(job_id)
    assert job is not None and job.prompt == chat_reply("a fox in *snow*")
    assert buttons(result) == [
        f"imagine:regen:{job_id}",
        f"imagine:vary:{job_id}",
        f"imagine:edit:{job_id}",
        f"imagine:enhance:{job_id}",
        f"imagine:delete:{job_id}",
    ]
    assert labels(result)[3] == "Enhance & retry"


async def test_the_enhance_option_with_an_attached_image_rewrites_the_edit_prompt(
    discord_fake: FakeDiscord, discord_bot: BotFactory, openai_fake: FakeOpenAI
) -> None:
    fake = discord_fake
    await discord_bot(**HELP)
    picture = fake.upload(png(), "cat.png")
    result = await fake.generate(fake.alice, "give it a hat", image=picture, enhance=True)

    [sent] = openai_fake.requests
    assert edit_inputs(sent) == [fake.cdn_bytes(picture)]
    assert sent.form["prompt"] == chat_reply("give it a hat")
    assert result["embeds"][0]["title"] == "Edited image"
    assert fields(result)[ENHANCED_FROM] == "give it a hat"


async def test_a_long_enhanced_prompt_fits_discords_embed_limits(
    discord_fake: FakeDiscord, discord_bot: BotFactory, openai_fake: FakeOpenAI
) -> None:
    fake = discord_fake
    await discord_bot(**HELP)
    # Escaping each "*" doubles it: the escaped text is far over the limits.
    prompt = ("a *starry* night over the _harbour_ " * 120)[:3990].strip()
    result = await fake.generate(fake.alice, prompt, enhance=True)

    assert served(openai_fake) == [chat_reply(prompt)]  # the whole rewrite was used
    [embed] = result["embeds"]
    original = fields(result)[ENHANCED_FROM]
    assert 3000 < len(embed["description"]) <= 4096
    assert embed["description"].startswith("A detailed illustration of a \\*starry\\* night")
    assert 500 < len(original) <= 1024 and original.startswith("a \\*starry\\* night")
    assert embed["description"].endswith("…") and original.endswith("…")
    # The fake refuses (and fails the test on) an embed over 6000 characters in all.


async def test_without_prompt_help_enhance_is_refused_privately_and_nothing_offers_it(
    discord_fake: FakeDiscord, discord_bot: BotFactory, openai_fake: FakeOpenAI
) -> None:
    fake = discord_fake
    await discord_bot()
    it = await fake.slash(fake.alice, prompt="a fox", enhance=True)
    answer = await settled_private(fake, it)

    assert it.callback_type == 4 and answer["flags"] & EPHEMERAL
    assert answer["content"] == f"⚠️ {texts.NO_PROMPT_HELP}"
    assert "Prompt help is off" in answer["content"]
    assert openai_fake.requests == [] and openai_fake.chat_requests == []

    result = await fake.generate(fake.alice, "a plain fox")
    assert not [b for b in buttons(result) if b.startswith("imagine:enhance:")]
    assert ENHANCED_FROM not in fields(result)
    refusal = await blocked_refusal(fake, openai_fake, "a fox in a fight")
    assert refusal["components"] == []  # no Rephrase and retry without prompt help
    assert openai_fake.chat_requests == []


# --- Enhance & retry ---------------------------------------------------------------------------
async def test_enhance_and_retry_rewrites_a_results_prompt_and_makes_it_even_after_a_restart(
    discord_fake: FakeDiscord, discord_bot: BotFactory, openai_fake: FakeOpenAI
) -> None:
    fake = discord_fake
    app, bot = await discord_bot(**HELP)
    first = await fake.generate(fake.alice, "a quiet harbour", quality="low")
    assert openai_fake.chat_requests == []

    await bot.close()
    await app.aclose()
    app, _bot = await discord_bot(**HELP)  # a new process: the button still works
    click = await fake.click(fake.bob, first["id"], f"imagine:enhance:{job_of(first)}")
    retried = await fake.result_of(click)

    assert click.callback_type == 5  # "thinking", in public, like Regenerate
    assert not retried["flags"] & EPHEMERAL
    assert asked_to_rewrite(openai_fake) == ["a quiet harbour"]
    assert served(openai_fake) == ["a quiet harbour", chat_reply("a quiet harbour")]
    assert (openai_fake.requests[-1].json or {})["quality"] == "low"  # the job's options, again
    assert retried["embeds"][0]["description"] == chat_reply("a quiet harbour")
    assert fields(retried)[ENHANCED_FROM] == "a quiet harbour"
    assert fields(retried)["Requested by"] == f"<@{fake.bob.id}>"
    assert job_of(retried) != job_of(first)


# --- Rephrase and retry after a safety block ---------------------------------------------------
async def test_a_safety_block_offers_rephrase_which_shows_a_rewrite_and_send_it_makes_it(
    discord_fake: FakeDiscord, discord_bot: BotFactory, openai_fake: FakeOpenAI
) -> None:
    fake = discord_fake
    app, _bot = await discord_bot(**HELP)
    prompt = "a knight fighting a dragon"
    refusal = await blocked_refusal(fake, openai_fake, prompt)
    assert refusal["flags"] & EPHEMERAL
    assert labels(refusal) == ["Rephrase and retry"]
    blocked_id = button_matching(refusal, REPHRASE)[1]

    click, suggestion = await rephrased(fake, refusal)

    assert click.callback_type == 5 and suggestion["flags"] & EPHEMERAL  # thinking, privately
    assert suggestion["embeds"][0]["description"] == chat_reply(prompt)
    assert "Nothing is sent until you press **Send it**" in suggestion["content"]
    assert labels(suggestion) == ["Send it", "Never mind"]
    assert asked_to_rewrite(openai_fake) == [prompt]
    assert served(openai_fake) == [prompt]  # no new image request before Send it
    send = button_matching(suggestion, SEND)
    assert send[1] == blocked_id and len(send[0]) <= 100
    record = await app.store.get_job(send[2])
    assert record is not None and record.parent_job_id == blocked_id
    assert record.prompt == chat_reply(prompt)

    sent = await fake.click(fake.alice, suggestion["id"], send[0])
    result = await fake.result_of(sent)

    assert sent.callback_type == 5 and not result["flags"] & EPHEMERAL  # a new public job
    assert result["channel_id"] == fake.channel_id
    assert served(openai_fake) == [prompt, chat_reply(prompt)]
    assert result["embeds"][0]["description"] == chat_reply(prompt)
    assert fields(result)["Requested by"] == f"<@{fake.alice.id}>"

    # The private message still shows Send it: a second press makes nothing more.
    again = await fake.click(fake.alice, suggestion["id"], send[0])
    answer = await settled_private(fake, again)
    assert again.callback_type == 4 and "already sent" in answer["content"]
    assert served(openai_fake) == [prompt, chat_reply(prompt)]
    assert len(openai_fake.chat_requests) == 1


async def test_never_mind_sends_nothing_and_says_so(
    discord_fake: FakeDiscord, discord_bot: BotFactory, openai_fake: FakeOpenAI
) -> None:
    fake = discord_fake
    await discord_bot(**HELP)
    refusal = await blocked_refusal(fake, openai_fake, "a storm at sea")
    _click, suggestion = await rephrased(fake, refusal)

    dropped = await fake.click(fake.alice, suggestion["id"], button_matching(suggestion, DROP)[0])
    await fake.wait_until(lambda: dropped.callback_type is not None)

    assert dropped.callback_type == 7  # the private message itself changes
    shown = fake.messages[suggestion["id"]]
    assert shown["content"].startswith("Nothing was sent")
    assert shown["components"] == [] and shown["embeds"] == []
    assert served(openai_fake) == ["a storm at sea"]
    assert not [m for m in fake.channel_messages() if m["embeds"]]


async def test_someone_elses_rephrase_is_refused_privately_and_the_owners_edit_is_retried(
    discord_fake: FakeDiscord, discord_bot: BotFactory, openai_fake: FakeOpenAI
) -> None:
    fake = discord_fake
    app, _bot = await discord_bot(**HELP)
    first = await fake.generate(fake.alice, "a red boat")
    openai_fake.fail_next("moderation_blocked", categories=["violence"])
    asked = await fake.send_message(fake.alice, "make it explode", reply_to=first["id"])
    # A reply's refusal is said where the reply was: in public, so others can press it.
    [refusal] = await fake.wait_until(
        lambda: [m for m in fake.replies_to(asked["id"]) if "safety system" in m["content"]]
    )
    rephrase = button_matching(refusal, REPHRASE)[0]

    theirs = await fake.click(fake.bob, refusal["id"], rephrase)
    answer = await settled_private(fake, theirs)
    assert answer["flags"] & EPHEMERAL
    assert answer["content"] == f"⚠️ {texts.ONLY_OWNER_REPHRASES}"
    assert openai_fake.chat_requests == []

    mine = await fake.click(fake.alice, refusal["id"], rephrase)
    suggestion = await settled_private(fake, mine)
    assert suggestion["embeds"][0]["description"] == chat_reply("make it explode")
    sent = await fake.click(fake.alice, suggestion["id"], button_matching(suggestion, SEND)[0])
    result = await fake.result_of(sent)

    retried = openai_fake.requests[-1]
    assert retried.form["prompt"] == chat_reply("make it explode")
    assert edit_inputs(retried) == [fake.cdn_bytes(first["attachments"][0])]
    assert result["embeds"][0]["title"] == "Edited image"
    assert len(openai_fake.requests) == 3  # the first image, the blocked edit, the retry
    job = await app.store.get_job(job_of(result))
    assert job is not None and job.prompt == chat_reply("make it explode")


async def test_a_suggestion_cannot_be_sent_by_someone_else(
    discord_fake: FakeDiscord, discord_bot: BotFactory, openai_fake: FakeOpenAI
) -> None:
    fake = discord_fake
    await discord_bot(**HELP)
    refusal = await blocked_refusal(fake, openai_fake, "a duel at dawn")
    _click, suggestion = await rephrased(fake, refusal)
    # Only Alice sees her private message: Bob can't press its buttons at all.
    send = button_matching(suggestion, SEND)[0]
    with pytest.raises(AssertionError, match="can't see that ephemeral message"):
        await fake.click(fake.bob, suggestion["id"], send)
    assert served(openai_fake) == ["a duel at dawn"]
