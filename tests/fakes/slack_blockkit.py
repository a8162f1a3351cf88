"""Block Kit rules the fake Slack enforces, each with the limit Slack documents.

Every function returns a short problem (``None`` when Slack would accept the payload); the Web
API fake turns it into the error code Slack answers with.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

# A ``slack_file`` reference -> the file object it names (None: unknown or not shown).
ImageCheck = Callable[[dict[str, Any]], dict[str, Any] | None]

_BLOCK_TYPES = {"section", "context", "actions", "image", "divider", "header", "input", "rich_text"}


def message_problem(args: dict[str, Any], image_ok: ImageCheck) -> str | None:
    """The error chat.postMessage / chat.update / chat.postEphemeral would answer, or None."""
    if not args.get("text") and not args.get("blocks"):
        return "no_text"
    if len(str(args.get("text", ""))) > 40000:
        return "msg_too_long"
    return "invalid_blocks" if blocks_problem(args.get("blocks"), image_ok) else None


def view_problem(view: dict[str, Any], image_ok: ImageCheck) -> str | None:
    """Why views.open would refuse this modal, or None."""
    if len(view.get("title", {}).get("text", "")) > 24:
        return "title too long"
    if len(view.get("private_metadata", "")) > 3000:
        return "private_metadata too long"
    return blocks_problem(view.get("blocks"), image_ok)


def blocks_problem(blocks: Any, image_ok: ImageCheck) -> str | None:
    """What is wrong with a list of blocks, or None."""
    if blocks is None:
        return None
    if not isinstance(blocks, list) or len(blocks) > 50:
        return "too many blocks"
    action_ids: set[str] = set()
    for block in blocks:
        kind = block.get("type")
        if kind not in _BLOCK_TYPES:
            return f"unknown block type {kind!r}"
        text = block.get("text")
        if isinstance(text, dict) and len(text.get("text", "")) > 3000:
            return "text too long"
        if kind == "image":
            problem = image_problem(block, image_ok)
            if problem:
                return problem
        for element in block.get("elements", []) if kind == "actions" else []:
            action_id = element.get("action_id")
            if not action_id or action_id in action_ids or len(element.get("value", "")) > 2000:
                return "bad action element"
            action_ids.add(action_id)
    return None


def image_problem(block: dict[str, Any], image_ok: ImageCheck) -> str | None:
    """What is wrong with an image block, or None."""
    if not block.get("alt_text"):
        return "image without alt_text"
    if "image_url" in block:
        return None if str(block["image_url"]).startswith("http") else "image_url not http(s)"
    ref = block.get("slack_file")
    if not isinstance(ref, dict):
        return "image without image_url or slack_file"
    return None if image_ok(ref) is not None else "slack_file not found"
