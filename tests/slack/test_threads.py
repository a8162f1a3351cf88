"""Mentions with images, direct messages and thread replies that edit, on a fake Slack."""

from __future__ import annotations

import io
from typing import Any

import pytest
from PIL import Image

from tests.fakes.openai_server import FakeOpenAI
from tests.fakes.slack_server import BOT_USER_ID, FakeSlack
from tests.fakes.slack_steps import (
    CHANNEL,
    TRANSPORTS,
    edits,
    mask_png,
    png,
    slash_result,
    text_of,
)


@pytest.mark.parametrize("mode", TRANSPORTS)
async def test_mention_with_two_images_and_mask_is_one_multipart_edit(
    mode: str, slack_fake: FakeSlack, openai_fake: FakeOpenAI, start_slack: Any
) -> None:
    await start_slack(mode)
    files = [
        slack_fake.add_file(png(color=(10, 200, 10)), "cat.png"),
        slack_fake.add_file(png(color=(10, 10, 200)), "hat.png"),
        slack_fake.add_file(mask_png(), "mask.png"),
    ]
    msg = slack_fake.add_message(CHANNEL, f"<@{BOT_USER_ID}> put the hat on the cat", files=files)
    await slack_fake.send_event(slack_fake.message_event(CHANNEL, msg, kind="app_mention"))
    complete = await slack_fake.wait_for("files.completeUploadExternal")
    (edit,) = edits(openai_fake)
    parts = [(f.field, f.filename) for f in edit.files]
    assert [p[0] for p in parts] == ["image[]", "image[]", "mask"]
    assert edit.form["prompt"] == "put the hat on the cat"
    assert all(d.authorized for d in slack_fake.downloads) and len(slack_fake.downloads) == 3
    # The placeholder and the result go into the mention's thread.
    assert slack_fake.calls_to("chat.postMessage")[0].args["thread_ts"] == msg["ts"]
    assert complete[0].args["thread_ts"] == msg["ts"]


@pytest.mark.parametrize("mode", TRANSPORTS)
async def test_mention_delivered_twice_and_retried_makes_one_job(
    mode: str, slack_fake: FakeSlack, openai_fake: FakeOpenAI, start_slack: Any
) -> None:
    await start_slack(mode)
    msg = slack_fake.add_message(CHANNEL, f"<@{BOT_USER_ID}> a tiny boat")
    mention = slack_fake.message_event(CHANNEL, msg, kind="app_mention")
    await slack_fake.send_event(mention)
    await slack_fake.send_event(slack_fake.message_event(CHANNEL, msg))
    answer = await slack_fake.send_event(mention, retry_num=1)
    if mode == "http":
        assert answer[0] == 200
        assert set(slack_fake.http_statuses) == {200}
    await slack_fake.wait_for("files.completeUploadExternal")
    # One more retry after the job finished must not start another either. A later mention
    # is handled after it, so once that one's image is up the retry has been dealt with.
    await slack_fake.send_event(mention, retry_num=2)
    later = slack_fake.add_message(CHANNEL, f"<@{BOT_USER_ID}> a tiny car")
    await slack_fake.send_event(slack_fake.message_event(CHANNEL, later, kind="app_mention"))
    await slack_fake.wait_for("files.completeUploadExternal", count=2)
    prompts = [r.json["prompt"] for r in openai_fake.requests if r.json is not None]
    assert prompts == ["a tiny boat", "a tiny car"]
    assert len(slack_fake.calls_to("chat.postMessage")) == 2


async def test_mention_without_images_generates_and_works_inside_a_thread(
    slack_fake: FakeSlack, openai_fake: FakeOpenAI, start_slack: Any
) -> None:
    await start_slack("socket")
    root = slack_fake.add_message(CHANNEL, "ideas for the poster?", user="UBOB")
    msg = slack_fake.add_message(CHANNEL, f"<@{BOT_USER_ID}> a poster --n 2", thread_ts=root["ts"])
    await slack_fake.send_event(slack_fake.message_event(CHANNEL, msg, kind="app_mention"))
    complete = await slack_fake.wait_for("files.completeUploadExternal")
    assert complete[0].args["thread_ts"] == root["ts"]
    assert len(complete[0].args["files"]) == 2
    sent = openai_fake.requests[0]
    assert sent.path.endswith("/generations") and sent.json and sent.json["n"] == 2


async def test_direct_message_needs_no_mention(
    slack_fake: FakeSlack, openai_fake: FakeOpenAI, start_slack: Any
) -> None:
    await start_slack("socket")
    msg = slack_fake.add_message("D0ALICE", "a paper crane")
    await slack_fake.send_event(slack_fake.message_event("D0ALICE", msg))
    await slack_fake.wait_for("files.completeUploadExternal")
    assert (
        openai_fake.requests[0].json and openai_fake.requests[0].json["prompt"] == "a paper crane"
    )


