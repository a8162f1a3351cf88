"""Result buttons (after a restart too), the Edit modal and the "Edit image" message menu."""

from __future__ import annotations

import io
import shutil

from PIL import Image

from tests.fakes.discord_server import (
    EPHEMERAL,
    BotFactory,
    Call,
    FakeDiscord,
    edit_inputs,
    job_of,
    png,
)
from tests.fakes.openai_server import FakeOpenAI


def only_alice(fake: FakeDiscord) -> str:
    """The refusal of a delete by someone who neither asked nor moderates."""
    return f"⚠️ Only <@{fake.alice.id}> or someone who can manage messages can delete this image."


async def test_regenerate_works_after_a_restart(
    discord_fake: FakeDiscord, discord_bot: BotFactory, openai_fake: FakeOpenAI
) -> None:
    app, bot = await discord_bot()
    it = await discord_fake.slash(discord_fake.alice, prompt="a glass whale", quality="low")
    first = await discord_fake.result_of(it)
    job_id = job_of(first)

    await bot.close()
    await app.aclose()
    app, bot = await discord_bot()  # a new process: same data directory, nothing in memory

    click = await discord_fake.click(discord_fake.bob, first["id"], f"imagine:regen:{job_id}")
    again = await discord_fake.result_of(click)
    assert click.callback_type == 5
    assert again["id"] != first["id"]
    assert [r.json["prompt"] for r in openai_fake.requests] == ["a glass whale"] * 2
    assert openai_fake.requests[1].json["quality"] == "low"
    new_job = await app.store.job_for_message("discord", again["id"])
    assert new_job is not None and new_job.requester.user_id == discord_fake.bob.id


async def test_regenerate_counts_against_whoever_clicks(
    discord_fake: FakeDiscord, discord_bot: BotFactory, openai_fake: FakeOpenAI
) -> None:
    await discord_bot(imagine_user_limit="1/day")
    first = await discord_fake.generate(discord_fake.alice, "a paper crane")
    regen = f"imagine:regen:{job_of(first)}"

    by_bob = await discord_fake.click(discord_fake.bob, first["id"], regen)
    await discord_fake.result_of(by_bob)
    by_alice = await discord_fake.click(discord_fake.alice, first["id"], regen)
    refusal = await discord_fake.private_reply(by_alice)
    assert "limit of 1 image per day" in refusal["content"]
    assert len(openai_fake.requests) == 2


async def test_edit_button_asks_in_a_modal_then_edits_the_result(
    discord_fake: FakeDiscord, discord_bot: BotFactory, openai_fake: FakeOpenAI
) -> None:
    await discord_bot()
    first = await discord_fake.generate(discord_fake.alice, "a quiet harbour")
    click = await discord_fake.click(
        discord_fake.alice, first["id"], f"imagine:edit:{job_of(first)}"
    )
    edited = await discord_fake.fill_in_prompt(discord_fake.alice, click, "add fireworks")

    assert click.callback_type == 9  # a modal
    sent = openai_fake.requests[-1]
    assert sent.form["prompt"] == "add fireworks"
    assert edit_inputs(sent) == [discord_fake.cdn_bytes(first["attachments"][0])]
    assert edited["embeds"][0]["description"] == "add fireworks"


async def test_delete_is_for_the_requester_or_a_moderator(
    discord_fake: FakeDiscord, discord_bot: BotFactory
) -> None:
    await discord_bot()
    mine = await discord_fake.generate(discord_fake.alice, "one")
    other = await discord_fake.generate(discord_fake.alice, "two")

    refused = await discord_fake.click(
        discord_fake.bob, mine["id"], f"imagine:delete:{job_of(mine)}"
    )
    answer = await discord_fake.private_reply(refused)
    assert answer["content"] == only_alice(discord_fake)
    assert mine["id"] in discord_fake.messages

    await discord_fake.click(discord_fake.alice, mine["id"], f"imagine:delete:{job_of(mine)}")
    await discord_fake.click(discord_fake.mod, other["id"], f"imagine:delete:{job_of(other)}")
    await discord_fake.wait_until(
        lambda: mine["id"] not in discord_fake.messages and other["id"] not in discord_fake.messages
    )


async def test_edit_image_menu_edits_any_message_with_an_image(
    discord_fake: FakeDiscord, discord_bot: BotFactory, openai_fake: FakeOpenAI
) -> None:
    await discord_bot()
    photo = discord_fake.upload(png((96, 64), (120, 30, 200)), "cat.png")
    posted = await discord_fake.send_message(discord_fake.bob, "my cat", attachments=(photo,))
    menu = await discord_fake.context_menu(discord_fake.alice, "Edit image", posted["id"])
    result = await discord_fake.fill_in_prompt(discord_fake.alice, menu, "give the cat a hat")

    assert menu.callback_type == 9  # a modal
    assert menu.callback_data is not None and menu.callback_data["title"] == "Edit image"
    sent = openai_fake.requests[-1]
    assert sent.form["prompt"] == "give the cat a hat"
    [image] = edit_inputs(sent)
    assert Image.open(io.BytesIO(image)).size == (96, 64)
    assert result["embeds"][0]["title"] == "Edited image"


