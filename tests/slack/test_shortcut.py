"""The Edit image shortcut on a message with many long-named files: the modal keeps only ids."""

from __future__ import annotations

import json
from typing import Any

from tests.fakes.openai_server import FakeOpenAI
from tests.fakes.slack_blockkit import PRIVATE_METADATA, view_problem
from tests.fakes.slack_server import FakeSlack
from tests.fakes.slack_steps import CHANNEL, edits, mask_png, png, text_of

PROMPT = {"prompt": {"prompt": {"type": "plain_text_input", "value": "make them all blue"}}}


def long_name(i: int, prefix: str = "holiday") -> str:
    """A file name of about 100 characters, as cameras and exports make them."""
    return f"{prefix}-{i:02d}-" + "x" * (95 - len(prefix)) + ".png"


def share_photos(fake: FakeSlack, count: int, *, mask: bool = True) -> dict[str, Any]:
    """A message from Bob with ``count`` photos (and a mask) of ~100-character names."""
    files = [fake.add_file(png(color=(i, 2 * i, 3 * i)), long_name(i)) for i in range(count)]
    if mask:
        files.append(fake.add_file(mask_png(), long_name(0, prefix="mask")))
    return fake.add_message(CHANNEL, "the whole album", user="UBOB", files=files)


async def test_shortcut_on_16_long_named_images_and_a_mask_edits_them_all(
    slack_fake: FakeSlack, openai_fake: FakeOpenAI, start_slack: Any
) -> None:
    await start_slack("socket")
    msg = share_photos(slack_fake, 16)
    assert all(len(f["name"]) >= 100 for f in msg["files"])
    await slack_fake.send_interactive(slack_fake.shortcut_payload("UALICE", CHANNEL, msg))
    view = (await slack_fake.wait_for("views.open"))[0].args["view"]
    # Slack refuses private_metadata over 3000 characters (it did with 8 such files).
    assert len(view["private_metadata"]) < PRIVATE_METADATA
    assert view_problem(view, slack_fake._image_ok) is None
    assert "holiday-00-" in view["blocks"][0]["elements"][0]["text"]  # what is being edited

    await slack_fake.send_interactive(slack_fake.view_submission_payload("UALICE", view, PROMPT))
    complete = await slack_fake.wait_for("files.completeUploadExternal")
    assert complete[0].args["thread_ts"] == msg["ts"]
    (edit,) = edits(openai_fake)
    assert edit.form["prompt"] == "make them all blue"
    assert [f.field for f in edit.files] == ["image[]"] * 16 + ["mask"]
    # Every file was looked up again by its id, then downloaded.
    looked_up = [c.args["file"] for c in slack_fake.calls_to("files.info")]
    assert looked_up == [f["id"] for f in msg["files"]]
    assert {d.file_id for d in slack_fake.downloads} == {f["id"] for f in msg["files"]}
    assert not slack_fake.calls_to("chat.postEphemeral")


async def test_a_file_deleted_before_the_modal_is_sent_is_explained_and_nothing_is_paid(
    slack_fake: FakeSlack, openai_fake: FakeOpenAI, start_slack: Any
) -> None:
    await start_slack("socket")
    msg = share_photos(slack_fake, 2, mask=False)
    await slack_fake.send_interactive(slack_fake.shortcut_payload("UALICE", CHANNEL, msg))
    view = (await slack_fake.wait_for("views.open"))[0].args["view"]
    del slack_fake.files[msg["files"][1]["id"]]  # Bob deleted a photo meanwhile
    await slack_fake.send_interactive(slack_fake.view_submission_payload("UALICE", view, PROMPT))
    shown = await slack_fake.wait_for("chat.postEphemeral")
    assert shown[0].args["user"] == "UALICE"
    assert text_of(shown[0]) == (
        "Can't use an image of that message: Slack can't find it any more (file_not_found); "
        "it may have been deleted. Share it again and use Edit image once more."
    )
    assert not openai_fake.requests


async def test_a_message_with_more_images_than_an_edit_takes_is_refused_at_once(
    slack_fake: FakeSlack, openai_fake: FakeOpenAI, start_slack: Any
) -> None:
    await start_slack("socket")
    msg = share_photos(slack_fake, 18, mask=False)
    await slack_fake.send_interactive(slack_fake.shortcut_payload("UALICE", CHANNEL, msg))
    shown = await slack_fake.wait_for("chat.postEphemeral")
    assert text_of(shown[0]) == (
        "That message has 18 images; at most 16 can be edited together (and a mask)."
    )
    assert not slack_fake.calls_to("views.open")
    assert not openai_fake.requests
    assert json.dumps(shown[0].args).count("xxxx") == 0  # no file names dumped on the user
