"""The Vary button under a result and the Cancel button on a job still waiting or being made."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from typing import Any

import aiohttp

from bot import texts
from bot.app import App
from bot.models import JobRecord
from tests.fakes.discord_server import (
    EPHEMERAL,
    BotFactory,
    Call,
    FakeDiscord,
    FakeInteraction,
    FakeUser,
    ProviderGate,
    edit_inputs,
    job_of,
)
from tests.fakes.openai_server import FakeOpenAI

CANCEL = re.compile(r"^imagine:cancel:([0-9a-z]+)$")


async def until(condition: Callable[[], object]) -> None:
    """Wait for state the fakes don't announce (the core's queue) by looking again, up to 10 s."""
    for _ in range(1000):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the bot never got there")


def buttons(message: dict[str, Any]) -> list[str]:
    """The custom_ids of a message's buttons, in order."""
    return [b["custom_id"] for row in message["components"] for b in row["components"]]


def served(openai_fake: FakeOpenAI) -> list[str]:
    """The prompts the image API received, in order."""
    return [str((r.json or r.form)["prompt"]) for r in openai_fake.requests]


async def cancellable(fake: FakeDiscord, it: FakeInteraction) -> tuple[dict[str, Any], str]:
    """Wait until the interaction's job message offers Cancel; the message and the job id."""

    def found() -> tuple[dict[str, Any], str] | None:
        message = fake.messages.get(it.original_id or "")
        for custom_id in buttons(message) if message is not None else ():
            if match := CANCEL.match(custom_id):
                return message, match[1]
        return None

    shown: tuple[dict[str, Any], str] = await fake.wait_until(found)
    return shown


async def ended_by(fake: FakeDiscord, message_id: str, user: FakeUser) -> dict[str, Any]:
    """Wait until a job's message says ``user`` cancelled it."""
    words = f"Cancelled by <@{user.id}> — nothing was charged"
    found: dict[str, Any] = await fake.wait_until(
        lambda: (m := fake.messages.get(message_id)) is not None and words in m["content"] and m
    )
    return found


async def job(app: App, job_id: str) -> JobRecord:
    """The job's row as the store has it now."""
    record = await app.store.get_job(job_id)
    assert record is not None
    return record


def assert_cancelled_in_place(message: dict[str, Any], prompt: str) -> None:
    """Shown on the job's own message, for everyone, with no button left to press."""
    assert message["content"].startswith(f"> {prompt}\n")
    assert not message["flags"] & EPHEMERAL
    assert message["components"] == [] and not message["embeds"]


# --- Vary ------------------------------------------------------------------------------------
async def test_vary_edits_the_results_image_with_its_prompt_and_is_its_child(
    discord_fake: FakeDiscord, discord_bot: BotFactory, openai_fake: FakeOpenAI
) -> None:
    fake = discord_fake
    app, _bot = await discord_bot()
    first = await fake.generate(fake.alice, "a glass whale", quality="low")
    assert f"imagine:vary:{job_of(first)}" in buttons(first)

    click = await fake.click(fake.bob, first["id"], f"imagine:vary:{job_of(first)}")
    varied = await fake.result_of(click)

    assert click.callback_type == 5  # "thinking", in public, like Regenerate
    sent = openai_fake.requests[-1]
    assert [f.field for f in sent.files if f.field == "mask"] == []
    assert edit_inputs(sent) == [fake.cdn_bytes(first["attachments"][0])]
    assert texts.VARIATION in sent.form["prompt"] and "a glass whale" in sent.form["prompt"]
    assert sent.form["quality"] == "low"
    child = await job(app, job_of(varied))
    assert child.parent_job_id == job_of(first)
    assert child.requester.user_id == fake.bob.id
    linked = await app.store.job_for_message("discord", varied["id"])
    assert linked is not None and linked.id == child.id
    assert f"imagine:vary:{child.id}" in buttons(varied)  # a variation can be varied again


async def test_vary_works_after_a_restart(
    discord_fake: FakeDiscord, discord_bot: BotFactory, openai_fake: FakeOpenAI
) -> None:
    fake = discord_fake
    app, bot = await discord_bot()
    first = await fake.generate(fake.alice, "a paper lantern")

    await bot.close()
    await app.aclose()
    app, _bot = await discord_bot()  # a new process: same data directory, nothing in memory

    click = await fake.click(fake.alice, first["id"], f"imagine:vary:{job_of(first)}")
    varied = await fake.result_of(click)
    assert edit_inputs(openai_fake.requests[-1]) == [fake.cdn_bytes(first["attachments"][0])]
    assert (await job(app, job_of(varied))).parent_job_id == job_of(first)


