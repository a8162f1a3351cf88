"""The fake Slack's Block Kit rules: each documented limit is accepted at it and refused past it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from tests.fakes.slack_blockkit import blocks_problem, message_problem, view_problem

Json = dict[str, Any]
FILES: dict[str, Json] = {
    "FPNG": {"id": "FPNG", "name": "photo.png", "mimetype": "image/png", "filetype": "png"},
    "FJPG": {"id": "FJPG", "name": "photo.jpg", "mimetype": "image/jpeg", "filetype": "jpg"},
    "FGIF": {"id": "FGIF", "name": "loop.gif", "mimetype": "image/gif", "filetype": "gif"},
    "FWEBP": {"id": "FWEBP", "name": "result.webp", "mimetype": "image/webp"},
    "FNAMED": {"id": "FNAMED", "name": "result.webp"},  # no mimetype: the name tells
}


def found(ref: Json) -> Json | None:
    """The fake workspace's ``image_ok``: the file a slack_file reference names."""
    return FILES.get(str(ref.get("id")))


def plain(text: str) -> Json:
    return {"type": "plain_text", "text": text}


def mrkdwn(text: str) -> Json:
    return {"type": "mrkdwn", "text": text}


def section(text: str = "hi") -> Json:
    return {"type": "section", "text": mrkdwn(text)}


def button(**over: Any) -> Json:
    return {"type": "button", "text": plain("Go"), "action_id": "go", "value": "v", **over}


def confirm(**over: Any) -> Json:
    fields = {"title": plain("Sure?"), "text": plain("Really."), "confirm": plain("Yes")}
    return {**fields, "deny": plain("No"), **over}


def text_input(**over: Any) -> Json:
    return {"type": "plain_text_input", "action_id": "prompt", "multiline": True, **over}


def input_block(element: Json | None = None, **over: Any) -> Json:
    block = {"type": "input", "block_id": "prompt", "label": plain("What?"), **over}
    block["element"] = element if element is not None else text_input()
    return block


def modal(**over: Any) -> Json:
    view = {"type": "modal", "title": plain("Edit image"), "submit": plain("Edit")}
    return {**view, "close": plain("Cancel"), "blocks": [input_block()], **over}


def image(**over: Any) -> Json:
    return {"type": "image", "slack_file": {"id": "FPNG"}, "alt_text": "an image", **over}


def url_of(length: int, ext: str = ".png") -> str:
    start = "https://img.example/"
    return start + "a" * (length - len(start) - len(ext)) + ext


def in_message(*blocks: Json) -> str | None:
    return blocks_problem(list(blocks), found)


def in_modal(**over: Any) -> str | None:
    return view_problem(modal(**over), found)


