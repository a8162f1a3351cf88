"""Block Kit rules the fake Slack enforces, each with the limit Slack documents.

``message_problem`` answers with the error code chat.postMessage / chat.update would send;
``view_problem`` and ``blocks_problem`` say in words what broke (``blocks[2].text.text: 3001
characters, the most is 3000``), or ``None`` when Slack would accept the payload.

Every number below is from Slack's reference at docs.slack.dev/reference/…, named next to it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

# A ``slack_file`` reference -> the file object it names (None: unknown or not shown).
ImageCheck = Callable[[dict[str, Any]], dict[str, Any] | None]

# methods/chat.postMessage: "blocks … up to 50 blocks"; text past 40,000 characters: msg_too_long.
MESSAGE_BLOCKS = 50
MESSAGE_TEXT = 40_000
# views/modal-views: title, submit and close "max length of 24 characters"; "Max of 100 blocks";
# private_metadata "Max length of 3000 characters"; callback_id "Maximum length of 255".
MODAL_BLOCKS = 100
MODAL_LABEL = 24
PRIVATE_METADATA = 3000
CALLBACK_ID = 255
# block-kit/composition-objects/text-object: "minimum length is 1 and maximum length is 3000".
TEXT = 3000
# Every block: "block_id … Maximum length for this field is 255 characters".
BLOCK_ID = 255
# block-kit/blocks/section-block: text 3000; fields "Maximum number of items is 10", each 2000.
SECTION_TEXT = 3000
SECTION_FIELDS = 10
SECTION_FIELD_TEXT = 2000
# block-kit/blocks/header-block: plain_text, "Maximum length for the text … is 150 characters".
HEADER_TEXT = 150
# block-kit/blocks/context-block: elements "Maximum number of items is 10".
CONTEXT_ELEMENTS = 10
# block-kit/blocks/actions-block: "There is a maximum of 25 elements in each action block".
ACTIONS_ELEMENTS = 25
# block-kit/block-elements/button-element: text 75, action_id 255, url 3000, value 2000,
# accessibility_label 75, style primary or danger.
BUTTON_TEXT = 75
ACTION_ID = 255
BUTTON_URL = 3000
BUTTON_VALUE = 2000
BUTTON_LABEL = 75
# block-kit/composition-objects/confirmation-dialog-object: title 100, text 300, buttons 30.
CONFIRM_TITLE = 100
CONFIRM_TEXT = 300
CONFIRM_BUTTON = 30
# block-kit/blocks/image-block: alt_text 2000, image_url 3000, title 2000; "Supported file
# types include png, jpg, jpeg, and gif" (anything else, WebP included, is refused).
IMAGE_ALT = 2000
IMAGE_URL = 3000
IMAGE_TITLE = 2000
IMAGE_TYPES = frozenset({"png", "jpg", "jpeg", "gif"})
_OTHER_IMAGE_TYPES = frozenset({"webp", "bmp", "tif", "tiff", "heic", "heif", "avif", "svg", "ico"})
# block-kit/blocks/input-block: label and hint "Maximum length … is 2000 characters".
INPUT_LABEL = 2000
INPUT_HINT = 2000
# block-kit/block-elements/plain-text-input-element: min_length "between 0 and 3000, inclusive",
# max_length "between 1 and 3000, inclusive"; placeholder 150 (as for every input element).
INPUT_MIN_LENGTH = (0, 3000)
INPUT_MAX_LENGTH = (1, 3000)
PLACEHOLDER = 150

_BLOCK_TYPES = {"section", "context", "actions", "image", "divider", "header", "input", "rich_text"}


class _Refused(Exception):
    """What broke, as Slack's error detail would name it."""


def message_problem(args: dict[str, Any], image_ok: ImageCheck) -> str | None:
    """The error chat.postMessage / chat.update / chat.postEphemeral would answer, or None."""
    if not args.get("text") and not args.get("blocks"):
        return "no_text"
    if len(str(args.get("text", ""))) > MESSAGE_TEXT:
        return "msg_too_long"
    return "invalid_blocks" if blocks_problem(args.get("blocks"), image_ok) else None


