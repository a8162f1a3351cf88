"""Whatever a user can see of a job can be replied to: links exist before the image shows."""

from __future__ import annotations

import contextlib
from typing import Any

import pytest

from tests.fakes.discord_server import BotFactory, FakeDiscord, ProviderGate, job_of
from tests.fakes.openai_server import FakeOpenAI


def quick_reply(fake: FakeDiscord, text: str) -> list[dict[str, Any]]:
    """Make Alice reply to the first result image the moment it appears; returns her replies."""
    asked: list[dict[str, Any]] = []

    async def reply(message: dict[str, Any]) -> None:
        if asked:
            return
        asked.append(await fake.send_message(fake.alice, text, reply_to=message["id"]))
        # Hold the answer that showed the image until the bot has reacted to her reply, or a
        # while: the bot can only link what it is told about after this returns.
        with contextlib.suppress(AssertionError):
            await fake.wait_until(lambda: fake.replies_to(asked[0]["id"]), timeout=3)

    fake.on_result_shown = reply
    return asked


@pytest.mark.parametrize(
    "where", ["in place", "thinking message deleted", "token expired", "status reply deleted"]
)
async def test_a_reply_the_moment_a_result_appears_edits_that_result(
    where: str, discord_fake: FakeDiscord, discord_bot: BotFactory, openai_fake: FakeOpenAI
) -> None:
    app, _bot = await discord_bot()
    if where == "status reply deleted":
        first = await discord_fake.generate(discord_fake.alice, "a red boat")
    gate = ProviderGate.hold(app)

    def generating(message_id: str | None) -> bool:
        content = discord_fake.messages.get(message_id or "", {}).get("content", "")
        return "🎨 Working since" in content

    # Whatever happens to the job's message happens after its last progress edit, so the
    # result itself is what has to be posted afresh.
    if where == "status reply deleted":
        asked = await discord_fake.send_message(
            discord_fake.alice, "make it blue", reply_to=first["id"]
        )
        [status] = await discord_fake.wait_until(lambda: discord_fake.replies_to(asked["id"]))
        await discord_fake.wait_until(lambda: generating(status["id"]))
        discord_fake.delete_by_user(status["id"])
    else:
        it = await discord_fake.slash(discord_fake.alice, prompt="a lighthouse")
        await discord_fake.wait_until(lambda: generating(it.original_id))
        if where == "thinking message deleted":
            discord_fake.delete_by_user(it.original_id or "")
        elif where == "token expired":
            discord_fake.expire(it)
    replies = quick_reply(discord_fake, "make it night")
    gate.release.set()

    [reply] = await discord_fake.wait_until(lambda: replies)
    result = discord_fake.messages[reply["message_reference"]["message_id"]]
    assert result["attachments"] and result["embeds"]
    edited = await discord_fake.reply_result(reply)
    job = await app.store.job_for_message("discord", edited["id"])
    assert job is not None and job.prompt == "make it night"
    # The edit started from that result, as a reply to a result always does.
    assert job.parent_job_id == job_of(result)
    assert openai_fake.requests[-1].path == "/v1/images/edits"


async def test_a_reply_to_a_job_still_being_made_says_to_wait(
    discord_fake: FakeDiscord, discord_bot: BotFactory, openai_fake: FakeOpenAI
) -> None:
    app, _bot = await discord_bot(imagine_partial_images=1)
    gate = ProviderGate.hold(app, after_preview=True)
    it = await discord_fake.slash(discord_fake.alice, prompt="a slow sunrise")

    def previewing() -> bool:
        shown = discord_fake.messages.get(it.original_id or "", {})
        return ", preview 1" in shown.get("content", "")

    await discord_fake.wait_until(previewing)
    # With the mention on, the preview's own image would otherwise be taken for one to edit.
    asked = await discord_fake.send_message(
        discord_fake.alice, "make it night", reply_to=it.original_id
    )
    [answer] = await discord_fake.wait_until(lambda: discord_fake.replies_to(asked["id"]))
    gate.release.set()
    await discord_fake.result_of(it)

    assert "isn't finished yet" in answer["content"]
    assert len(openai_fake.requests) == 1
