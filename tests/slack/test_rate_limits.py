"""Bursts against Slack's rate limits: each placeholder ends with its result, within budget."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

from tests.fakes.openai_server import FakeOpenAI
from tests.fakes.slack_server import BOT_USER_ID, FakeSlack
from tests.fakes.slack_steps import CHANNEL, text_of

# One Slack minute lasts 1.2 s here; every window and Retry-After shrinks alike.
FAST = 0.02
BURST = 24


def placeholders(fake: FakeSlack) -> list[dict[str, Any]]:
    """The bot's top-level messages in the channel (each job's placeholder)."""
    return [
        m
        for m in fake.messages.get(CHANNEL, [])
        if m.get("user") == BOT_USER_ID and "thread_ts" not in m and m.get("subtype") is None
    ]


async def test_a_burst_in_one_channel_ends_every_placeholder_with_its_result(
    slack_fake: FakeSlack, openai_fake: FakeOpenAI, start_slack: Any
) -> None:
    # One user sends the whole burst: their cap on waiting requests is raised to fit it.
    await start_slack(
        "socket", rate_scale=FAST, imagine_max_concurrency=4, imagine_user_queue=BURST
    )
    # Slack refuses the first final edit four times in a row.
    slack_fake.fail_when(
        "chat.update", lambda a: "done in" in str(a.get("text")), "ratelimited", times=4
    )
    await asyncio.gather(
        *(
            slack_fake.send_command(slack_fake.command_payload(f"burst picture {i}"))
            for i in range(BURST)
        )
    )
    await slack_fake.wait_until(
        lambda: (
            len(placeholders(slack_fake)) == BURST
            and all("done in" in m["text"] for m in placeholders(slack_fake))
        ),
        timeout=60,
    )
    shown = placeholders(slack_fake)
    assert not [m["text"] for m in shown if "queued" in m["text"] or "starting" in m["text"]]
    # Each placeholder shows its own job's image and buttons.
    jobs = {
        next(b for b in m["blocks"] if b["type"] == "actions")["elements"][0]["value"]
        for m in shown
    }
    assert len(jobs) == BURST
    assert all(any(b["type"] == "image" for b in m["blocks"]) for m in shown)
    # The token is checked once for the whole process, not once per event.
    assert len(slack_fake.calls_to("auth.test")) == 1
    by_method = Counter(c.method for c in slack_fake.calls if c.method != "apps.connections.open")
    assert sum(by_method.values()) <= 6 * BURST, by_method


async def test_a_final_edit_refused_several_times_still_lands(
    slack_fake: FakeSlack, openai_fake: FakeOpenAI, start_slack: Any
) -> None:
    await start_slack("socket")
    slack_fake.fail_when(
        "chat.update", lambda a: "done in" in str(a.get("text")), "ratelimited", times=4
    )
    await slack_fake.send_command(slack_fake.command_payload("a patient painting"))
    finals = await slack_fake.wait_for("chat.update", lambda c: "done in" in text_of(c), count=5)
    [placeholder] = placeholders(slack_fake)
    assert placeholder["ts"] == finals[-1].args["ts"] and "done in" in placeholder["text"]
    assert not slack_fake.calls_to("chat.postEphemeral")  # nothing went wrong for the user


async def test_the_fake_answers_429_with_retry_after_over_a_tier(
    slack_fake: FakeSlack, openai_fake: FakeOpenAI, start_slack: Any
) -> None:
    # The fake itself: the 51st chat.update within a (scaled) minute is refused, with a wait.
    import aiohttp

    from tests.fakes.slack_server import BOT_TOKEN

    slack_fake.rate_scale = 0.5
    message = slack_fake.add_message(CHANNEL, "hello", user=BOT_USER_ID)
    headers = {"Authorization": f"Bearer {BOT_TOKEN}"}
    args = {"channel": CHANNEL, "ts": message["ts"], "text": "edited"}
    async with aiohttp.ClientSession() as session:
        statuses = []
        for _ in range(51):
            async with session.post(
                f"{slack_fake.api_url}chat.update", json=args, headers=headers
            ) as r:
                statuses.append((r.status, r.headers.get("Retry-After"), await r.json()))
    assert [s[0] for s in statuses[:50]] == [200] * 50
    status, retry_after, body = statuses[50]
    assert status == 429 and body == {"ok": False, "error": "ratelimited"}
    assert retry_after is not None and 0 < float(retry_after) <= 30
