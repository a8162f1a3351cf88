"""/imagine end to end: the real slack-bolt app over Socket Mode and signed HTTP, on a fake Slack."""

from __future__ import annotations

import pytest

from tests.fakes.openai_server import FakeOpenAI
from tests.fakes.slack_server import FakeSlack

TRANSPORTS = ["socket", "http"]


@pytest.mark.parametrize("mode", TRANSPORTS)
async def test_slash_command_posts_placeholder_then_uploads_into_its_thread(
    mode: str, slack_fake: FakeSlack, openai_fake: FakeOpenAI, start_slack
) -> None:
    await start_slack(mode)
    answer = await slack_fake.send_command(
        slack_fake.command_payload("a lighthouse in fog --size 1536x1024 --quality low")
    )
    if mode == "http":
        assert answer[0] == 200
    complete = await slack_fake.wait_for("files.completeUploadExternal")
    placeholder = slack_fake.calls_to("chat.postMessage")[0]
    assert placeholder.args["channel"] == "C0GENERAL"
    assert "thread_ts" not in placeholder.args
    assert placeholder.args["text"].startswith("<@UALICE>: a lighthouse in fog — ")
    ts = slack_fake.message("C0GENERAL", complete[0].args["thread_ts"])
    assert ts is not None and ts["user"] == "UBOT"
    assert complete[0].args["channel_id"] == "C0GENERAL"
    sent = openai_fake.requests[0].json
    assert sent is not None and sent["size"] == "1536x1024" and sent["quality"] == "low"
    upload = next(iter(slack_fake.uploads.values()))
    assert upload.data.startswith(b"\x89PNG") and upload.completed
    final = await slack_fake.wait_for(
        "chat.update", lambda c: "done in" in c.args.get("text", "")
    )
    blocks = final[0].args["blocks"]
    actions = [b for b in blocks if b["type"] == "actions"][0]["elements"]
    assert [a["text"]["text"] for a in actions] == ["Regenerate", "Edit", "Delete"]