async def test_vary_on_a_result_whose_image_was_pruned_is_refused_at_once_privately(
    discord_fake: FakeDiscord, discord_bot: BotFactory, openai_fake: FakeOpenAI
) -> None:
    fake = discord_fake
    app, _bot = await discord_bot()
    first = await fake.generate(fake.alice, "a lost kite")
    # The operator pruned old image files by hand: the job is known, its image is not.
    for image in await app.store.job_images(job_of(first)):
        image.path.unlink()

    click = await fake.click(fake.alice, first["id"], f"imagine:vary:{job_of(first)}")
    answer = await fake.private_reply(click)
    assert click.callback_type == 4  # no public "thinking" for a request that can't start
    assert answer["flags"] & EPHEMERAL
    assert "can't find that image any more" in answer["content"]
    assert len(openai_fake.requests) == 1


# --- Cancel ----------------------------------------------------------------------------------
async def test_cancel_while_queued_refunds_it_and_the_next_in_line_runs(
    discord_fake: FakeDiscord, discord_bot: BotFactory, openai_fake: FakeOpenAI
) -> None:
    fake = discord_fake
    app, _bot = await discord_bot(imagine_max_concurrency=1)
    gate = ProviderGate.hold(app)
    running = await fake.slash(fake.bob, prompt="the running one")
    _message, running_id = await cancellable(fake, running)
    for _ in range(1000):
        if (await job(app, running_id)).status == "running":
            break
        await asyncio.sleep(0.01)
    waiting = await fake.slash(fake.alice, prompt="the waiting one")
    await until(lambda: app.service.queue_length == 1)
    behind = await fake.slash(fake.mod, prompt="the one behind")
    await until(lambda: app.service.queue_length == 2)

    message, job_id = await cancellable(fake, waiting)
    assert (await job(app, job_id)).status == "queued"
    click = await fake.click(fake.alice, message["id"], f"imagine:cancel:{job_id}")
    ended = await ended_by(fake, message["id"], fake.alice)

    assert click.callback_type == 6 and not fake.ephemeral_followups(click)
    assert_cancelled_in_place(ended, "the waiting one")
    assert not fake.ephemeral_followups(waiting)
    row = await job(app, job_id)
    assert row.status == "failed" and row.cancelled_by == f"discord:{fake.alice.id}"
    assert row.charged_images == 0
    await until(lambda: app.service.queue_length == 1)  # its place is gone from the line

    gate.release.set()
    await fake.result_of(running)
    await fake.result_of(behind)
    assert served(openai_fake) == ["the running one", "the one behind"]
    assert (await job(app, job_id)).status == "failed"


async def test_cancel_while_the_image_is_being_made(
    discord_fake: FakeDiscord, discord_bot: BotFactory, openai_fake: FakeOpenAI
) -> None:
    fake = discord_fake
    app, _bot = await discord_bot()
    openai_fake.answer_gate = asyncio.Event()  # OpenAI has the request and takes its time
    it = await fake.slash(fake.alice, prompt="a slow sunrise")
    await openai_fake.wait_for()
    message, job_id = await cancellable(fake, it)
    assert (await job(app, job_id)).status == "running"

    click = await fake.click(fake.alice, message["id"], f"imagine:cancel:{job_id}")
    ended = await ended_by(fake, message["id"], fake.alice)

    assert click.callback_type == 6
    assert_cancelled_in_place(ended, "a slow sunrise")
    row = await job(app, job_id)
    assert row.status == "failed" and row.cancelled_by == f"discord:{fake.alice.id}"
    assert row.charged_images == 0

    # The bot goes on: the next request is made and shown.
    openai_fake.answer_gate.set()
    after = await fake.generate(fake.alice, "a quick sunset")
    assert after["embeds"][0]["description"] == "a quick sunset"
    assert (await job(app, job_id)).status == "failed"
    assert not fake.messages[message["id"]]["embeds"]


async def test_someone_elses_cancel_is_refused_privately_and_changes_nothing(
    discord_fake: FakeDiscord, discord_bot: BotFactory, openai_fake: FakeOpenAI
) -> None:
    fake = discord_fake
    app, _bot = await discord_bot()
    gate = ProviderGate.hold(app)
    it = await fake.slash(fake.alice, prompt="alice's castle")
    message, job_id = await cancellable(fake, it)

    click = await fake.click(fake.bob, message["id"], f"imagine:cancel:{job_id}")
    answer = await fake.private_reply(click)

    assert click.callback_type == 4 and answer["flags"] & EPHEMERAL
    assert answer["content"] == f"⚠️ {texts.ONLY_OWNER_CANCELS}"
    row = await job(app, job_id)
    assert row.unfinished and row.cancelled_by is None
    assert f"imagine:cancel:{job_id}" in buttons(fake.messages[message["id"]])
    gate.release.set()
    result = await fake.result_of(it)
    assert (await job(app, job_id)).status == "succeeded"
    assert f"imagine:cancel:{job_id}" not in buttons(result)  # a result has nothing to cancel
    assert served(openai_fake) == ["alice's castle"]


