"""The fair queue, the cap on waiting requests and the bot's total budget, on the fake Discord."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable

from bot.app import App
from tests.fakes.discord_server import (
    EPHEMERAL,
    BotFactory,
    FakeDiscord,
    FakeInteraction,
    ProviderGate,
)
from tests.fakes.openai_server import FakeOpenAI


async def until(condition: Callable[[], object]) -> None:
    """Wait for state the fakes don't announce (the core's queue) by looking again, up to 10 s."""
    for _ in range(1000):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the bot never got there")


def jobs(app: App) -> list[tuple[str, str, str, float]]:
    """Every job row as (user key, prompt, status, charged cost), oldest first."""
    path = app.settings.database_path
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        rows = db.execute(
            "SELECT user_key, prompt, status, charged_cost FROM jobs ORDER BY created_at"
        ).fetchall()
    return [(str(k), str(p), str(s), float(c)) for k, p, s, c in rows]


def served(openai_fake: FakeOpenAI) -> list[str]:
    """The prompts the image API received, in the order it received them."""
    return [str((r.json or {})["prompt"]) for r in openai_fake.requests]


def shown(fake: FakeDiscord, it: FakeInteraction) -> list[str]:
    """What the interaction's message said over time."""
    return [str(e.get("content") or "") for e in fake.webhook_edits(it)]


def assert_only_for_them(fake: FakeDiscord, it: FakeInteraction, reply: dict[str, object]) -> None:
    assert isinstance(reply["flags"], int) and reply["flags"] & EPHEMERAL
    # The public "thinking…" message made way for the private answer.
    assert not [m for m in fake.channel_messages() if m.get("_token") == it.token]
    assert "Traceback" not in str(reply["content"])


async def test_a_newcomer_goes_ahead_of_a_busy_users_backlog_and_is_told_so(
    discord_fake: FakeDiscord, discord_bot: BotFactory, openai_fake: FakeOpenAI
) -> None:
    fake = discord_fake
    app, _bot = await discord_bot(imagine_max_concurrency=1, imagine_user_queue=8)
    gate = ProviderGate.hold(app)
    mine = [f"alice picture {i}" for i in range(4)]
    theirs = await asyncio.gather(*(fake.slash(fake.alice, prompt=p) for p in mine))
    # One of Alice's runs (held), the other three wait: only then does Bob ask.
    await until(lambda: app.service.queue_length == 3)
    # Bob asks in another channel, whose progress edits don't wait behind Alice's.
    elsewhere = await fake.add_channel("gallery")
    bob = await fake.slash(fake.bob, prompt="bob picture", in_channel=elsewhere)
    told = await fake.wait_until(lambda: [c for c in shown(fake, bob) if "in line" in c])
    assert told[0] == "> bob picture\n⏳ Queued — next in line"
    assert app.service.queue_length == 4

    gate.release.set()
    await asyncio.gather(*(fake.result_of(it) for it in (*theirs, bob)))
    order = served(openai_fake)
    assert sorted(order) == sorted([*mine, "bob picture"])
    # The one already running finished first; Bob was next, as he was told, not fifth.
    assert order[1] == "bob picture", order


async def test_a_fourth_request_while_two_wait_is_refused_privately_and_not_charged(
    discord_fake: FakeDiscord, discord_bot: BotFactory, openai_fake: FakeOpenAI
) -> None:
    fake = discord_fake
    app, _bot = await discord_bot(imagine_max_concurrency=1, imagine_user_queue=2)
    gate = ProviderGate.hold(app)
    first = await fake.slash(fake.alice, prompt="alice picture 0")
    await until(lambda: [j for j in jobs(app) if j[2] == "running"])
    prompts = [f"alice picture {i}" for i in (1, 2, 3)]
    more = await asyncio.gather(*(fake.slash(fake.alice, prompt=p) for p in prompts))

    [refused] = await fake.wait_until(lambda: [it for it in more if fake.ephemeral_followups(it)])
    reply = await fake.private_reply(refused)
    assert_only_for_them(fake, refused, reply)
    words = str(reply["content"])
    assert "You already have 2 requests waiting in line" in words
    assert "Nothing was charged" in words
    await until(lambda: app.service.queue_length == 2)
    admitted = [it for it in more if it is not refused]
    assert not [it for it in admitted if fake.ephemeral_followups(it)]

    # Bob is not held back by Alice's full line.
    bob = await fake.slash(fake.bob, prompt="bob picture")
    await until(lambda: app.service.queue_length == 3)
    gate.release.set()
    await asyncio.gather(*(fake.result_of(it) for it in (first, *admitted, bob)))

    rows = jobs(app)
    refused_prompt = {p for p in prompts if p not in {r[1] for r in rows}}
    assert len(refused_prompt) == 1 and len(rows) == 4
    assert sorted(served(openai_fake)) == sorted(r[1] for r in rows)
    assert not refused_prompt & set(served(openai_fake))
    assert all(status == "succeeded" and cost > 0 for _k, _p, status, cost in rows)
    assert f"discord:{fake.bob.id}" in {r[0] for r in rows}


async def test_the_bots_total_budget_refuses_even_an_admin_privately(
    discord_fake: FakeDiscord, discord_bot: BotFactory, openai_fake: FakeOpenAI
) -> None:
    fake = discord_fake
    # A low-quality square reserves about $0.006: one fits in a cent a day, a second does not.
    app, _bot = await discord_bot(
        imagine_total_budget="0.01/day",
        imagine_quality="low",
        imagine_size="1024x1024",
        imagine_admin_users=f"discord:{fake.admin.id}",
    )
    await fake.generate(fake.alice, "a copper kettle")
    it = await fake.slash(fake.admin, prompt="a brass kettle")
    reply = await fake.private_reply(it)

    assert_only_for_them(fake, it, reply)
    words = str(reply["content"])
    assert "The bot's daily budget of $0.01 is spent" in words
    assert "It frees up <t:" in words
    assert served(openai_fake) == ["a copper kettle"]
    assert [r[1] for r in jobs(app)] == ["a copper kettle"]
