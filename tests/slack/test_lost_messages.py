"""A deleted placeholder, a refused upload or a silent image service: the user still hears."""

from __future__ import annotations

from typing import Any

from adapters.slack.rate import MAX_RATE_LIMIT_RETRIES
from tests.fakes.app_fixtures import ProviderGate
from tests.fakes.openai_server import FakeOpenAI
from tests.fakes.slack_server import BOT_USER_ID, FakeSlack
from tests.fakes.slack_steps import CHANNEL, click, posted, text_of


def buttons_job(call: Any) -> str:
    """The job id on the result buttons of a chat.update / chat.postMessage call."""
    actions = next(b for b in call.args["blocks"] if b["type"] == "actions")
    return str(actions["elements"][0]["value"])


def shows_result(fake: FakeSlack, call: Any) -> bool:
    """A "done" update of a message that exists (an update of a deleted one fails)."""
    return "done in" in text_of(call) and fake.message(CHANNEL, str(call.args["ts"])) is not None


async def test_a_deleted_slash_placeholder_gets_the_result_posted_afresh(
    slack_fake: FakeSlack, openai_fake: FakeOpenAI, start_slack: Any
) -> None:
    running = await start_slack("socket")
    gate = ProviderGate.hold(running.app)
    await slack_fake.send_command(slack_fake.command_payload("a windmill"))
    await slack_fake.wait_for("chat.postMessage")
    [first] = _bot_messages(slack_fake)
    slack_fake.delete_by_user(CHANNEL, first["ts"])
    gate.release.set()

    [done] = await slack_fake.wait_for("chat.update", lambda c: shows_result(slack_fake, c))
    ts = str(done.args["ts"])
    shown = posted(slack_fake, ts)  # a new message, still there
    assert ts != first["ts"]
    assert "a windmill" in shown["text"]
    [upload] = [u for u in slack_fake.uploads.values() if u.completed]
    assert upload.thread_ts == ts and upload.channel_id == CHANNEL
    job = await running.app.store.job_for_message("slack", f"{CHANNEL}:{ts}")
    assert job is not None and job.id == buttons_job(done) and job.status == "succeeded"


async def test_a_deleted_thread_placeholder_gets_the_result_posted_in_the_thread(
    slack_fake: FakeSlack, openai_fake: FakeOpenAI, start_slack: Any
) -> None:
    running = await start_slack("socket")
    gate = ProviderGate.hold(running.app)
    msg = slack_fake.add_message(CHANNEL, f"<@{BOT_USER_ID}> a lighthouse at dusk")
    await slack_fake.send_event(slack_fake.message_event(CHANNEL, msg, kind="app_mention"))
    await slack_fake.wait_for("chat.postMessage")
    [first] = _bot_messages(slack_fake)
    slack_fake.delete_by_user(CHANNEL, first["ts"])
    gate.release.set()

    [done] = await slack_fake.wait_for("chat.update", lambda c: shows_result(slack_fake, c))
    shown = posted(slack_fake, str(done.args["ts"]))
    assert shown["thread_ts"] == msg["ts"] and shown["ts"] != first["ts"]
    [upload] = [u for u in slack_fake.uploads.values() if u.completed]
    assert upload.thread_ts == msg["ts"]
    job = await running.app.store.job_for_message("slack", f"{CHANNEL}:{shown['ts']}")
    assert job is not None and job.status == "succeeded"


async def test_a_refused_upload_keeps_the_job_and_its_buttons(
    slack_fake: FakeSlack, openai_fake: FakeOpenAI, start_slack: Any
) -> None:
    running = await start_slack("socket")
    slack_fake.fail_next("files.completeUploadExternal", "internal_error")
    await slack_fake.send_command(slack_fake.command_payload("a boat"))
    [told] = await slack_fake.wait_for("chat.postEphemeral")
    text = text_of(told)
    assert "Slack wouldn't take the upload" in text and "Regenerate or Edit" in text
    assert "Traceback" not in text
    [final] = await slack_fake.wait_for("chat.update", lambda c: "made, but" in text_of(c))
    job_id = buttons_job(final)
    assert f"(job `{job_id}`)" in text
    job = await running.app.store.get_job(job_id)
    assert job is not None and job.status == "succeeded"
    assert await running.app.store.job_images(job_id)

    # Regenerate on that message works and this time the upload goes through.
    message = posted(slack_fake, str(final.args["ts"]))
    await click(slack_fake, "UALICE", message, "imagine_regenerate", job_id)
    await slack_fake.wait_for("chat.update", lambda c: "done in" in text_of(c))
    assert [u for u in slack_fake.uploads.values() if u.completed]


