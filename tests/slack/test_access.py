"""Every way into a job obeys the channel list; the edit form's flags count; gone images say so."""

from __future__ import annotations

import json
import shutil
from typing import Any

from tests.fakes.openai_server import FakeOpenAI
from tests.fakes.slack_server import FakeSlack
from tests.fakes.slack_steps import CHANNEL, click, edits, posted, slash_result, text_of


async def test_the_channel_list_holds_for_shortcut_buttons_and_form(
    slack_fake: FakeSlack, openai_fake: FakeOpenAI, start_slack: Any
) -> None:
    first = await start_slack("socket")
    root, job_id = await slash_result(slack_fake, "a lighthouse")
    result = posted(slack_fake, root)
    await click(slack_fake, "UBOB", result, "imagine_edit_button", job_id)
    view = (await slack_fake.wait_for("views.open"))[0].args["view"]
    await first.stop()
    # The operator now keeps the bot to another channel.
    await start_slack("socket", slack_allowed_channels="C0ART")

    await click(slack_fake, "UBOB", result, "imagine_regenerate", job_id)
    await click(slack_fake, "UBOB", result, "imagine_edit_button", job_id)
    await slack_fake.send_interactive(slack_fake.shortcut_payload("UBOB", CHANNEL, result))
    values = {"prompt": {"prompt": {"value": "paint it purple"}}}
    await slack_fake.send_interactive(slack_fake.view_submission_payload("UBOB", view, values))

    refused = await slack_fake.wait_for("chat.postEphemeral", count=4)
    assert [text_of(call) for call in refused] == ["I'm not enabled in this channel."] * 4
    assert len(slack_fake.calls_to("views.open")) == 1  # only the one from before
    assert len(openai_fake.requests) == 1


async def test_flags_typed_in_the_edit_form_apply_to_the_result_edit(
    slack_fake: FakeSlack, openai_fake: FakeOpenAI, start_slack: Any
) -> None:
    await start_slack("socket")
    root, job_id = await slash_result(slack_fake, "a lighthouse --quality low")
    await click(slack_fake, "UBOB", posted(slack_fake, root), "imagine_edit_button", job_id)
    view = (await slack_fake.wait_for("views.open"))[0].args["view"]
    values = {"prompt": {"prompt": {"value": "at night --quality high --size 1024x1536"}}}
    await slack_fake.send_interactive(slack_fake.view_submission_payload("UBOB", view, values))
    await slack_fake.wait_for("files.completeUploadExternal", count=2)
    (edit,) = edits(openai_fake)
    assert edit.form["prompt"] == "at night"
    assert (edit.form["quality"], edit.form["size"]) == ("high", "1024x1536")


async def test_edit_button_on_a_result_whose_images_are_gone_says_so_at_once(
    slack_fake: FakeSlack, openai_fake: FakeOpenAI, start_slack: Any
) -> None:
    running = await start_slack("socket")
    root, job_id = await slash_result(slack_fake)
    [stored] = await running.app.store.job_images(job_id)
    shutil.rmtree(stored.path.parent)  # the operator pruned old images
    await click(slack_fake, "UBOB", posted(slack_fake, root), "imagine_edit_button", job_id)
    shown = await slack_fake.wait_for("chat.postEphemeral")
    assert "can't find that image" in text_of(shown[0])
    assert not slack_fake.calls_to("views.open")
    assert json.dumps(shown[0].args).count(job_id) == 0  # plain words, no internals
