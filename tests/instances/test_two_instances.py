"""Two ``imagine-bot run slack`` processes on one database, each Slack request sent to one of them.

The test plays the load balancer: it posts every signed Slack request to instance A or B.
"""

from __future__ import annotations

import asyncio
import signal

import pytest

from adapters.slack.blocks import REGENERATE
from tests.fakes.openai_server import FakeOpenAI
from tests.fakes.slack_server import BOT_USER_ID, FakeSlack
from tests.fakes.slack_steps import CHANNEL, edits, posted, text_of
from tests.instances.harness import (
    Cluster,
    assert_refunded_interruption,
    button_job,
    done_updates,
    finished_job,
    first_result,
    placeholders,
    prompts,
)

WAIT = 30.0


async def test_a_button_on_a_result_of_one_instance_is_handled_by_the_other(
    cluster: Cluster, slack_fake: FakeSlack, openai_fake: FakeOpenAI
) -> None:
    a, b = await cluster.start("a", "b")
    prompt = "a lighthouse in fog"
    root, first_job = await first_result(slack_fake, a.url, prompt)

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


async def test_a_job_of_an_instance_killed_mid_call_is_ended_by_the_other_and_refunded(
    cluster: Cluster, slack_fake: FakeSlack, openai_fake: FakeOpenAI
) -> None:
    openai_fake.answer_gate = asyncio.Event()  # the call is on the wire when A dies
    a, b = await cluster.start("a", "b", IMAGINE_RECOVERY_CHECK_S="1", IMAGINE_MAX_CONCURRENCY="1")
    prompt = "a windmill in a storm"
    await slack_fake.send_command(slack_fake.command_payload(prompt), url=a.url)
    await openai_fake.wait_until(lambda: openai_fake.in_flight == 1, timeout=WAIT)
    working = await slack_fake.wait_for(
        "chat.update", lambda c: prompt in text_of(c) and "working" in text_of(c), timeout=WAIT
    )
    ts, job_id = working[0].args["ts"], button_job(working[0])

    a.kill()
    assert await a.wait() == -signal.SIGKILL
    # B looks every second: the job's own message says it was interrupted, nothing charged.
    notice = await slack_fake.wait_for(
        "chat.update", lambda c: "interrupted" in text_of(c) and c.args["ts"] == ts, timeout=60
    )
    assert prompt in text_of(notice[0]) and "nothing was charged" in text_of(notice[0])
    await assert_refunded_interruption(cluster.db.data_dir, cluster.db.database_url, job_id)

    openai_fake.answer_gate.set()  # the dead call's answer reaches nobody; B never runs it again
    # The one provider slot A leased is free again (not held for the 90 s of its lease).
    after = "a windmill after the storm"
    await slack_fake.send_command(slack_fake.command_payload(after), url=b.url)
    await slack_fake.wait_until(lambda: bool(done_updates(slack_fake, after)), timeout=WAIT)
    codes = await cluster.stop_all()
    cluster.assert_clean(codes, killed=("a",))
    assert prompts(openai_fake) == [prompt, after]
    told = [c for c in slack_fake.calls_to("chat.update") if "interrupted" in text_of(c)]
    assert len(told) == 1  # told once, by one instance
    assert "Traceback" not in b.stderr


async def test_a_reply_in_the_thread_of_one_instances_result_is_an_edit_on_the_other(
    cluster: Cluster, slack_fake: FakeSlack, openai_fake: FakeOpenAI
) -> None:
    a, b = await cluster.start("a", "b")
    prompt = "a fox in the snow"
    root, first_job = await first_result(slack_fake, a.url, prompt)
    await slack_fake.wait_for("files.completeUploadExternal", timeout=WAIT)

    # B finds the job by its message (the link A wrote) and edits the image A saved.
    reply = slack_fake.add_message(CHANNEL, "make it night", user="UBOB", thread_ts=root)
    status, _ = await slack_fake.send_event(slack_fake.message_event(CHANNEL, reply), url=b.url)
    assert status == 200
    uploads = await slack_fake.wait_for("files.completeUploadExternal", count=2, timeout=WAIT)
    assert uploads[-1].args["thread_ts"] == root
    (edit,) = edits(openai_fake)
    assert edit.form is not None and edit.form["prompt"] == "make it night"
    made_by_a = cluster.db.data_dir / "images" / first_job
    assert edit.files[0].data == next(made_by_a.glob("out_0.*")).read_bytes()
    await slack_fake.wait_until(
        lambda: bool(done_updates(slack_fake, "make it night")), timeout=WAIT
    )
    second_job = button_job(done_updates(slack_fake, "make it night")[-1])
    assert finished_job(b, second_job) and not finished_job(a, second_job)
    cluster.assert_clean(await cluster.stop_all())