def view_problem(view: dict[str, Any], image_ok: ImageCheck) -> str | None:
    """Why views.open would refuse this modal, or None."""
    try:
        _text(view.get("title"), "title", MODAL_LABEL, plain=True)
        for key in ("submit", "close"):
            if key in view:
                _text(view[key], key, MODAL_LABEL, plain=True)
        _length(view.get("private_metadata", ""), "private_metadata", PRIVATE_METADATA)
        _length(view.get("callback_id", ""), "callback_id", CALLBACK_ID)
        blocks = view.get("blocks")
        if not isinstance(blocks, list):
            raise _Refused("blocks: required")
        # views/modal-views: "submit is required when an input block is within the blocks array".
        if "submit" not in view and any(b.get("type") == "input" for b in blocks):
            raise _Refused("submit: required when the modal has an input block")
        _blocks(blocks, image_ok, MODAL_BLOCKS)
    except _Refused as exc:
        return str(exc)
    return None


def blocks_problem(blocks: Any, image_ok: ImageCheck, *, most: int = MESSAGE_BLOCKS) -> str | None:
    """What is wrong with a message's list of blocks (``most`` of them allowed), or None."""
    if blocks is None:
        return None
    try:
        _blocks(blocks, image_ok, most)
    except _Refused as exc:
        return str(exc)
    return None


def image_problem(block: dict[str, Any], image_ok: ImageCheck) -> str | None:
    """What is wrong with an image block, or None."""
    try:
        _image_block(block, "image", image_ok)
    except _Refused as exc:
        return str(exc)
    return None


# --- blocks ---------------------------------------------------------------------------------
def _blocks(blocks: Any, image_ok: ImageCheck, most: int) -> None:
    if not isinstance(blocks, list):
        raise _Refused("blocks: not a list")
    _count(blocks, "blocks", most)
    block_ids: set[str] = set()
    for i, block in enumerate(blocks):
        path = f"blocks[{i}]"
        if not isinstance(block, dict):
            raise _Refused(f"{path}: not an object")
        kind = block.get("type")
        if kind not in _BLOCK_TYPES:
            raise _Refused(f"{path}.type: unknown block type {kind!r}")
        block_id = block.get("block_id")
        if block_id is not None:
            _length(block_id, f"{path}.block_id", BLOCK_ID, least=1)
            # Every block's reference: "block_id should be unique for each message".
            if block_id in block_ids:
                raise _Refused(f"{path}.block_id: {block_id!r} is used twice")
            block_ids.add(block_id)
        check = _CHECKS.get(str(kind))
        if check is not None:
            check(block, path, image_ok)


def _section(block: dict[str, Any], path: str, image_ok: ImageCheck) -> None:
    if "text" not in block and "fields" not in block:
        raise _Refused(f"{path}: needs text or fields")
    if "text" in block:
        _text(block["text"], f"{path}.text", SECTION_TEXT)
    if "fields" in block:
        fields = block["fields"]
        _count(fields, f"{path}.fields", SECTION_FIELDS, least=1)
        for j, field in enumerate(fields):
            _text(field, f"{path}.fields[{j}]", SECTION_FIELD_TEXT)
    accessory = block.get("accessory")
    if isinstance(accessory, dict):
        _element(accessory, f"{path}.accessory", image_ok)


def _header(block: dict[str, Any], path: str, image_ok: ImageCheck) -> None:
    _text(block.get("text"), f"{path}.text", HEADER_TEXT, plain=True)


def _context(block: dict[str, Any], path: str, image_ok: ImageCheck) -> None:
    elements = block.get("elements")
    _count(elements, f"{path}.elements", CONTEXT_ELEMENTS, least=1)
    for j, element in enumerate(elements or []):
        where = f"{path}.elements[{j}]"
        if isinstance(element, dict) and element.get("type") == "image":
            _image_source(element, where, image_ok, check_type=False)
        else:
            _text(element, where, TEXT)


