"""The fair queue, the cap on waiting requests and the bot's total budget, on the fake Slack."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from typing import Any

from bot.app import App
from tests.fakes.app_fixtures import ProviderGate
from tests.fakes.openai_server import FakeOpenAI
from tests.fakes.slack_server import FakeSlack
from tests.fakes.slack_steps import text_of

# Five placeholders in one channel would wait for Slack's one-post-a-second; shrink its clock.
FAST = 0.05


async def until(condition: Callable[[], object]) -> None:
    """Wait for state the fakes don't announce (the core's queue) by looking again, up to 10 s."""
    for _ in range(1000):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the bot never got there")


def line_is(app: App, waiting: int) -> Callable[[], bool]:
    """A check that exactly ``waiting`` jobs are in line for a slot."""
    return lambda: app.service.queue_length == waiting


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


async def imagine(fake: FakeSlack, prompt: str, user: str = "UALICE") -> None:
    """Send /imagine as ``user``."""
    await fake.send_command(fake.command_payload(prompt, user=user))


async def all_done(fake: FakeSlack, count: int) -> None:
    """Wait until ``count`` placeholders show their result."""
    await fake.wait_for("chat.update", lambda c: "done in" in text_of(c), count=count, timeout=10)


async def test_a_newcomer_goes_ahead_of_a_busy_users_backlog_and_is_told_so(
    slack_fake: FakeSlack, openai_fake: FakeOpenAI, start_slack: Any
) -> None:
    running = await start_slack(
        "socket", rate_scale=FAST, imagine_max_concurrency=1, imagine_user_queue=8
    )
    app: App = running.app
    gate = ProviderGate.hold(app)
    mine = [f"alice picture {i}" for i in range(4)]
    # One by one, each in line before the next, so each is told its place as it stands.
    await imagine(slack_fake, mine[0])
    await until(lambda: [j for j in jobs(app) if j[2] == "running"])
    for waiting, prompt in enumerate(mine[1:], start=1):
        await imagine(slack_fake, prompt)
        await until(line_is(app, waiting))
    await imagine(slack_fake, "bob picture", user="UBOB")
    [placeholder] = await slack_fake.wait_for(
        "chat.postMessage", lambda c: text_of(c).startswith("<@UBOB>:")
    )
    assert text_of(placeholder) == "<@UBOB>: bob picture — queued — next in line"
    # Alice's were told their places behind the one running; Bob's is ahead of her later two.
    alices = [
        text_of(c).removeprefix(f"<@UALICE>: {p} — ")
        for p in mine
        for c in slack_fake.calls_to("chat.postMessage")
        if text_of(c).startswith(f"<@UALICE>: {p} — ")
    ]
    assert alices == [
        "starting…",
        "queued — next in line",
        "queued — 2nd in line",
        "queued — 3rd in line",
    ]
    await until(lambda: app.service.queue_length == 4)

    gate.release.set()
    await all_done(slack_fake, 5)
    order = served(openai_fake)
    assert sorted(order) == sorted([*mine, "bob picture"])
    # The one already running finished first; Bob was next, as he was told, not fifth.
    assert order[1] == "bob picture", order


async def test_a_fourth_request_while_two_wait_is_refused_privately_and_not_charged(
    slack_fake: FakeSlack, openai_fake: FakeOpenAI, start_slack: Any
) -> None:
    running = await start_slack(
        "socket", rate_scale=FAST, imagine_max_concurrency=1, imagine_user_queue=2
    )
    app: App = running.app
    gate = ProviderGate.hold(app)
    await imagine(slack_fake, "alice picture 0")
    await until(lambda: [j for j in jobs(app) if j[2] == "running"])
    prompts = [f"alice picture {i}" for i in (1, 2, 3)]
    await asyncio.gather(*(imagine(slack_fake, p) for p in prompts))

    [refusal] = await slack_fake.wait_for("chat.postEphemeral")
    assert refusal.args["user"] == "UALICE"
    words = text_of(refusal)
    assert "You already have 2 requests waiting in line" in words
    assert "Nothing was charged" in words
    await until(lambda: app.service.queue_length == 2)

    # Bob is not held back by Alice's full line.
    await imagine(slack_fake, "bob picture", user="UBOB")
    await until(lambda: app.service.queue_length == 3)
    gate.release.set()
    await all_done(slack_fake, 4)

    rows = jobs(app)
    [refused] = [p for p in prompts if p not in {r[1] for r in rows}]
    assert len(rows) == 4 and "slack:UBOB" in {r[0] for r in rows}
    assert sorted(served(openai_fake)) == sorted(r[1] for r in rows)
    assert all(status == "succeeded" and cost > 0 for _k, _p, status, cost in rows)
    # Nothing public about the refused one: no placeholder, and the words only in private.
    public = [
        text_of(c) for c in slack_fake.calls if c.method in ("chat.postMessage", "chat.update")
    ]
    assert not [t for t in public if refused in t or "waiting in line" in t]
    assert len(slack_fake.calls_to("chat.postEphemeral")) == 1


async def test_the_bots_total_budget_refuses_even_an_admin_privately(
    slack_fake: FakeSlack, openai_fake: FakeOpenAI, start_slack: Any
) -> None:
    # A low-quality square reserves about $0.006: one fits in a cent a day, a second does not.
    running = await start_slack(
        "socket",
        imagine_total_budget="0.01/day",
        imagine_quality="low",
        imagine_size="1024x1024",
        imagine_admin_users="slack:UADMIN",
    )
    await imagine(slack_fake, "a copper kettle")
    await all_done(slack_fake, 1)
    await imagine(slack_fake, "a brass kettle", user="UADMIN")

    [refusal] = await slack_fake.wait_for("chat.postEphemeral")
    assert refusal.args["user"] == "UADMIN"
    words = text_of(refusal)
    assert "The bot's daily budget of $0.01 is spent" in words
    assert "It frees up <!date^" in words
    assert served(openai_fake) == ["a copper kettle"]
    assert [r[1] for r in jobs(running.app)] == ["a copper kettle"]
    assert not [c for c in slack_fake.calls_to("chat.postMessage") if "brass" in text_of(c)]