@pytest.mark.parametrize("mode", TRANSPORTS)
async def test_chain_of_three_thread_reply_edits(
    mode: str, slack_fake: FakeSlack, openai_fake: FakeOpenAI, start_slack: Any
) -> None:
    running = await start_slack(mode)
    root, job_id = await slash_result(slack_fake)
    for step, prompt in enumerate(["make it night", "add snow", "add a fox"], start=1):
        before = await running.app.store.job_images(job_id)
        reply = slack_fake.add_message(CHANNEL, prompt, user="UBOB", thread_ts=root)
        await slack_fake.send_event(slack_fake.message_event(CHANNEL, reply))
        await slack_fake.wait_for("chat.update", lambda c: "done in" in text_of(c), count=step + 1)
        edit = edits(openai_fake)[-1]
        assert edit.form["prompt"] == prompt
        assert edit.files[0].data == before[0].read_bytes()  # the newest image in the thread
        job = await running.app.store.job_for_message("slack", f"{CHANNEL}:{root}")
        assert job is not None and job.parent_job_id == job_id
        # Bob replies to Alice's result: the edit is his, shown and charged as his.
        assert job.requester.user_id == "UBOB"
        assert text_of(slack_fake.calls_to("chat.postMessage")[-1]).startswith("<@UBOB>: ")
        job_id = job.id
    uploads = slack_fake.calls_to("files.completeUploadExternal")
    assert [u.args["thread_ts"] for u in uploads] == [root] * 4
    assert len(edits(openai_fake)) == 3


async def test_ignores_chatter_other_bots_and_itself(
    slack_fake: FakeSlack, openai_fake: FakeOpenAI, start_slack: Any
) -> None:
    await start_slack("socket")
    root, _ = await slash_result(slack_fake)
    chatter = slack_fake.add_message(CHANNEL, "lunch anyone?")
    other = slack_fake.add_message("C0OTHER", "hi")
    stranger_thread = slack_fake.add_message(CHANNEL, "nice", thread_ts=other["ts"])
    other_bot = slack_fake.add_message(CHANNEL, "make it blue", thread_ts=root, bot=True)
    itself = slack_fake.add_message(CHANNEL, "make it red", user=BOT_USER_ID, thread_ts=root)
    for msg in (chatter, stranger_thread, other_bot, itself):
        answer = await slack_fake.send_event(slack_fake.message_event(CHANNEL, msg))
        assert answer.get("envelope_id")  # acked, not left for Slack to retry
    # A person's reply afterwards is handled, so the ones before really were ignored.
    person = slack_fake.add_message(CHANNEL, "make it green", thread_ts=root)
    await slack_fake.send_event(slack_fake.message_event(CHANNEL, person))
    await slack_fake.wait_for("files.completeUploadExternal", count=2)
    assert [r.form.get("prompt") for r in edits(openai_fake)] == ["make it green"]


async def test_file_given_only_by_id_is_looked_up(
    slack_fake: FakeSlack, openai_fake: FakeOpenAI, start_slack: Any
) -> None:
    await start_slack("socket")
    file = slack_fake.add_file(png(), "shared.png")
    stub = {"id": file["id"], "mode": "hidden_by_limit", "file_access": "check_file_info"}
    msg = slack_fake.add_message(CHANNEL, f"<@{BOT_USER_ID}> make it pop", files=[stub])
    await slack_fake.send_event(slack_fake.message_event(CHANNEL, msg, kind="app_mention"))
    await slack_fake.wait_for("files.completeUploadExternal")
    assert slack_fake.calls_to("files.info")[0].args["file"] == file["id"]
    assert len(edits(openai_fake)) == 1


async def test_reply_images_are_extra_inputs(
    slack_fake: FakeSlack, openai_fake: FakeOpenAI, start_slack: Any
) -> None:
    running = await start_slack("socket")
    root, job_id = await slash_result(slack_fake)
    hat = slack_fake.add_file(png(color=(0, 0, 255)), "hat.png")
    reply = slack_fake.add_message(CHANNEL, "give it this hat", thread_ts=root, files=[hat])
    await slack_fake.send_event(slack_fake.message_event(CHANNEL, reply))
    await slack_fake.wait_for("files.completeUploadExternal", count=2)
    (edit,) = edits(openai_fake)
    first = (await running.app.store.job_images(job_id))[0].read_bytes()
    assert [f.field for f in edit.files] == ["image[]", "image[]"]
    assert edit.files[0].data == first
    assert edit.files[1].data == slack_fake.file_bytes[hat["id"]][0]


async def test_reply_with_a_mask_masks_the_newest_image(
    slack_fake: FakeSlack, openai_fake: FakeOpenAI, start_slack: Any
) -> None:
    running = await start_slack("socket")
    root, job_id = await slash_result(slack_fake)
    newest = (await running.app.store.job_images(job_id))[0].read_bytes()
    with Image.open(io.BytesIO(newest)) as im:
        size = im.size
    mask = slack_fake.add_file(mask_png(*size), "mask.png")
    reply = slack_fake.add_message(CHANNEL, "replace the sky", thread_ts=root, files=[mask])
    await slack_fake.send_event(slack_fake.message_event(CHANNEL, reply))
    await slack_fake.wait_for("files.completeUploadExternal", count=2)
    (edit,) = edits(openai_fake)
    assert [f.field for f in edit.files] == ["image", "mask"]
    assert edit.files[0].data == newest


async def test_reply_flags_win_over_the_edited_jobs_options(
    slack_fake: FakeSlack, openai_fake: FakeOpenAI, start_slack: Any
) -> None:
    await start_slack("socket")
    root, _ = await slash_result(slack_fake, "a harbour --size 1536x1024 --format webp")
    reply = slack_fake.add_message(CHANNEL, "make it night --quality high", thread_ts=root)
    await slack_fake.send_event(slack_fake.message_event(CHANNEL, reply))
    await slack_fake.wait_for("chat.update", lambda c: "done in" in text_of(c), count=2)
    (edit,) = edits(openai_fake)
    assert edit.form["prompt"] == "make it night"
    assert edit.form["quality"] == "high"  # the reply's own flag
    assert (edit.form["size"], edit.form["output_format"]) == ("1536x1024", "webp")  # kept