def _actions(block: dict[str, Any], path: str, image_ok: ImageCheck) -> None:
    elements = block.get("elements")
    _count(elements, f"{path}.elements", ACTIONS_ELEMENTS, least=1)
    action_ids: set[str] = set()
    for j, element in enumerate(elements or []):
        where = f"{path}.elements[{j}]"
        if not isinstance(element, dict):
            raise _Refused(f"{where}: not an object")
        _element(element, where, image_ok)
        action_id = element.get("action_id")
        # The bot routes every click by action_id, so one without it is the bot's mistake.
        if not action_id:
            raise _Refused(f"{where}.action_id: missing")
        # Button element: action_id "Should be unique among all other action_ids in the block".
        if action_id in action_ids:
            raise _Refused(f"{where}.action_id: {action_id!r} is used twice in this block")
        action_ids.add(action_id)


def _image(block: dict[str, Any], path: str, image_ok: ImageCheck) -> None:
    _image_block(block, path, image_ok)


def _input(block: dict[str, Any], path: str, image_ok: ImageCheck) -> None:
    _text(block.get("label"), f"{path}.label", INPUT_LABEL, plain=True)
    if "hint" in block:
        _text(block["hint"], f"{path}.hint", INPUT_HINT, plain=True)
    element = block.get("element")
    if not isinstance(element, dict):
        raise _Refused(f"{path}.element: required")
    _element(element, f"{path}.element", image_ok)


_CHECKS: dict[str, Callable[[dict[str, Any], str, ImageCheck], None]] = {
    "section": _section,
    "header": _header,
    "context": _context,
    "actions": _actions,
    "image": _image,
    "input": _input,
}


# --- elements -------------------------------------------------------------------------------
def _element(element: dict[str, Any], path: str, image_ok: ImageCheck) -> None:
    kind = element.get("type")
    if "action_id" in element:
        _length(element["action_id"], f"{path}.action_id", ACTION_ID, least=1)
    if "placeholder" in element:
        _text(element["placeholder"], f"{path}.placeholder", PLACEHOLDER, plain=True)
    if kind == "button":
        _button(element, path)
    elif kind == "plain_text_input":
        _plain_text_input(element, path)
    elif kind == "image":
        _image_source(element, path, image_ok, check_type=False)


def _button(button: dict[str, Any], path: str) -> None:
    _text(button.get("text"), f"{path}.text", BUTTON_TEXT, plain=True)
    if "value" in button:
        _length(button["value"], f"{path}.value", BUTTON_VALUE)
    if "url" in button:
        _length(button["url"], f"{path}.url", BUTTON_URL)
    if "accessibility_label" in button:
        _length(button["accessibility_label"], f"{path}.accessibility_label", BUTTON_LABEL)
    if "style" in button and button["style"] not in ("primary", "danger"):
        raise _Refused(f"{path}.style: {button['style']!r} is not primary or danger")
    confirm = button.get("confirm")
    if confirm is not None:
        if not isinstance(confirm, dict):
            raise _Refused(f"{path}.confirm: not an object")
        _text(confirm.get("title"), f"{path}.confirm.title", CONFIRM_TITLE, plain=True)
        _text(confirm.get("text"), f"{path}.confirm.text", CONFIRM_TEXT)
        _text(confirm.get("confirm"), f"{path}.confirm.confirm", CONFIRM_BUTTON, plain=True)
        _text(confirm.get("deny"), f"{path}.confirm.deny", CONFIRM_BUTTON, plain=True)


def _plain_text_input(element: dict[str, Any], path: str) -> None:
    least, most = 0, INPUT_MAX_LENGTH[1]
    if "min_length" in element:
        least = _bounded(element["min_length"], f"{path}.min_length", *INPUT_MIN_LENGTH)
    if "max_length" in element:
        most = _bounded(element["max_length"], f"{path}.max_length", *INPUT_MAX_LENGTH)
    if least > most:
        raise _Refused(f"{path}.min_length: {least} is more than max_length {most}")
    if "initial_value" in element:
        value = element["initial_value"]
        if not isinstance(value, str):
            raise _Refused(f"{path}.initial_value: not a string")
        if not least <= len(value) <= most:
            raise _Refused(f"{path}.initial_value: {len(value)} characters, outside {least}–{most}")


