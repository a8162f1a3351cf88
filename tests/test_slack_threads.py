"""Mentions, thread replies, the Edit image shortcut and result buttons on a fake Slack."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest
from PIL import Image

from tests.fakes.openai_server import FakeOpenAI, RecordedRequest
from tests.fakes.slack_server import BOT_USER_ID, FakeSlack, SlackCall

TRANSPORTS = ["socket", "http"]
CHANNEL = "C0GENERAL"


def png(width: int = 64, height: int = 64, color: tuple[int, int, int] = (200, 30, 30)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), color).save(out, "PNG")
    return out.getvalue()


def mask_png(width: int = 64, height: int = 64) -> bytes:
    im = Image.new("RGBA", (width, height), (0, 0, 0, 255))
    im.paste((0, 0, 0, 0), (0, 0, width // 2, height // 2))
    out = io.BytesIO()
    im.save(out, "PNG")
    return out.getvalue()


def _text(call: SlackCall) -> str:
    return str(call.args.get("text", ""))


def _edits(fake: FakeOpenAI) -> list[RecordedRequest]:
    return [r for r in fake.requests if r.path.endswith("/edits")]


async def _slash_result(fake: FakeSlack, prompt: str = "a red square") -> tuple[str, str]:
    """Run /imagine; return the placeholder ts (the thread root) and the job id on its buttons."""
    await fake.send_command(fake.command_payload(prompt))
    final = await fake.wait_for("chat.update", lambda c: "done in" in _text(c))
    actions = next(b for b in final[-1].args["blocks"] if b["type"] == "actions")
    return str(final[-1].args["ts"]), str(actions["elements"][0]["value"])


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
    (edit,) = _edits(openai_fake)
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
    # One more retry after the job finished must not start another either.
    await slack_fake.send_event(mention, retry_num=2)
    assert len(openai_fake.requests) == 1
    assert len(slack_fake.calls_to("chat.postMessage")) == 1


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
    root, job_id = await _slash_result(slack_fake)
    for step, prompt in enumerate(["make it night", "add snow", "add a fox"], start=1):
        before = await running.app.store.job_images(job_id)
        reply = slack_fake.add_message(CHANNEL, prompt, user="UBOB", thread_ts=root)
        await slack_fake.send_event(slack_fake.message_event(CHANNEL, reply))
        await slack_fake.wait_for("chat.update", lambda c: "done in" in _text(c), count=step + 1)
        edit = _edits(openai_fake)[-1]
        assert edit.form["prompt"] == prompt
        assert edit.files[0].data == before[0].read_bytes()  # the newest image in the thread
        job = await running.app.store.job_for_message("slack", f"{CHANNEL}:{root}")
        assert job is not None and job.parent_job_id == job_id
        job_id = job.id
    uploads = slack_fake.calls_to("files.completeUploadExternal")
    assert [u.args["thread_ts"] for u in uploads] == [root] * 4
    assert len(_edits(openai_fake)) == 3


async def test_ignores_chatter_other_bots_and_itself(
    slack_fake: FakeSlack, openai_fake: FakeOpenAI, start_slack: Any
) -> None:
    await start_slack("socket")
    root, _ = await _slash_result(slack_fake)
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
    assert [r.form.get("prompt") for r in _edits(openai_fake)] == ["make it green"]


@pytest.mark.parametrize("mode", TRANSPORTS)
async def test_shortcut_opens_modal_and_posts_edit_in_that_thread(
    mode: str, slack_fake: FakeSlack, openai_fake: FakeOpenAI, start_slack: Any
) -> None:
    await start_slack(mode)
    photo = slack_fake.add_file(png(color=(1, 2, 3)), "photo.png")
    msg = slack_fake.add_message(CHANNEL, "our team photo", user="UBOB", files=[photo])
    await slack_fake.send_interactive(slack_fake.shortcut_payload("UALICE", CHANNEL, msg))
    opened = await slack_fake.wait_for("views.open")
    view = opened[0].args["view"]
    assert view["title"]["text"] == "Edit image"
    # An empty prompt is refused inside the modal.
    empty = await slack_fake.send_interactive(
        slack_fake.view_submission_payload("UALICE", view, {"prompt": {"prompt": {"value": ""}}})
    )
    refusal = empty["payload"] if mode == "socket" else json.loads(empty[1])
    assert refusal["response_action"] == "errors" and "prompt" in refusal["errors"]
    values = {"prompt": {"prompt": {"type": "plain_text_input", "value": "add party hats"}}}
    await slack_fake.send_interactive(slack_fake.view_submission_payload("UALICE", view, values))
    complete = await slack_fake.wait_for("files.completeUploadExternal")
    assert complete[0].args["thread_ts"] == msg["ts"]
    (edit,) = _edits(openai_fake)
    assert edit.form["prompt"] == "add party hats"
    assert _text(slack_fake.calls_to("chat.postMessage")[0]).startswith("<@UALICE>: add party")


async def test_shortcut_on_message_without_image_says_so(
    slack_fake: FakeSlack, openai_fake: FakeOpenAI, start_slack: Any
) -> None:
    await start_slack("socket")
    msg = slack_fake.add_message(CHANNEL, "just words", user="UBOB")
    await slack_fake.send_interactive(slack_fake.shortcut_payload("UALICE", CHANNEL, msg))
    shown = await slack_fake.wait_for("chat.postEphemeral")
    assert "no image" in _text(shown[0])
    assert not slack_fake.calls_to("views.open")


@pytest.mark.parametrize("mode", TRANSPORTS)
async def test_buttons_work_after_a_restart(
    mode: str, slack_fake: FakeSlack, openai_fake: FakeOpenAI, start_slack: Any
) -> None:
    first = await start_slack(mode)
    root, job_id = await _slash_result(slack_fake, "a lighthouse")
    await first.stop()
    second = await start_slack(mode)
    result = slack_fake.message(CHANNEL, root)
    assert result is not None

    await slack_fake.send_interactive(
        slack_fake.block_action_payload("UBOB", CHANNEL, result, "imagine_regenerate", job_id)
    )
    await slack_fake.wait_for("files.completeUploadExternal", count=2)
    again = openai_fake.requests[-1].json
    assert again is not None and again["prompt"] == "a lighthouse"
    assert slack_fake.calls_to("files.completeUploadExternal")[-1].args["thread_ts"] == root

    await slack_fake.send_interactive(
        slack_fake.block_action_payload("UBOB", CHANNEL, result, "imagine_edit_button", job_id)
    )
    view = (await slack_fake.wait_for("views.open"))[0].args["view"]
    values = {"prompt": {"prompt": {"value": "paint it purple"}}}
    await slack_fake.send_interactive(slack_fake.view_submission_payload("UBOB", view, values))
    await slack_fake.wait_for("files.completeUploadExternal", count=3)
    (edit,) = _edits(openai_fake)
    original = await second.app.store.job_images(job_id)
    assert edit.form["prompt"] == "paint it purple"
    assert edit.files[0].data == original[0].read_bytes()


async def test_delete_by_requester_or_admin_only(
    slack_fake: FakeSlack, openai_fake: FakeOpenAI, start_slack: Any
) -> None:
    await start_slack("socket")
    root, job_id = await _slash_result(slack_fake)
    result = slack_fake.message(CHANNEL, root)
    assert result is not None
    file_ids = [u.file_id for u in slack_fake.uploads.values() if u.channel_id]
    await slack_fake.send_interactive(
        slack_fake.block_action_payload("UBOB", CHANNEL, result, "imagine_delete", job_id)
    )
    refused = await slack_fake.wait_for("chat.postEphemeral")
    assert refused[0].args["user"] == "UBOB"
    assert "Only <@UALICE> or a workspace admin" in _text(refused[0])
    assert slack_fake.message(CHANNEL, root) is not None
    await slack_fake.send_interactive(
        slack_fake.block_action_payload("UADMIN", CHANNEL, result, "imagine_delete", job_id)
    )
    await slack_fake.wait_for("chat.delete")
    assert slack_fake.message(CHANNEL, root) is None
    assert {c.args["file"] for c in slack_fake.calls_to("files.delete")} == set(file_ids)
    assert all(f not in slack_fake.files for f in file_ids)


async def test_requester_can_delete_their_own(
    slack_fake: FakeSlack, openai_fake: FakeOpenAI, start_slack: Any
) -> None:
    await start_slack("http")
    root, job_id = await _slash_result(slack_fake)
    result = slack_fake.message(CHANNEL, root)
    assert result is not None
    await slack_fake.send_interactive(
        slack_fake.block_action_payload("UALICE", CHANNEL, result, "imagine_delete", job_id)
    )
    await slack_fake.wait_for("chat.delete")
    assert slack_fake.message(CHANNEL, root) is None
    assert not slack_fake.calls_to("users.info") and not slack_fake.calls_to("chat.postEphemeral")


async def test_button_for_unknown_job_says_so(
    slack_fake: FakeSlack, openai_fake: FakeOpenAI, start_slack: Any
) -> None:
    await start_slack("socket")
    msg = slack_fake.add_message(CHANNEL, "old result", user=BOT_USER_ID)
    await slack_fake.send_interactive(
        slack_fake.block_action_payload("UALICE", CHANNEL, msg, "imagine_regenerate", "nope")
    )
    shown = await slack_fake.wait_for("chat.postEphemeral")
    assert "can't find that image" in _text(shown[0])
    assert not openai_fake.requests


@pytest.mark.parametrize(
    ("setup", "expected"),
    [
        ("login_page", "sign-in page"),
        ("foreign_host", "isn't stored on Slack"),
        ("too_big", "the limit is"),
        ("not_image", "isn't an image"),
    ],
)
async def test_file_problems_are_explained(
    setup: str, expected: str, slack_fake: FakeSlack, openai_fake: FakeOpenAI, start_slack: Any
) -> None:
    await start_slack("socket", imagine_max_attachment_mb=0.05)
    data = png() if setup != "too_big" else png(400, 400) + b"\0" * 60_000
    file = slack_fake.add_file(data, "pic.png")
    if setup == "login_page":
        slack_fake.login_page_files.add(file["id"])
    elif setup == "foreign_host":
        file["url_private"] = file["url_private_download"] = "https://evil.example.com/pic.png"
    elif setup == "not_image":
        file.update(name="notes.pdf", mimetype="application/pdf", filetype="pdf")
    msg = slack_fake.add_message(CHANNEL, f"<@{BOT_USER_ID}> edit this", files=[file])
    await slack_fake.send_event(slack_fake.message_event(CHANNEL, msg, kind="app_mention"))
    shown = await slack_fake.wait_for("chat.postEphemeral")
    assert expected in _text(shown[0]) and _text(shown[0]).startswith("Can't use ")
    assert not openai_fake.requests and not slack_fake.calls_to("chat.postMessage")


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
    assert len(_edits(openai_fake)) == 1


async def test_reply_images_are_extra_inputs(
    slack_fake: FakeSlack, openai_fake: FakeOpenAI, start_slack: Any
) -> None:
    running = await start_slack("socket")
    root, job_id = await _slash_result(slack_fake)
    hat = slack_fake.add_file(png(color=(0, 0, 255)), "hat.png")
    reply = slack_fake.add_message(CHANNEL, "give it this hat", thread_ts=root, files=[hat])
    await slack_fake.send_event(slack_fake.message_event(CHANNEL, reply))
    await slack_fake.wait_for("files.completeUploadExternal", count=2)
    (edit,) = _edits(openai_fake)
    first = (await running.app.store.job_images(job_id))[0].read_bytes()
    assert [f.field for f in edit.files] == ["image[]", "image[]"]
    assert edit.files[0].data == first
    assert edit.files[1].data == slack_fake.file_bytes[hat["id"]][0]


async def test_shortcut_on_a_result_edits_its_job_image(
    slack_fake: FakeSlack, openai_fake: FakeOpenAI, start_slack: Any
) -> None:
    running = await start_slack("socket")
    root, job_id = await _slash_result(slack_fake)
    result = slack_fake.message(CHANNEL, root)
    assert result is not None
    await slack_fake.send_interactive(slack_fake.shortcut_payload("UBOB", CHANNEL, result))
    view = (await slack_fake.wait_for("views.open"))[0].args["view"]
    assert json.loads(view["private_metadata"])["j"] == job_id
    values = {"prompt": {"prompt": {"value": "turn it into a mosaic"}}}
    await slack_fake.send_interactive(slack_fake.view_submission_payload("UBOB", view, values))
    done = await slack_fake.wait_for("files.completeUploadExternal", count=2)
    assert done[-1].args["thread_ts"] == root
    (edit,) = _edits(openai_fake)
    assert edit.files[0].data == (await running.app.store.job_images(job_id))[0].read_bytes()
    assert not slack_fake.downloads  # the stored image was used, nothing fetched from Slack


async def test_reply_with_a_mask_masks_the_newest_image(
    slack_fake: FakeSlack, openai_fake: FakeOpenAI, start_slack: Any
) -> None:
    running = await start_slack("socket")
    root, job_id = await _slash_result(slack_fake)
    newest = (await running.app.store.job_images(job_id))[0].read_bytes()
    with Image.open(io.BytesIO(newest)) as im:
        size = im.size
    mask = slack_fake.add_file(mask_png(*size), "mask.png")
    reply = slack_fake.add_message(CHANNEL, "replace the sky", thread_ts=root, files=[mask])
    await slack_fake.send_event(slack_fake.message_event(CHANNEL, reply))
    await slack_fake.wait_for("files.completeUploadExternal", count=2)
    (edit,) = _edits(openai_fake)
    assert [f.field for f in edit.files] == ["image", "mask"]
    assert edit.files[0].data == newest