async def test_an_image_service_timeout_ends_the_placeholder(
    slack_fake: FakeSlack, openai_fake: FakeOpenAI, start_slack: Any
) -> None:
    running = await start_slack("socket", openai_timeout=0.2, openai_max_retries=0)
    openai_fake.fail_next("timeout", seconds=30)
    await slack_fake.send_command(slack_fake.command_payload("a slow sunset"))
    [told] = await slack_fake.wait_for("chat.postEphemeral")
    assert "unavailable right now" in text_of(told) and "Nothing was charged" in text_of(told)
    [closed] = await slack_fake.wait_for("chat.update", lambda c: "not made" in text_of(c))
    assert "unavailable" in text_of(closed) and "nothing was charged" in text_of(closed)
    assert "try again" in text_of(closed)
    assert "unavailable" in posted(slack_fake, str(closed.args["ts"]))["text"]
    usage = await running.app.store.usage_summary("slack:UALICE")
    assert all(row.images_today == 0 for row in usage)


def _bot_messages(fake: FakeSlack) -> list[dict[str, Any]]:
    return [m for m in fake.messages.get(CHANNEL, []) if m.get("user") == BOT_USER_ID]


async def test_a_result_message_slack_keeps_refusing_still_leaves_the_images_usable(
    slack_fake: FakeSlack, openai_fake: FakeOpenAI, start_slack: Any
) -> None:
    running = await start_slack("socket")
    # More rate-limit answers than the client's retries wait out.
    slack_fake.fail_when(
        "chat.update",
        lambda args: "done in" in str(args.get("text")),
        "ratelimited",
        times=MAX_RATE_LIMIT_RETRIES + 1,
    )
    await slack_fake.send_command(slack_fake.command_payload("a kite"))
    [told] = await slack_fake.wait_for("chat.postEphemeral")
    assert "Your image is in the thread" in text_of(told) and "ratelimited" in text_of(told)
    [upload] = [u for u in slack_fake.uploads.values() if u.completed]
    job = await running.app.store.job_for_message("slack", f"{CHANNEL}:{upload.thread_ts}")
    assert job is not None and job.status == "succeeded" and f"(job `{job.id}`)" in text_of(told)


async def test_removed_from_the_channel_mid_job_says_the_image_was_made(
    slack_fake: FakeSlack, openai_fake: FakeOpenAI, start_slack: Any, caplog: Any
) -> None:
    running = await start_slack("socket")
    gate = ProviderGate.hold(running.app)
    await slack_fake.send_command(slack_fake.command_payload("a fox"))
    await slack_fake.wait_for("chat.postMessage")
    slack_fake.outside.add(CHANNEL)  # someone removed the bot from the channel
    gate.release.set()

    await slack_fake.wait_until(lambda: bool(slack_fake.responses))
    text = slack_fake.responses[0]["text"]
    assert "Your image was made" in text and "not_in_channel" in text
    assert "nothing was charged" not in text  # it was made, and counted
    job_id = text.split("(job `", 1)[1].split("`)", 1)[0]
    job = await running.app.store.get_job(job_id)
    assert job is not None and job.status == "succeeded"
    warned = [r for r in caplog.records if r.levelname == "WARNING" and job_id in r.getMessage()]
    assert warned


async def test_a_broken_file_transfer_keeps_the_job_and_says_so_plainly(
    slack_fake: FakeSlack, openai_fake: FakeOpenAI, start_slack: Any
) -> None:
    running = await start_slack("socket")
    slack_fake.failing_uploads = 1
    await slack_fake.send_command(slack_fake.command_payload("a boat"))
    [told] = await slack_fake.wait_for("chat.postEphemeral")
    text = text_of(told)
    assert "wouldn't take the upload (the connection failed)" in text
    assert "Error" not in text and "status" not in text
    [final] = await slack_fake.wait_for("chat.update", lambda c: "made, but" in text_of(c))
    job = await running.app.store.get_job(buttons_job(final))
    assert job is not None and job.status == "succeeded"
    assert not [u for u in slack_fake.uploads.values() if u.completed]