# (what, limit, payload of size n -> problem, the words the refusal must hold)
Case = tuple[str, int, Callable[[int], str | None], str]
CASES: list[Case] = [
    ("message blocks", 50, lambda n: in_message(*[{"type": "divider"}] * n), "blocks: "),
    (
        "message text",
        40_000,
        lambda n: message_problem({"text": "x" * n}, found),
        "msg_too_long",
    ),
    ("modal blocks", 100, lambda n: in_modal(blocks=[{"type": "divider"}] * n), "blocks: "),
    ("modal title", 24, lambda n: in_modal(title=plain("t" * n)), "title.text"),
    ("modal submit", 24, lambda n: in_modal(submit=plain("s" * n)), "submit.text"),
    ("modal close", 24, lambda n: in_modal(close=plain("c" * n)), "close.text"),
    ("private_metadata", 3000, lambda n: in_modal(private_metadata="m" * n), "private_metadata"),
    ("callback_id", 255, lambda n: in_modal(callback_id="c" * n), "callback_id"),
    ("block_id", 255, lambda n: in_message({**section(), "block_id": "b" * n}), "block_id"),
    ("section text", 3000, lambda n: in_message(section("x" * n)), "blocks[0].text.text"),
    (
        "section fields",
        10,
        lambda n: in_message({"type": "section", "fields": [mrkdwn("f")] * n}),
        "fields",
    ),
    (
        "section field text",
        2000,
        lambda n: in_message({"type": "section", "fields": [mrkdwn("f" * n)]}),
        "fields[0].text",
    ),
    (
        "header text",
        150,
        lambda n: in_message({"type": "header", "text": plain("h" * n)}),
        "blocks[0].text.text",
    ),
    (
        "context elements",
        10,
        lambda n: in_message({"type": "context", "elements": [mrkdwn("c")] * n}),
        "elements",
    ),
    (
        "context text",
        3000,
        lambda n: in_message({"type": "context", "elements": [mrkdwn("c" * n)]}),
        "elements[0].text",
    ),
    (
        "actions elements",
        25,
        lambda n: in_message(
            {"type": "actions", "elements": [button(action_id=f"a{i}") for i in range(n)]}
        ),
        "elements",
    ),
    (
        "button text",
        75,
        lambda n: in_message({"type": "actions", "elements": [button(text=plain("b" * n))]}),
        "elements[0].text.text",
    ),
    (
        "button value",
        2000,
        lambda n: in_message({"type": "actions", "elements": [button(value="v" * n)]}),
        "elements[0].value",
    ),
    (
        "button action_id",
        255,
        lambda n: in_message({"type": "actions", "elements": [button(action_id="a" * n)]}),
        "elements[0].action_id",
    ),
    (
        "button url",
        3000,
        lambda n: in_message({"type": "actions", "elements": [button(url=url_of(n))]}),
        "elements[0].url",
    ),
    (
        "confirm title",
        100,
        lambda n: in_message(
            {"type": "actions", "elements": [button(confirm=confirm(title=plain("t" * n)))]}
        ),
        "confirm.title.text",
    ),
    (
        "confirm text",
        300,
        lambda n: in_message(
            {"type": "actions", "elements": [button(confirm=confirm(text=plain("t" * n)))]}
        ),
        "confirm.text.text",
    ),
    (
        "confirm button",
        30,
        lambda n: in_message(
            {"type": "actions", "elements": [button(confirm=confirm(confirm=plain("y" * n)))]}
        ),
        "confirm.confirm.text",
    ),
    (
        "deny button",
        30,
        lambda n: in_message(
            {"type": "actions", "elements": [button(confirm=confirm(deny=plain("n" * n)))]}
        ),
        "confirm.deny.text",
    ),
    ("image alt_text", 2000, lambda n: in_message(image(alt_text="a" * n)), "alt_text"),
    (
        "image image_url",
        3000,
        lambda n: in_message({"type": "image", "image_url": url_of(n), "alt_text": "a"}),
        "image_url",
    ),
    ("image title", 2000, lambda n: in_message(image(title=plain("t" * n))), "title.text"),
    ("input label", 2000, lambda n: in_modal(blocks=[input_block(label=plain("l" * n))]), "label"),
    ("input hint", 2000, lambda n: in_modal(blocks=[input_block(hint=plain("h" * n))]), "hint"),
    (
        "input placeholder",
        150,
        lambda n: in_modal(blocks=[input_block(text_input(placeholder=plain("p" * n)))]),
        "placeholder",
    ),
    (
        "plain_text_input max_length",
        3000,
        lambda n: in_modal(blocks=[input_block(text_input(max_length=n))]),
        "max_length: 3001 is outside 1–3000",
    ),
    (
        "plain_text_input min_length",
        3000,
        lambda n: in_modal(blocks=[input_block(text_input(min_length=n))]),
        "min_length: 3001 is outside 0–3000",
    ),
    (
        "plain_text_input initial_value",
        3000,
        lambda n: in_modal(blocks=[input_block(text_input(initial_value="i" * n))]),
        "initial_value: 3001 characters",
    ),
    (
        "initial_value within max_length",
        200,
        lambda n: in_modal(blocks=[input_block(text_input(max_length=200, initial_value="i" * n))]),
        "initial_value: 201 characters, outside 0–200",
    ),
]


@pytest.mark.parametrize(("what", "limit", "problem", "says"), CASES, ids=[c[0] for c in CASES])
def test_each_limit_is_accepted_at_it_and_refused_past_it(
    what: str, limit: int, problem: Callable[[int], str | None], says: str
) -> None:
    assert problem(limit) is None
    refused = problem(limit + 1)
    assert refused is not None and says in refused, refused


