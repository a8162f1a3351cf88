"""The Edit image shortcut, its modal, and the Regenerate / Edit / Delete buttons."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.fakes.openai_server import FakeOpenAI
from tests.fakes.slack_server import BOT_USER_ID, FakeSlack
from tests.fakes.slack_steps import (
    CHANNEL,
    TRANSPORTS,
    click,
    edits,
    png,
    posted,
    slash_result,
    text_of,
)


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
    (edit,) = edits(openai_fake)
    assert edit.form["prompt"] == "add party hats"
    assert text_of(slack_fake.calls_to("chat.postMessage")[0]).startswith("<@UALICE>: add party")


async def test_shortcut_on_message_without_image_says_so(
    slack_fake: FakeSlack, openai_fake: FakeOpenAI, start_slack: Any
) -> None:
    await start_slack("socket")
    msg = slack_fake.add_message(CHANNEL, "just words", user="UBOB")
    await slack_fake.send_interactive(slack_fake.shortcut_payload("UALICE", CHANNEL, msg))
    shown = await slack_fake.wait_for("chat.postEphemeral")
    assert "no image" in text_of(shown[0])
    assert not slack_fake.calls_to("views.open")


async def test_shortcut_on_a_result_edits_its_job_image(
    slack_fake: FakeSlack, openai_fake: FakeOpenAI, start_slack: Any
) -> None:
    running = await start_slack("socket")
    root, job_id = await slash_result(slack_fake)
    result = posted(slack_fake, root)
    await slack_fake.send_interactive(slack_fake.shortcut_payload("UBOB", CHANNEL, result))
    view = (await slack_fake.wait_for("views.open"))[0].args["view"]
    assert json.loads(view["private_metadata"])["j"] == job_id
    values = {"prompt": {"prompt": {"value": "turn it into a mosaic"}}}
    await slack_fake.send_interactive(slack_fake.view_submission_payload("UBOB", view, values))
    done = await slack_fake.wait_for("files.completeUploadExternal", count=2)
    assert done[-1].args["thread_ts"] == root
    (edit,) = edits(openai_fake)
    assert edit.files[0].data == (await running.app.store.job_images(job_id))[0].read_bytes()
    assert not slack_fake.downloads  # the stored image was used, nothing fetched from Slack


@pytest.mark.parametrize("mode", TRANSPORTS)
async def test_buttons_work_after_a_restart(
    mode: str, slack_fake: FakeSlack, openai_fake: FakeOpenAI, start_slack: Any
) -> None:
    first = await start_slack(mode)
    root, job_id = await slash_result(slack_fake, "a lighthouse")
    await first.stop()
    second = await start_slack(mode)
    result = posted(slack_fake, root)

    await click(slack_fake, "UBOB", result, "imagine_regenerate", job_id)
    await slack_fake.wait_for("files.completeUploadExternal", count=2)
    again = openai_fake.requests[-1].json
    assert again is not None and again["prompt"] == "a lighthouse"
    assert slack_fake.calls_to("files.completeUploadExternal")[-1].args["thread_ts"] == root

    await click(slack_fake, "UBOB", result, "imagine_edit_button", job_id)
    view = (await slack_fake.wait_for("views.open"))[0].args["view"]
    values = {"prompt": {"prompt": {"value": "paint it purple"}}}
    await slack_fake.send_interactive(slack_fake.view_submission_payload("UBOB", view, values))
    await slack_fake.wait_for("files.completeUploadExternal", count=3)
    (edit,) = edits(openai_fake)
    original = await second.app.store.job_images(job_id)
    assert edit.form["prompt"] == "paint it purple"
    assert edit.files[0].data == original[0].read_bytes()


async def test_delete_by_requester_or_admin_only(
    slack_fake: FakeSlack, openai_fake: FakeOpenAI, start_slack: Any
) -> None:
    await start_slack("socket")
    root, job_id = await slash_result(slack_fake)
    result = posted(slack_fake, root)
    file_ids = [u.file_id for u in slack_fake.uploads.values() if u.channel_id]
    await click(slack_fake, "UBOB", result, "imagine_delete", job_id)
    refused = await slack_fake.wait_for("chat.postEphemeral")
    assert refused[0].args["user"] == "UBOB"
    assert text_of(refused[0]) == "Only <@UALICE> or a workspace admin can delete this image."
    # Bob was looked up and is no admin; nothing of the result was touched.
    assert [c.args["user"] for c in slack_fake.calls_to("users.info")] == ["UBOB"]
    assert slack_fake.message(CHANNEL, root) is not None
    assert not slack_fake.calls_to("chat.delete") and not slack_fake.calls_to("files.delete")
    assert all(f in slack_fake.files for f in file_ids)
    await click(slack_fake, "UADMIN", result, "imagine_delete", job_id)
    await slack_fake.wait_for("chat.delete")
    assert slack_fake.message(CHANNEL, root) is None
    assert {c.args["file"] for c in slack_fake.calls_to("files.delete")} == set(file_ids)
    assert all(f not in slack_fake.files for f in file_ids)


async def test_requester_can_delete_their_own(
    slack_fake: FakeSlack, openai_fake: FakeOpenAI, start_slack: Any
) -> None:
    await start_slack("http")
    root, job_id = await slash_result(slack_fake)
    result = posted(slack_fake, root)
    await click(slack_fake, "UALICE", result, "imagine_delete", job_id)
    await slack_fake.wait_for("chat.delete")
    assert slack_fake.message(CHANNEL, root) is None
    assert not slack_fake.calls_to("users.info") and not slack_fake.calls_to("chat.postEphemeral")


async def test_button_for_unknown_job_says_so(
    slack_fake: FakeSlack, openai_fake: FakeOpenAI, start_slack: Any
) -> None:
    await start_slack("socket")
    msg = slack_fake.add_message(CHANNEL, "old result", user=BOT_USER_ID)
    await click(slack_fake, "UALICE", msg, "imagine_regenerate", "nope")
    shown = await slack_fake.wait_for("chat.postEphemeral")
    assert "can't find that image" in text_of(shown[0])
    assert not openai_fake.requests


async def test_deleting_a_result_someone_just_deleted_is_quiet(
    slack_fake: FakeSlack, openai_fake: FakeOpenAI, start_slack: Any
) -> None:
    await start_slack("socket")
    root, job_id = await slash_result(slack_fake)
    result = posted(slack_fake, root)
    # An admin deleted it while the button was still on Alice's screen.
    slack_fake.delete_by_user(CHANNEL, root)
    await click(slack_fake, "UALICE", result, "imagine_delete", job_id)
    deleted = await slack_fake.wait_for("chat.delete")
    assert deleted[0].args["ts"] == root
    # The next request is handled as usual and nobody was told of an error.
    await slash_result(slack_fake, "a second one")
    assert not slack_fake.calls_to("chat.postEphemeral")
