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
ENHANCE_RETRY = "imagine_enhance_retry"
REPHRASE = "imagine_rephrase"
SEND_SUGGESTION = "imagine_send_suggestion"
DROP_SUGGESTION = "imagine_drop_suggestion"
SHORTCUT = "imagine_edit"
EDIT_MODAL = "imagine_edit_modal"
PROMPT_BLOCK = "prompt"
PROMPT_ACTION = "prompt"
# Slack: plain_text_input max_length is 1–3000. The image API takes longer prompts, but the
# modal is the narrower of the two, so longer edits go through a thread reply instead.
PROMPT_MAX_LENGTH = 3000
# Slack: a modal's private_metadata holds at most 3000 characters.
METADATA_MAX_LENGTH = 3000
# Slack: a section's text and a context element's text hold at most 3000 characters each.
TEXT_MAX_LENGTH = 3000
HEADLINE_PROMPT = 200
ENHANCED_FROM = "✨ Enhanced from: "


def headline(user_id: str, prompt: str, state: str) -> str:
    """``<@U1>: a fox in snow — queued — next in line`` (the prompt escaped and shortened)."""
    return f"{MARKUP.mention(user_id)}: {escape(shorten(prompt, HEADLINE_PROMPT))} — {state}"


def fitted(prefix: str, words: str, limit: int = TEXT_MAX_LENGTH) -> str:
    """``prefix`` and ``words`` escaped, shortened so the whole stays within ``limit``."""
    room = limit - len(prefix)
    shown = shorten(words, room)
    # Escaping lengthens the text (``&`` is five characters): shorten until it fits.
    while len(escape(shown)) > room:
        shown = shorten(shown, max(1, room - (len(escape(shown)) - room) - 1))
    return prefix + escape(shown)


def _section(text: str) -> Block:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text}}


def _context(text: str) -> Block:
    return {"type": "context", "elements": [{"type": "mrkdwn", "text": text}]}


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


def result_blocks(
    text: str,
    details: str,
    job_id: str,
    image_file_id: str | None,
    *,
    rewritten: tuple[str, str] | None = None,
    enhance_button: bool = False,
) -> list[Block]:
    """The finished placeholder: headline, the first image, details and the buttons.

    ``rewritten`` (the prompt used, what the user wrote) marks a prompt that prompt help wrote;
    ``enhance_button`` offers "Enhance & retry" (only while prompt help is on).
    """
    blocks: list[Block] = [_section(text)]
    if image_file_id:
        blocks.append(_image(image_file_id, "The generated image"))
    if rewritten is not None:
        used, original = rewritten
        if len(" ".join(used.split())) > HEADLINE_PROMPT:  # the headline shows only its start
            blocks.append(_section(fitted("*Prompt:* ", used)))
        blocks.append(_context(fitted(ENHANCED_FROM, original)))
    blocks.append(_context(details))
    more = [_button("✨ Enhance & retry", ENHANCE_RETRY, job_id)] if enhance_button else []
    blocks.append(
        {
            "type": "actions",
            "block_id": "imagine_actions",
            "elements": [
                _button("Regenerate", REGENERATE, job_id),
                _button("Vary", VARY, job_id),
                *more,
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


def refusal_blocks(text: str, job_id: str | None) -> list[Block]:
    """A private refusal; after a safety block, with "Rephrase and retry" for ``job_id``."""
    blocks: list[Block] = [_section(text[:TEXT_MAX_LENGTH])]
    if job_id:
        blocks.append(
            {
                "type": "actions",
                "block_id": "imagine_rephrase",
                "elements": [_button("Rephrase and retry", REPHRASE, job_id)],
            }
        )
    return blocks


def suggestion_text(prompt: str) -> str:
    """The words of a rewrite offered after a safety block, shown only to its requester."""
    return fitted("Here is a reworded prompt. Nothing is sent until you say so.\n>", prompt)


def suggestion_blocks(prompt: str, job_id: str, suggestion_id: str) -> list[Block]:
    """The rewrite with "Send it" (runs it as ``job_id`` again) and "Never mind"."""
    value = f"{job_id}:{suggestion_id}"
    return [
        _section(suggestion_text(prompt)),
        {
            "type": "actions",
            "block_id": "imagine_suggestion",
            "elements": [
                {**_button("Send it", SEND_SUGGESTION, value), "style": "primary"},
                _button("Never mind", DROP_SUGGESTION, value),
            ],
        },
    ]


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
