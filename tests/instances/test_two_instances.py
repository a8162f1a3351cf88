"""Two ``imagine-bot run slack`` processes on one database, each Slack request sent to one of them.

The test plays the load balancer: it posts every signed Slack request to instance A or B.
"""

from __future__ import annotations

import asyncio

import pytest

from adapters.slack.blocks import REGENERATE
from tests.fakes.openai_server import FakeOpenAI
from tests.fakes.slack_server import BOT_USER_ID, FakeSlack
from tests.fakes.slack_steps import CHANNEL, posted, text_of
from tests.instances.harness import (
    Cluster,
    button_job,
    done_updates,
    finished_job,
    placeholders,
    prompts,
)

WAIT = 30.0


async def test_a_button_on_a_result_of_one_instance_is_handled_by_the_other(
    cluster: Cluster, slack_fake: FakeSlack, openai_fake: FakeOpenAI
) -> None:
    a, b = await cluster.start("a", "b")
    prompt = "a lighthouse in fog"
    await slack_fake.send_command(slack_fake.command_payload(prompt), url=a.url)
    first = await slack_fake.wait_for(
        "chat.update", lambda c: "done in" in text_of(c), timeout=WAIT
    )
    root, first_job = str(first[-1].args["ts"]), button_job(first[-1])

    click = slack_fake.block_action_payload(
        "UALICE", CHANNEL, posted(slack_fake, root), REGENERATE, first_job
    )
    status, _ = await slack_fake.send_interactive(click, url=b.url)
    assert status == 200
    await slack_fake.wait_until(lambda: len(done_updates(slack_fake, prompt)) >= 2, timeout=WAIT)
    again = done_updates(slack_fake, prompt)[-1]
    second_job = button_job(again)
    assert second_job != first_job
    # The user sees the new image, in the thread of the first result.
    uploads = await slack_fake.wait_for("files.completeUploadExternal", count=2, timeout=WAIT)
    assert uploads[-1].args["thread_ts"] == root
    assert prompts(openai_fake) == [prompt, prompt]
    # B ran the new job (A never heard of the click), A the first one.
    assert finished_job(b, second_job) and not finished_job(a, second_job)
    assert finished_job(a, first_job) and not finished_job(b, first_job)

    cluster.assert_clean(await cluster.stop_all())


@pytest.mark.parametrize("kind", ["event", "command"])
async def test_a_retry_delivered_to_the_other_instance_starts_nothing(
    kind: str, cluster: Cluster, slack_fake: FakeSlack, openai_fake: FakeOpenAI
) -> None:
    a, b = await cluster.start("a", "b")
    prompt, later = "a fox in the snow", "a second, unrelated fox"
    if kind == "event":
        said = slack_fake.add_message(CHANNEL, f"<@{BOT_USER_ID}> {prompt}")
        event = slack_fake.message_event(CHANNEL, said, kind="app_mention")
        # Slack re-sends the same event (same event_id) when it saw no ack in time; the load
        # balancer may hand the retry to the other instance, even while the first is at work.
        await asyncio.gather(
            slack_fake.send_event(event, url=a.url),
            slack_fake.send_event(event, retry_num=1, url=b.url),
        )
        other = slack_fake.add_message(CHANNEL, f"<@{BOT_USER_ID}> {later}")
        await slack_fake.send_event(slack_fake.message_event(CHANNEL, other), url=b.url)
    else:
        command = slack_fake.command_payload(prompt)
        await asyncio.gather(
            slack_fake.send_command(command, url=a.url),
            slack_fake.send_command(command, retry_num=1, url=b.url),
        )
        await slack_fake.send_command(slack_fake.command_payload(later), url=b.url)
    # B answers a later request; had it taken the retry, that would have started as well.
    await slack_fake.wait_until(
        lambda: bool(done_updates(slack_fake, prompt) and done_updates(slack_fake, later)),
        timeout=WAIT,
    )
    codes = await cluster.stop_all()  # whatever either still had in hand is over now

    assert sorted(prompts(openai_fake)) == sorted([prompt, later])
    assert len(placeholders(slack_fake, prompt)) == 1
    assert len(done_updates(slack_fake, prompt)) == 1
    assert len(slack_fake.calls_to("files.completeUploadExternal")) == 2
    cluster.assert_clean(codes)


# On SQLite the cap is each process's own: only a shared database counts slots over instances.
@pytest.mark.parametrize("shared_db", ["postgresql"], indirect=True)
async def test_max_concurrency_counts_over_both_instances(
    cluster: Cluster, slack_fake: FakeSlack, openai_fake: FakeOpenAI
) -> None:
    openai_fake.answer_gate = asyncio.Event()  # every image call waits until released
    a, b = await cluster.start(
        "a", "b", IMAGINE_MAX_CONCURRENCY="1", IMAGINE_PROGRESS_INTERVAL="0.05"
    )
    first, second = "a red kite over the dunes", "a blue kite over the sea"
    await slack_fake.send_command(slack_fake.command_payload(first), url=a.url)
    await openai_fake.wait_until(lambda: openai_fake.in_flight == 1, timeout=WAIT)
    await slack_fake.send_command(slack_fake.command_payload(second, user="UBOB"), url=b.url)

    # B has a free slot of its own; only the count in the database makes its job wait, and
    # its user is told so while A's call is held.
    await slack_fake.wait_for(
        "chat.update",
        lambda c: second in text_of(c) and "queued — next in line" in text_of(c),
        timeout=WAIT,
    )
    assert openai_fake.in_flight == 1 and prompts(openai_fake) == [first]

    openai_fake.answer_gate.set()
    await slack_fake.wait_until(
        lambda: bool(done_updates(slack_fake, first) and done_updates(slack_fake, second)),
        timeout=WAIT,
    )
    assert prompts(openai_fake) == [first, second]
    assert openai_fake.most_in_flight == 1
    cluster.assert_clean(await cluster.stop_all())