# --- images ---------------------------------------------------------------------------------
def _image_block(block: dict[str, Any], path: str, image_ok: ImageCheck) -> None:
    _image_source(block, path, image_ok, check_type=True)
    if "title" in block:
        _text(block["title"], f"{path}.title", IMAGE_TITLE, plain=True)


def _image_source(
    image: dict[str, Any], path: str, image_ok: ImageCheck, *, check_type: bool
) -> None:
    alt = image.get("alt_text")
    if not isinstance(alt, str) or not alt:
        raise _Refused(f"{path}.alt_text: required")
    _length(alt, f"{path}.alt_text", IMAGE_ALT)
    has_url, has_file = "image_url" in image, "slack_file" in image
    # Image block: "You must provide either an image_url or slack_file" (one, not both).
    if has_url == has_file:
        raise _Refused(f"{path}: needs exactly one of image_url and slack_file")
    if has_url:
        url = image["image_url"]
        _length(url, f"{path}.image_url", IMAGE_URL, least=1)
        parts = urlsplit(str(url))
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise _Refused(f"{path}.image_url: not an http(s) URL")
        name = parts.path.rsplit("/", 1)[-1]
        kind = name.rpartition(".")[2].lower() if "." in name else ""
        if check_type and kind in _OTHER_IMAGE_TYPES:
            raise _Refused(f"{path}.image_url: a {kind} image can't be shown (png, jpeg, gif)")
        return
    ref = image["slack_file"]
    if not isinstance(ref, dict) or ("id" in ref) == ("url" in ref):
        raise _Refused(f"{path}.slack_file: needs exactly one of id and url")
    found = image_ok(ref)
    if found is None:
        raise _Refused(f"{path}.slack_file: file not found")
    kinds = _file_kinds(found)
    if check_type and kinds - IMAGE_TYPES:
        shown = "/".join(sorted(kinds))
        raise _Refused(f"{path}.slack_file: a {shown} file can't be shown (png, jpeg, gif)")


def _file_kinds(file: dict[str, Any]) -> set[str]:
    """What a Slack file object says its type is (mimetype, filetype, name's extension)."""
    kinds: set[str] = set()
    mimetype = str(file.get("mimetype") or "")
    if mimetype.startswith("image/"):
        kinds.add(mimetype.removeprefix("image/").lower())
    elif mimetype:
        kinds.add(mimetype.lower())
    if file.get("filetype"):
        kinds.add(str(file["filetype"]).lower())
    name = str(file.get("name") or "")
    if "." in name:
        kinds.add(name.rpartition(".")[2].lower())
    return kinds


# --- shared pieces --------------------------------------------------------------------------
def _text(obj: Any, path: str, most: int, *, plain: bool = False) -> None:
    if not isinstance(obj, dict):
        raise _Refused(f"{path}: a text object is required")
    allowed = ("plain_text",) if plain else ("plain_text", "mrkdwn")
    if obj.get("type") not in allowed:
        raise _Refused(f"{path}.type: must be {' or '.join(allowed)}")
    _length(obj.get("text"), f"{path}.text", min(most, TEXT), least=1)


def _length(value: Any, path: str, most: int, *, least: int = 0) -> None:
    if not isinstance(value, str):
        raise _Refused(f"{path}: not a string")
    if len(value) > most:
        raise _Refused(f"{path}: {len(value)} characters, the most is {most}")
    if len(value) < least:
        raise _Refused(f"{path}: empty")


def _count(items: Any, path: str, most: int, *, least: int = 0) -> None:
    if not isinstance(items, list):
        raise _Refused(f"{path}: not a list")
    if len(items) > most:
        raise _Refused(f"{path}: {len(items)} items, the most is {most}")
    if len(items) < least:
        raise _Refused(f"{path}: empty")


def _bounded(value: Any, path: str, least: int, most: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise _Refused(f"{path}: not an integer")
    if not least <= value <= most:
        raise _Refused(f"{path}: {value} is outside {least}–{most}")
    return value
