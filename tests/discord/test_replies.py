"""Reply to edit: replies to results (and mentions on other images) start edits, in chains."""

from __future__ import annotations

from typing import Any

from tests.fakes.discord_server import BotFactory, FakeDiscord, FakeUser, edit_inputs, png
from tests.fakes.openai_server import FakeOpenAI


async def reply_to_a_result(
    fake: FakeDiscord, user: FakeUser, text: str, *, ping: bool = True
) -> dict[str, Any]:
    """Alice makes an image, then ``user`` replies to it with ``text``; returns the reply."""
    result = await fake.generate(fake.alice, "a red boat")
    return await fake.send_message(user, text, reply_to=result["id"], ping=ping)


async def test_a_chain_of_three_reply_edits(
    discord_fake: FakeDiscord, discord_bot: BotFactory, openai_fake: FakeOpenAI
) -> None:
    app, _bot = await discord_bot()
    result = await discord_fake.generate(discord_fake.alice, "a house on a hill")

    jobs = [(await app.store.job_for_message("discord", result["id"]))]
    for step, prompt in enumerate(["make it night", "add snow", "add a fox"], start=1):
        previous = result
        asked = await discord_fake.send_message(discord_fake.alice, prompt, reply_to=previous["id"])
        result = await discord_fake.reply_result(asked)

        sent = openai_fake.requests[step]
        assert sent.form["prompt"] == prompt
        # The edit starts from exactly the image the user replied to.
        assert edit_inputs(sent) == [discord_fake.cdn_bytes(previous["attachments"][0])]
        assert result["embeds"][0]["title"] == "Edited image"
        assert result["type"] == 19  # a reply to the user's message
        job = await app.store.job_for_message("discord", result["id"])
        assert job is not None and job.parent_job_id == jobs[-1].id  # type: ignore[union-attr]
        jobs.append(job)
    assert len(openai_fake.requests) == 4


async def test_reply_attachments_are_extra_inputs_and_mask(
    discord_fake: FakeDiscord, discord_bot: BotFactory, openai_fake: FakeOpenAI
) -> None:
    await discord_bot()
    result = await discord_fake.generate(discord_fake.alice, "an empty table", size="1024x1024")
    extra = discord_fake.upload(png(), "vase.png")
    mask = discord_fake.upload(png((1024, 1024), (0, 0, 0, 0)), "mask-table.png")
    asked = await discord_fake.send_message(
        discord_fake.alice,
        "put the vase on the table",
        attachments=(extra, mask),
        reply_to=result["id"],
    )
    await discord_fake.reply_result(asked)
    sent = openai_fake.requests[-1]
    assert [f.field for f in sent.files].count("image[]") == 2
    assert [f.field for f in sent.files].count("mask") == 1


async def test_without_the_content_intent_only_replies_that_ping_the_bot_work(
    discord_fake: FakeDiscord, discord_bot: BotFactory, openai_fake: FakeOpenAI
) -> None:
    _app, bot = await discord_bot()
    assert not bot.intents.message_content
    result = await discord_fake.generate(discord_fake.alice, "a red boat")

    # Discord strips the text of a reply that does not ping the bot: nothing can be done.
    silent = await discord_fake.send_message(
        discord_fake.alice, "make it blue", reply_to=result["id"], ping=False
    )
    pinged = await discord_fake.send_message(
        discord_fake.alice, "make it green", reply_to=result["id"]
    )
    await discord_fake.reply_result(pinged)
    assert [r.form["prompt"] for r in openai_fake.requests[1:]] == ["make it green"]
    assert discord_fake.replies_to(silent["id"]) == []


async def test_with_the_content_intent_any_reply_works(
    discord_fake: FakeDiscord, discord_bot: BotFactory, openai_fake: FakeOpenAI
) -> None:
    _app, _bot = await discord_bot(discord_message_content_intent=True)
    assert discord_fake.identify is not None
    assert discord_fake.identify["intents"] & (1 << 15)
    asked = await reply_to_a_result(discord_fake, discord_fake.bob, "make it blue", ping=False)
    await discord_fake.reply_result(asked)
    assert openai_fake.requests[-1].form["prompt"] == "make it blue"