def test_the_refusal_names_the_field_and_both_numbers() -> None:
    assert in_message(section(), section("x" * 3001)) == (
        "blocks[1].text.text: 3001 characters, the most is 3000"
    )


@pytest.mark.parametrize(
    ("element", "says"),
    [
        (text_input(max_length=0), "max_length: 0 is outside 1–3000"),
        (text_input(max_length=4000), "max_length: 4000 is outside 1–3000"),
        (text_input(min_length=-1), "min_length: -1 is outside 0–3000"),
        (text_input(min_length=10, max_length=5), "min_length: 10 is more than max_length 5"),
        (text_input(min_length=5, initial_value="abc"), "initial_value: 3 characters"),
        (text_input(max_length="3000"), "max_length: not an integer"),
    ],
)
def test_plain_text_input_lengths_must_agree(element: Json, says: str) -> None:
    refused = in_modal(blocks=[input_block(element)])
    assert refused is not None and says in refused, refused


def test_plain_text_input_lower_bounds_are_accepted() -> None:
    element = text_input(min_length=0, max_length=1, initial_value="")
    assert in_modal(blocks=[input_block(element)]) is None
    assert in_modal(blocks=[input_block(text_input(min_length=3, initial_value="abc"))]) is None


@pytest.mark.parametrize("file_id", ["FPNG", "FJPG", "FGIF"])
def test_image_blocks_show_png_jpeg_and_gif_files(file_id: str) -> None:
    assert in_message(image(slack_file={"id": file_id})) is None


@pytest.mark.parametrize("file_id", ["FWEBP", "FNAMED"])
def test_image_blocks_refuse_a_webp_file(file_id: str) -> None:
    refused = in_message(image(slack_file={"id": file_id}))
    assert refused is not None and "webp" in refused
    # chat.postMessage / chat.update answer invalid_blocks.
    args = {"text": "done", "blocks": [image(slack_file={"id": file_id})]}
    assert message_problem(args, found) == "invalid_blocks"


@pytest.mark.parametrize("ext", [".png", ".JPG", ".jpeg", ".gif", ""])
def test_image_urls_of_shown_types_are_accepted(ext: str) -> None:
    assert in_message({"type": "image", "image_url": url_of(60, ext), "alt_text": "a"}) is None


def test_an_image_url_ending_in_webp_is_refused() -> None:
    refused = in_message({"type": "image", "image_url": url_of(60, ".webp"), "alt_text": "a"})
    assert refused is not None and "webp" in refused


@pytest.mark.parametrize(
    ("block", "says"),
    [
        ({"type": "image", "alt_text": "a"}, "exactly one of image_url and slack_file"),
        (image(image_url=url_of(40)), "exactly one of image_url and slack_file"),
        (image(alt_text=""), "alt_text: required"),
        (image(slack_file={"id": "FGONE"}), "slack_file: file not found"),
        ({"type": "image", "image_url": "ftp://h/a.png", "alt_text": "a"}, "not an http(s) URL"),
        ({"type": "header", "text": mrkdwn("h")}, "must be plain_text"),
        ({"type": "section", "text": mrkdwn("")}, "text.text: empty"),
        ({"type": "section"}, "needs text or fields"),
        ({"type": "context", "elements": []}, "elements: empty"),
        ({"type": "carousel"}, "unknown block type"),
        ({"type": "actions", "elements": [button(), button()]}, "'go' is used twice"),
        ({"type": "actions", "elements": [button(style="loud")]}, "not primary or danger"),
    ],
)
def test_malformed_blocks_are_refused(block: Json, says: str) -> None:
    refused = in_message(block)
    assert refused is not None and says in refused, refused


def test_block_ids_are_unique_in_a_message() -> None:
    refused = in_message({**section(), "block_id": "x"}, {**section(), "block_id": "x"})
    assert refused is not None and "blocks[1].block_id" in refused


def test_a_modal_with_an_input_needs_a_submit_button() -> None:
    view = modal()
    del view["submit"]
    assert view_problem(view, found) == "submit: required when the modal has an input block"
