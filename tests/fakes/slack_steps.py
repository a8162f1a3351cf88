"""Steps the Slack scenario tests share: test images, reading calls, running /imagine, clicking."""

from __future__ import annotations

import io
from typing import Any

from PIL import Image

from tests.fakes.openai_server import FakeOpenAI, RecordedRequest
from tests.fakes.slack_server import FakeSlack, SlackCall

TRANSPORTS = ["socket", "http"]
CHANNEL = "C0GENERAL"


def png(width: int = 64, height: int = 64, color: tuple[int, int, int] = (200, 30, 30)) -> bytes:
    """A plain PNG of one colour."""
    out = io.BytesIO()
    Image.new("RGB", (width, height), color).save(out, "PNG")
    return out.getvalue()


def mask_png(width: int = 64, height: int = 64) -> bytes:
    """A mask PNG whose top-left quarter is transparent (the part to change)."""
    im = Image.new("RGBA", (width, height), (0, 0, 0, 255))
    im.paste((0, 0, 0, 0), (0, 0, width // 2, height // 2))
    out = io.BytesIO()
    im.save(out, "PNG")
    return out.getvalue()


def text_of(call: SlackCall) -> str:
    """The ``text`` argument of a Web API call."""
    return str(call.args.get("text", ""))


def edits(fake: FakeOpenAI) -> list[RecordedRequest]:
    """The image edit requests the fake OpenAI received, oldest first."""
    return [r for r in fake.requests if r.path.endswith("/edits")]


async def slash_result(fake: FakeSlack, prompt: str = "a red square") -> tuple[str, str]:
    """Run /imagine; return the placeholder ts (the thread root) and the job id on its buttons."""
    await fake.send_command(fake.command_payload(prompt))
    final = await fake.wait_for("chat.update", lambda c: "done in" in text_of(c))
    actions = next(b for b in final[-1].args["blocks"] if b["type"] == "actions")
    return str(final[-1].args["ts"]), str(actions["elements"][0]["value"])


def posted(fake: FakeSlack, ts: str, channel: str = CHANNEL) -> dict[str, Any]:
    """A message that must still be in the channel."""
    message = fake.message(channel, ts)
    assert message is not None, f"no message {ts} in {channel}"
    return message


async def click(
    fake: FakeSlack, user: str, message: dict[str, Any], action_id: str, job_id: str
) -> Any:
    """Press one of the result buttons on ``message`` as ``user``."""
    payload = fake.block_action_payload(user, CHANNEL, message, action_id, job_id)
    return await fake.send_interactive(payload)
