"""Block Kit for the placeholder message, the result buttons and the edit modal."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from adapters.slack.text import MARKUP, escape
from bot.texts import shorten

Block = dict[str, Any]

REGENERATE = "imagine_regenerate"
VARY = "imagine_vary"
CANCEL = "imagine_cancel"
EDIT = "imagine_edit_button"
DELETE = "imagine_delete"
SHORTCUT = "imagine_edit"
EDIT_MODAL = "imagine_edit_modal"
PROMPT_BLOCK = "prompt"
PROMPT_ACTION = "prompt"
# Slack: plain_text_input max_length is 1–3000. The image API takes longer prompts, but the
# modal is the narrower of the two, so longer edits go through a thread reply instead.
PROMPT_MAX_LENGTH = 3000
# Slack: a modal's private_metadata holds at most 3000 characters.
METADATA_MAX_LENGTH = 3000


def headline(user_id: str, prompt: str, state: str) -> str:
    """``<@U1>: a fox in snow — queued — next in line`` (the prompt escaped and shortened)."""
    return f"{MARKUP.mention(user_id)}: {escape(shorten(prompt, 200))} — {state}"


def progress_blocks(
    text: str, preview_file_id: str | None, cancel_job_id: str | None = None
) -> list[Block]:
    """The placeholder, with the newest preview and (while the job can stop) its Cancel button."""
    blocks: list[Block] = [{"type": "section", "text": {"type": "mrkdwn", "text": text}}]
    if preview_file_id:
        blocks.append(_image(preview_file_id, "Preview of the image being made"))
    if cancel_job_id:
        blocks.append(
            {
                "type": "actions",
                "block_id": "imagine_progress",
                "elements": [_button("Cancel", CANCEL, cancel_job_id)],
            }
        )
    return blocks


def result_blocks(text: str, details: str, job_id: str, image_file_id: str | None) -> list[Block]:
    """The finished placeholder: headline, the first image, details and the buttons."""
    blocks: list[Block] = [{"type": "section", "text": {"type": "mrkdwn", "text": text}}]
    if image_file_id:
        blocks.append(_image(image_file_id, "The generated image"))
    blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": details}]})
    blocks.append(
        {
            "type": "actions",
            "block_id": "imagine_actions",
            "elements": [
                _button("Regenerate", REGENERATE, job_id),
                _button("Vary", VARY, job_id),
                _button("Edit", EDIT, job_id),
                {
                    **_button("Delete", DELETE, job_id),
                    "style": "danger",
                    "confirm": {
                        "title": {"type": "plain_text", "text": "Delete this image?"},
                        "text": {"type": "plain_text", "text": "The message and its images go."},
                        "confirm": {"type": "plain_text", "text": "Delete"},
                        "deny": {"type": "plain_text", "text": "Keep"},
                    },
                },
            ],
        }
    )
    return blocks


def text_only(blocks: list[Block]) -> list[Block]:
    """The same blocks without image blocks (when Slack won't show a file yet)."""
    return [block for block in blocks if block.get("type") != "image"]


def modal_metadata(metadata: Mapping[str, Any]) -> str:
    """``metadata`` as the modal's private_metadata; ValueError if Slack would refuse its size."""
    encoded = json.dumps(metadata, separators=(",", ":"))
    if len(encoded) > METADATA_MAX_LENGTH:
        raise ValueError(f"modal metadata is {len(encoded)} characters")
    return encoded


def edit_modal(metadata: Mapping[str, Any], described: str) -> Block:
    """The modal that asks how to change an image; ``metadata`` comes back on submit."""
    return {
        "type": "modal",
        "callback_id": EDIT_MODAL,
        "title": {"type": "plain_text", "text": "Edit image"},
        "submit": {"type": "plain_text", "text": "Edit"},
        "close": {"type": "plain_text", "text": "Cancel"},
        "private_metadata": modal_metadata(metadata),
        "blocks": [
            {"type": "context", "elements": [{"type": "mrkdwn", "text": described}]},
            {
                "type": "input",
                "block_id": PROMPT_BLOCK,
                "label": {"type": "plain_text", "text": "What should change?"},
                "element": {
                    "type": "plain_text_input",
                    "action_id": PROMPT_ACTION,
                    "multiline": True,
                    "max_length": PROMPT_MAX_LENGTH,
                    "placeholder": {"type": "plain_text", "text": "make it night, add snow"},
                },
            },
        ],
    }


def _image(file_id: str, alt: str) -> Block:
    return {"type": "image", "slack_file": {"id": file_id}, "alt_text": alt}


def _button(label: str, action_id: str, job_id: str) -> Block:
    return {
        "type": "button",
        "text": {"type": "plain_text", "text": label},
        "action_id": action_id,
        "value": job_id,
    }