async def test_a_moderator_or_server_manager_can_cancel_anyones_job(
    discord_fake: FakeDiscord, discord_bot: BotFactory, openai_fake: FakeOpenAI
) -> None:
    fake = discord_fake
    app, _bot = await discord_bot()
    ProviderGate.hold(app)
    # fake.mod can manage messages; fake.admin can manage the server.
    for admin, prompt in ((fake.mod, "first tower"), (fake.admin, "second tower")):
        it = await fake.slash(fake.alice, prompt=prompt)
        message, job_id = await cancellable(fake, it)
        click = await fake.click(admin, message["id"], f"imagine:cancel:{job_id}")
        ended = await ended_by(fake, message["id"], admin)
        assert click.callback_type == 6
        assert_cancelled_in_place(ended, prompt)
        row = await job(app, job_id)
        assert row.cancelled_by == f"discord:{admin.id}" and row.charged_images == 0
    assert openai_fake.requests == []


async def test_a_reply_edit_can_be_cancelled_on_its_status_reply(
    discord_fake: FakeDiscord, discord_bot: BotFactory, openai_fake: FakeOpenAI
) -> None:
    fake = discord_fake
    app, _bot = await discord_bot()
    first = await fake.generate(fake.alice, "a red boat")
    ProviderGate.hold(app)
    asked = await fake.send_message(fake.alice, "make it blue", reply_to=first["id"])

    def offering() -> list[tuple[dict[str, Any], str]]:
        return [
            (m, match[1])
            for m in fake.replies_to(asked["id"])
            for custom_id in buttons(m)
            if (match := CANCEL.match(custom_id))
        ]

    [(status, job_id)] = await fake.wait_until(offering)
    await fake.click(fake.alice, status["id"], f"imagine:cancel:{job_id}")
    ended = await ended_by(fake, status["id"], fake.alice)
    assert_cancelled_in_place(ended, "make it blue")
    assert (await job(app, job_id)).parent_job_id == job_of(first)
    assert len(openai_fake.requests) == 1


async def test_cancel_once_the_image_is_made_is_too_late_and_the_result_still_lands(
    discord_fake: FakeDiscord, discord_bot: BotFactory, openai_fake: FakeOpenAI
) -> None:
    fake = discord_fake
    app, _bot = await discord_bot()
    it = await fake.slash(fake.alice, prompt="a made image")
    message, job_id = await cancellable(fake, it)

    def showing_result(call: Call) -> bool:
        return (
            call.method == "PATCH"
            and it.token in call.path
            and bool((call.json or {}).get("embeds"))
        )

    # Discord holds the result back a moment: the job message still offers Cancel.
    fake.rate_limit_next(showing_result, retry_after=1.0)
    await fake.wait_until(lambda: [c for c in fake.calls if showing_result(c) and c.status == 429])
    assert f"imagine:cancel:{job_id}" in buttons(fake.messages[message["id"]])
    click = await fake.click(fake.alice, message["id"], f"imagine:cancel:{job_id}")
    answer = await fake.private_reply(click)

    assert answer["content"] == f"⚠️ {texts.too_late_to_cancel('succeeded')}"
    result = await fake.result_of(it)
    assert result["id"] == message["id"] and result["attachments"]
    row = await job(app, job_id)
    assert row.status == "succeeded" and row.cancelled_by is None and row.charged_images == 1


async def test_the_fake_refuses_more_than_five_buttons_in_a_row(discord_fake: FakeDiscord) -> None:
    url = f"{discord_fake.api_url}/channels/{discord_fake.channel_id}/messages"
    auth = {"Authorization": f"Bot {discord_fake.token}"}

    def row(count: int) -> dict[str, Any]:
        button = {"type": 2, "style": 2, "label": "x"}
        return {"type": 1, "components": [{**button, "custom_id": f"b{i}"} for i in range(count)]}

    async with aiohttp.ClientSession(headers=auth) as http:
        statuses = []
        for count in (5, 6):
            body = {"content": "buttons", "components": [row(count)]}
            async with http.post(url, json=body) as response:
                statuses.append(response.status)
    assert statuses == [200, 400]
    assert discord_fake.problems == ["an action row holds 1-5 buttons"]
    discord_fake.problems.clear()  # expected here: the fixture fails a test on any other
