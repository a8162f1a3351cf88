"""The Edit modal is one real Slack opens: its prompt field takes as much as Slack allows."""

from __future__ import annotations

from typing import Any

import pytest

from tests.fakes.openai_server import FakeOpenAI
from tests.fakes.slack_blockkit import view_problem
from tests.fakes.slack_server import FakeSlack
from tests.fakes.slack_steps import CHANNEL, click, edits, png, posted, slash_result

# Slack docs: plain_text_input max_length is at most 3000, so no one can type more in the modal.
LONGEST = 3000
PROMPT = " ".join(["a misty harbour at dawn"] * 200)[:LONGEST].strip()


async def open_modal(fake: FakeSlack, how: str) -> dict[str, Any]:
    """Open the Edit modal from a result's Edit button or from the shortcut on a user's photo."""
    if how == "button":
        root, job_id = await slash_result(fake, "a lighthouse")
        await click(fake, "UBOB", posted(fake, root), "imagine_edit_button", job_id)
    else:
        photo = fake.add_file(png(color=(9, 9, 9)), "photo.png")
        msg = fake.add_message(CHANNEL, "our photo", user="UBOB", files=[photo])
        await fake.send_interactive(fake.shortcut_payload("UALICE", CHANNEL, msg))
    opened = await fake.wait_for("views.open")
    view: dict[str, Any] = opened[-1].args["view"]
    return view


@pytest.mark.parametrize("how", ["button", "shortcut"])
async def test_the_edit_modal_opens_on_slack_and_takes_a_3000_character_prompt(
    how: str, slack_fake: FakeSlack, openai_fake: FakeOpenAI, start_slack: Any
) -> None:
    await start_slack("socket")
    view = await open_modal(slack_fake, how)
    element = view["blocks"][-1]["element"]
    assert element["type"] == "plain_text_input"
    assert element["max_length"] == LONGEST
    # What views.open was sent is a modal Slack accepts (it answered invalid_arguments before).
    assert view_problem(view, slack_fake._image_ok) is None

    values = {"prompt": {"prompt": {"type": "plain_text_input", "value": PROMPT}}}
    user = "UBOB" if how == "button" else "UALICE"
    await slack_fake.send_interactive(slack_fake.view_submission_payload(user, view, values))
    await slack_fake.wait_for("files.completeUploadExternal", count=2 if how == "button" else 1)
    (edit,) = edits(openai_fake)
    assert len(PROMPT) > LONGEST - 30
    assert edit.form["prompt"] == PROMPT
    # Nobody was told something went wrong.
    assert not slack_fake.calls_to("chat.postEphemeral")