async def test_mentioning_the_bot_on_someone_elses_image_edits_it(
    discord_fake: FakeDiscord, discord_bot: BotFactory, openai_fake: FakeOpenAI
) -> None:
    # Discord only shows a bot other people's attachments with the Message Content intent.
    await discord_bot(discord_message_content_intent=True)
    photo = discord_fake.upload(png((80, 60), (90, 90, 200)), "holiday.png")
    theirs = await discord_fake.send_message(discord_fake.bob, "look!", attachments=(photo,))
    asked = await discord_fake.send_message(
        discord_fake.alice,
        f"<@{discord_fake.bot.id}> turn this into a painting",
        reply_to=theirs["id"],
    )
    result = await discord_fake.reply_result(asked)
    sent = openai_fake.requests[-1]
    assert edit_inputs(sent) == [discord_fake.cdn_bytes(photo)]
    assert sent.form["prompt"] == "turn this into a painting"
    assert result["embeds"][0]["title"] == "Edited image"


async def test_a_reply_without_words_gets_a_hint(
    discord_fake: FakeDiscord, discord_bot: BotFactory, openai_fake: FakeOpenAI
) -> None:
    await discord_bot()
    asked = await reply_to_a_result(discord_fake, discord_fake.alice, f"<@{discord_fake.bot.id}>")
    hint = await discord_fake.wait_until(lambda: discord_fake.replies_to(asked["id"]))
    assert "Tell me what to change" in hint[0]["content"]
    assert len(openai_fake.requests) == 1


async def test_a_refused_reply_edit_is_explained_in_the_reply(
    discord_fake: FakeDiscord, discord_bot: BotFactory, openai_fake: FakeOpenAI
) -> None:
    await discord_bot()
    result = await discord_fake.generate(discord_fake.alice, "a red boat")
    openai_fake.fail_next("moderation_blocked", categories=["violence"])
    asked = await discord_fake.send_message(
        discord_fake.alice, "add a battle", reply_to=result["id"]
    )

    def explained() -> list[dict[str, Any]]:
        return [m for m in discord_fake.replies_to(asked["id"]) if "safety system" in m["content"]]

    [reply] = await discord_fake.wait_until(explained)
    assert "violence" in reply["content"]
    assert not reply["embeds"] and not reply["attachments"] and not reply["components"]


async def test_without_the_intent_a_mention_on_someone_elses_image_points_to_the_menu(
    discord_fake: FakeDiscord, discord_bot: BotFactory, openai_fake: FakeOpenAI
) -> None:
    await discord_bot()
    photo = discord_fake.upload(png(), "holiday.png")
    theirs = await discord_fake.send_message(discord_fake.bob, "look!", attachments=(photo,))
    asked = await discord_fake.send_message(
        discord_fake.alice,
        f"<@{discord_fake.bot.id}> turn this into a painting",
        reply_to=theirs["id"],
        ping=False,
    )

    [hint] = await discord_fake.wait_until(lambda: discord_fake.replies_to(asked["id"]))
    assert "Edit image" in hint["content"]
    assert openai_fake.requests == []


async def test_a_message_delivered_twice_is_edited_once(
    discord_fake: FakeDiscord, discord_bot: BotFactory, openai_fake: FakeOpenAI
) -> None:
    await discord_bot()
    asked = await reply_to_a_result(discord_fake, discord_fake.alice, "make it blue")
    # A gateway resume can replay events the bot already handled.
    await discord_fake.dispatch("MESSAGE_CREATE", discord_fake.as_bot_sees(asked))
    await discord_fake.reply_result(asked)
    result_id = asked["message_reference"]["message_id"]
    later = await discord_fake.send_message(discord_fake.alice, "make it green", reply_to=result_id)
    await discord_fake.reply_result(later)
    assert [r.form["prompt"] for r in openai_fake.requests[1:]] == ["make it blue", "make it green"]
