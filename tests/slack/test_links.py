"""Whatever the bot shows in Slack can be replied to at once: links are written before it shows."""

from __future__ import annotations

from typing import Any

from tests.fakes.openai_server import FakeOpenAI
from tests.fakes.slack_server import FakeSlack, SlackCall
from tests.fakes.slack_steps import CHANNEL, edits, slash_result, text_of


async def test_a_reply_the_moment_a_result_appears_edits_that_result(
    slack_fake: FakeSlack, openai_fake: FakeOpenAI, start_slack: Any
) -> None:
    running = await start_slack("socket")
    root, first_job = await slash_result(slack_fake)
    shown: list[str] = []  # the job whose images just appeared in the thread

    async def reply_as_it_appears(call: SlackCall, answer: dict[str, Any]) -> None:
        if call.method != "files.completeUploadExternal" or not answer.get("ok"):
            return
        if call.args.get("thread_ts") != root or shown:
            return
        upload = slack_fake.uploads[str(call.args["files"][0]["id"])]
        job_id = upload.filename.split("-")[1]
        if job_id == first_job:
            return
        shown.append(job_id)
        # Bob replies while the bot still waits for this answer: before its next call.
        reply = slack_fake.add_message(CHANNEL, "add snow", user="UBOB", thread_ts=root)
        await slack_fake.send_event(slack_fake.message_event(CHANNEL, reply))
        await slack_fake.wait_for(
            "chat.postMessage", lambda c: text_of(c).startswith("<@UBOB>: add snow")
        )

    slack_fake.on_answered = reply_as_it_appears
    night = slack_fake.add_message(CHANNEL, "make it night", user="UBOB", thread_ts=root)
    await slack_fake.send_event(slack_fake.message_event(CHANNEL, night))
    await slack_fake.wait_for("chat.update", lambda c: "done in" in text_of(c), count=3)
    [night_job] = shown
    assert night_job != first_job
    # "add snow" edits the image that had just appeared, not the one before it.
    snow = edits(openai_fake)[-1]
    assert snow.form["prompt"] == "add snow"
    night_image = (await running.app.store.job_images(night_job))[0].read_bytes()
    assert snow.files[0].data == night_image
    newest = await running.app.store.job_for_message("slack", f"{CHANNEL}:{root}")
    assert newest is not None and newest.parent_job_id == night_job