async def test_edit_image_menu_on_a_message_without_an_image(
    discord_fake: FakeDiscord, discord_bot: BotFactory, openai_fake: FakeOpenAI
) -> None:
    await discord_bot()
    posted = await discord_fake.send_message(discord_fake.bob, "just words")
    menu = await discord_fake.context_menu(discord_fake.alice, "Edit image", posted["id"])
    answer = await discord_fake.private_reply(menu)
    assert answer["flags"] & EPHEMERAL
    assert "no image" in answer["content"]
    assert openai_fake.requests == []


async def test_buttons_on_a_result_the_store_no_longer_has(
    discord_fake: FakeDiscord, discord_bot: BotFactory, openai_fake: FakeOpenAI
) -> None:
    app, bot = await discord_bot()
    first = await discord_fake.generate(discord_fake.alice, "a lost kite")
    job_id = job_of(first)

    await bot.close()
    await app.aclose()
    shutil.rmtree(app.settings.imagine_data_dir)  # the operator started over with no data
    await discord_bot()

    for action in ("regen", "vary", "edit"):
        click = await discord_fake.click(
            discord_fake.alice, first["id"], f"imagine:{action}:{job_id}"
        )
        answer = await discord_fake.private_reply(click)
        # Answered at once and privately: no public "thinking", no modal asking for a prompt.
        assert click.callback_type == 4
        assert answer["flags"] & EPHEMERAL
        assert "can't find that image any more" in answer["content"]
        assert "Traceback" not in answer["content"]
    assert len(openai_fake.requests) == 1
    assert discord_fake.messages[first["id"]]["attachments"]  # the old result is left alone

    # Delete still knows who asked: the result's embed names them.
    delete = f"imagine:delete:{job_id}"
    refused = await discord_fake.click(discord_fake.bob, first["id"], delete)
    assert (await discord_fake.private_reply(refused))["content"] == only_alice(discord_fake)
    await discord_fake.click(discord_fake.alice, first["id"], delete)
    await discord_fake.wait_until(lambda: first["id"] not in discord_fake.messages)


async def test_an_edit_modal_opened_before_a_restart_still_works(
    discord_fake: FakeDiscord, discord_bot: BotFactory, openai_fake: FakeOpenAI
) -> None:
    app, bot = await discord_bot()
    first = await discord_fake.generate(discord_fake.alice, "a snowy owl")
    click = await discord_fake.click(
        discord_fake.alice, first["id"], f"imagine:edit:{job_of(first)}"
    )
    await discord_fake.wait_until(lambda: click.callback_type == 9)

    await bot.close()
    await app.aclose()
    await discord_bot()  # the user was still typing while the bot restarted
    edited = await discord_fake.fill_in_prompt(discord_fake.alice, click, "give it glasses")

    assert edit_inputs(openai_fake.requests[-1]) == [
        discord_fake.cdn_bytes(first["attachments"][0])
    ]
    assert edited["embeds"][0]["description"] == "give it glasses"


async def test_edit_image_menu_on_a_result_edits_that_result(
    discord_fake: FakeDiscord, discord_bot: BotFactory, openai_fake: FakeOpenAI
) -> None:
    app, _bot = await discord_bot()
    first = await discord_fake.generate(discord_fake.alice, "a tin robot")
    menu = await discord_fake.context_menu(discord_fake.bob, "Edit image", first["id"])
    edited = await discord_fake.fill_in_prompt(discord_fake.bob, menu, "paint it red")

    assert edit_inputs(openai_fake.requests[-1]) == [
        discord_fake.cdn_bytes(first["attachments"][0])
    ]
    job = await app.store.job_for_message("discord", edited["id"])
    assert job is not None and job.parent_job_id == job_of(first)
    assert job.requester.user_id == discord_fake.bob.id


async def test_delete_of_a_result_someone_just_deleted_is_quiet(
    discord_fake: FakeDiscord, discord_bot: BotFactory
) -> None:
    await discord_bot()
    mine = await discord_fake.generate(discord_fake.alice, "one")

    def deleting(call: Call) -> bool:
        return call.method == "DELETE" and call.path.endswith(f"/messages/{mine['id']}")

    # A moderator's delete reached Discord first: the bot's own delete finds nothing.
    discord_fake.reject_next(deleting, 404, 10008, "Unknown Message")
    it = await discord_fake.click(discord_fake.alice, mine["id"], f"imagine:delete:{job_of(mine)}")
    await discord_fake.wait_until(lambda: [c for c in discord_fake.calls if deleting(c)])
    assert it.callback_type == 6
    # Nothing to tell: what was asked has happened.
    second = await discord_fake.generate(discord_fake.alice, "two")
    assert second["embeds"] and not discord_fake.ephemeral_followups(it)
