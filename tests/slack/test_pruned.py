"""A result whose images retention removed: its buttons and thread replies say so, privately."""

from __future__ import annotations

import time
from typing import Any

from bot import retention
from tests.fakes.openai_server import FakeOpenAI
from tests.fakes.slack_server import FakeSlack
from tests.fakes.slack_steps import CHANNEL, click, posted, slash_result, text_of

DAY = 86_400.0


async def prune(running: Any) -> None:
    """A sweep as if the result were 100 days old (images are kept 90 by default)."""
    report = await retention.sweep(
        running.app.store, running.app.settings, now=time.time() + 100 * DAY
    )
    assert report.folders >= 1


async def test_a_pruned_results_buttons_answer_privately_that_the_image_is_gone(
    slack_fake: FakeSlack, openai_fake: FakeOpenAI, start_slack: Any
) -> None:
    running = await start_slack("socket")
    root, job_id = await slash_result(slack_fake, "a lighthouse")
    await prune(running)
    asked = len(openai_fake.requests)
    result = posted(slack_fake, root)

    for action in ("imagine_vary", "imagine_edit_button"):
        await click(slack_fake, "UALICE", result, action, job_id)
        told = await slack_fake.wait_for(
            "chat.postEphemeral", lambda c: "no longer kept" in text_of(c)
        )
        assert told[-1].args["user"] == "UALICE"
        assert "nothing was charged" in text_of(told[-1])
    assert len(openai_fake.requests) == asked  # nothing was asked of the image service
    assert not slack_fake.calls_to("views.open")  # no form for an image that is gone
    # No new job was charged for the refusals.
    job = await running.app.store.get_job(job_id)
    assert job is not None and job.status == "succeeded"


async def test_a_reply_in_a_pruned_results_thread_is_told_the_image_is_gone(
    slack_fake: FakeSlack, openai_fake: FakeOpenAI, start_slack: Any
) -> None:
    running = await start_slack("socket")
    root, _job_id = await slash_result(slack_fake, "a harbour")
    await prune(running)
    asked = len(openai_fake.requests)

    reply = slack_fake.add_message(CHANNEL, "make it night", thread_ts=root)
    await slack_fake.send_event(slack_fake.message_event(CHANNEL, reply))
    told = await slack_fake.wait_for("chat.postEphemeral", lambda c: "no longer kept" in text_of(c))
    assert told[-1].args["user"] == "UALICE"
    assert len(openai_fake.requests) == asked
