"""Formats Slack's image blocks can't show (webp) are uploaded as asked and shown as a JPEG."""

from __future__ import annotations

from typing import Any

from adapters.slack import blocks as slack_blocks
from tests.fakes.openai_server import FakeOpenAI
from tests.fakes.slack_server import FakeSlack
from tests.fakes.slack_steps import click, posted, slash_result


async def test_a_webp_result_keeps_its_format_and_shows_a_jpeg_inline(
    slack_fake: FakeSlack, openai_fake: FakeOpenAI, start_slack: Any
) -> None:
    await start_slack("socket")
    root, job_id = await slash_result(slack_fake, "a harbour at dusk --format webp")
    # The file in the thread is the webp that was asked for.
    [in_thread] = [u for u in slack_fake.uploads.values() if u.thread_ts == root]
    assert in_thread.filename.endswith(".webp")
    assert in_thread.data[:4] == b"RIFF" and in_thread.data[8:12] == b"WEBP"
    # The result's image block shows a JPEG (Slack docs: image blocks take png, jpg, gif),
    # a private file of the bot, like the previews.
    message = posted(slack_fake, root)
    [image] = [b for b in message["blocks"] if b["type"] == "image"]
    shown = slack_fake.uploads[image["slack_file"]["id"]]
    assert shown.data.startswith(b"\xff\xd8") and shown.filename.endswith(".jpg")
    assert shown.channel_id is None and shown.completed
    assert slack_fake.files[shown.file_id]["mimetype"] == "image/jpeg"
    # Delete removes the result's files, the one shown inline too.
    await click(slack_fake, "UALICE", message, slack_blocks.DELETE, job_id)
    await slack_fake.wait_until(lambda: slack_fake.message("C0GENERAL", root) is None)
    assert in_thread.file_id not in slack_fake.files and shown.file_id not in slack_fake.files
