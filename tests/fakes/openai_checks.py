"""What the OpenAI fake thinks of a request: body reading, schema and multipart checks.

Requests are validated against OpenAI's published schema (tests/contracts) plus the rules the
schema cannot express; each problem found is noted on the RecordedRequest.
"""

from __future__ import annotations

import io
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema
from aiohttp import BodyPartReader, web
from PIL import Image

SCHEMA_PATH = Path(__file__).resolve().parent.parent / "contracts" / "openai_images_schema.json"
SCHEMA: dict[str, Any] = json.loads(SCHEMA_PATH.read_text())
CHAT_SCHEMA_PATH = SCHEMA_PATH.with_name("openai_chat_schema.json")
CHAT_SCHEMA: dict[str, Any] = json.loads(CHAT_SCHEMA_PATH.read_text())
_FORMAT_CHECKER = jsonschema.Draft202012Validator.FORMAT_CHECKER

STANDARD_SIZES = frozenset({"1024x1024", "1536x1024", "1024x1536"})
_INT_FIELDS = {"n", "output_compression", "partial_images"}
_BOOL_FIELDS = {"stream"}
_FILE_FIELDS = {"image", "image[]", "mask"}


def schema_validator(name: str) -> jsonschema.Draft202012Validator:
    """A validator for one ``$defs`` entry of the contract schema."""
    return jsonschema.Draft202012Validator(
        {"$ref": f"#/$defs/{name}", "$defs": SCHEMA["$defs"]}, format_checker=_FORMAT_CHECKER
    )


def chat_validator(name: str) -> jsonschema.Draft202012Validator:
    """A validator for one ``$defs`` entry of the Chat Completions contract schema."""
    return jsonschema.Draft202012Validator(
        {"$ref": f"#/$defs/{name}", "$defs": CHAT_SCHEMA["$defs"]}, format_checker=_FORMAT_CHECKER
    )


def _properties(name: str) -> set[str]:
    """Every property a schema (with its ``allOf`` parts) declares."""
    node = CHAT_SCHEMA["$defs"][name]
    found = set(node.get("properties", {}))
    for part in node.get("allOf", []):
        ref = part.get("$ref", "")
        if ref:
            found |= _properties(ref.removeprefix("#/$defs/"))
        else:
            found |= set(part.get("properties", {}))
    return found


CHAT_PARAMETERS = frozenset(_properties("CreateChatCompletionRequest"))


@dataclass
class RecordedFile:
    """One file part of a multipart request."""

    field: str
    filename: str
    content_type: str
    data: bytes


@dataclass
class RecordedRequest:
    """What the fake received, and what it thought of it."""

    method: str
    path: str
    headers: dict[str, str]
    json: dict[str, Any] | None = None
    form: dict[str, str] = field(default_factory=dict)
    files: list[RecordedFile] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    status: int | None = None
    fault: str | None = None
    answer: dict[str, Any] | None = None  # the JSON the fake answered with, when it did


class Problem(Exception):
    """A request the fake cannot even read as a body."""


def size_problem(model: str, size: str) -> str | None:
    """Why the API would refuse ``size`` for ``model``, or None."""
    if size == "auto" or size in STANDARD_SIZES:
        return None
    match = re.fullmatch(r"(\d+)x(\d+)", size)
    if not model.startswith("gpt-image-2") or not match:
        return f"Invalid size '{size}' for model {model}."
    width, height = int(match[1]), int(match[2])
    if width % 16 or height % 16:
        return "Width and height must both be divisible by 16."
    if max(width, height) > 3 * min(width, height):
        return "The aspect ratio must be between 1:3 and 3:1."
    if max(width, height) > 3840:
        return "The longest edge must be at most 3840 pixels."
    if not 655_360 <= width * height <= 8_294_400:
        return "The total number of pixels must be between 655360 and 8294400."
    return None


async def read_json(request: web.Request, rec: RecordedRequest) -> dict[str, Any]:
    """The JSON body of a generation; Problem if it is not a JSON object."""
    if request.content_type != "application/json":
        raise Problem(f"generations must be JSON, got {request.content_type}")
    try:
        data = json.loads(await request.read())
    except ValueError as exc:
        raise Problem(f"body is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise Problem("body is not a JSON object")
    rec.json = data
    return dict(data)


async def read_edit(request: web.Request, rec: RecordedRequest) -> dict[str, Any]:
    """The multipart body of an edit as typed fields, its parts recorded and checked."""
    if request.content_type != "multipart/form-data":
        raise Problem(f"edits must be multipart/form-data, got {request.content_type}")
    reader = await request.multipart()
    while (part := await reader.next()) is not None:
        if not isinstance(part, BodyPartReader) or part.name is None:
            raise Problem("nested or unnamed multipart part")
        if part.filename is not None:
            ctype = part.headers.get("Content-Type", "")
            data = bytes(await part.read())
            rec.files.append(RecordedFile(part.name, part.filename, ctype, data))
        else:
            if part.name in rec.form:
                rec.problems.append(f"form field {part.name!r} sent twice")
            rec.form[part.name] = await part.text()
    body: dict[str, Any] = {key: _typed(key, text, rec) for key, text in rec.form.items()}
    fields = {f.field for f in rec.files}
    if fields - _FILE_FIELDS:
        rec.problems.append(f"unexpected file parts {sorted(fields - _FILE_FIELDS)}")
    images = [f for f in rec.files if f.field in ("image", "image[]")]
    if "image" in fields and "image[]" in fields:
        rec.problems.append("send either one 'image' part or 'image[]' parts, not both")
    if sum(f.field == "image" for f in rec.files) > 1:
        rec.problems.append("several parts named 'image': use 'image[]' for more than one")
    if sum(f.field == "mask" for f in rec.files) > 1:
        rec.problems.append("more than one mask")
    if images:
        body["image"] = images[0].filename if "image" in fields else [f.filename for f in images]
    sizes = [_check_image(f, rec) for f in images]
    for mask in (f for f in rec.files if f.field == "mask"):
        body["mask"] = mask.filename
        _check_image(mask, rec, sizes[0] if sizes else None)
    body["_first_size"] = sizes[0] if sizes else None
    return body


def _typed(key: str, text: str, rec: RecordedRequest) -> Any:
    if key in _INT_FIELDS:
        if not re.fullmatch(r"-?\d+", text):
            rec.problems.append(f"{key}={text!r} is not an integer")
            return text
        return int(text)
    if key in _BOOL_FIELDS:
        if text not in ("true", "false"):
            rec.problems.append(f"{key}={text!r}: booleans are 'true' or 'false'")
            return text
        return text == "true"
    return text


def _check_image(
    part: RecordedFile, rec: RecordedRequest, first: tuple[int, int] | None = None
) -> tuple[int, int] | None:
    """Decode an input image (or, given ``first``, the mask) and note what is wrong."""
    is_mask = part.field == "mask"
    try:
        with Image.open(io.BytesIO(part.data)) as img:
            fmt, size = img.format, img.size
            has_alpha = "A" in img.mode or "transparency" in img.info
            img.load()
    except Exception as exc:
        rec.problems.append(f"{part.filename}: not a decodable image ({exc})")
        return None
    allowed = ("PNG",) if is_mask else ("PNG", "JPEG", "WEBP")
    if fmt not in allowed:
        rec.problems.append(f"{part.filename}: {fmt} is not one of {allowed}")
    if len(part.data) >= (4 if is_mask else 50) * 1024 * 1024:
        rec.problems.append(f"{part.filename}: too large")
    if is_mask and not has_alpha:
        rec.problems.append("mask has no alpha channel")
    if is_mask and first is not None and size != first:
        rec.problems.append(f"mask is {size}, the first image is {first}")
    return size


def check_body(body: dict[str, Any], rec: RecordedRequest, is_edit: bool) -> None:
    """Note every way ``body`` breaks the schema or the rules the schema cannot express."""
    name = "CreateImageEditRequest" if is_edit else "CreateImageRequest"
    plain = {k: v for k, v in body.items() if not k.startswith("_")}
    for err in schema_validator(name).iter_errors(plain):
        rec.problems.append(f"schema: {'/'.join(map(str, err.path)) or '(body)'}: {err.message}")
    known = set(SCHEMA["$defs"][name]["properties"])
    for key in sorted(set(plain) - known):
        rec.problems.append(f"Unknown parameter: '{key}'.")
    model = plain.get("model")
    if not isinstance(model, str):
        rec.problems.append("'model' is missing: the API would fall back to an old model")
        model = ""
    gpt = model.startswith("gpt-image") or model == "chatgpt-image-latest"
    if (gpt or not model) and "response_format" in plain:
        rec.problems.append("Unknown parameter: 'response_format' (GPT image models)")
    if is_edit and "input_fidelity" in plain and model.startswith("gpt-image-2"):
        rec.problems.append("input_fidelity is not used by gpt-image-2; leave it out")
    fmt = plain.get("output_format") or "png"
    if plain.get("background") == "transparent" and fmt == "jpeg":
        rec.problems.append("Transparent background needs png or webp output")
    if plain.get("output_compression") is not None and fmt == "png":
        rec.problems.append("output_compression is only for jpeg and webp")
    comp = plain.get("output_compression")
    if isinstance(comp, int) and not 0 <= comp <= 100:
        rec.problems.append("output_compression must be between 0 and 100")
    prompt = plain.get("prompt")
    if isinstance(prompt, str) and not 0 < len(prompt) <= 32000:
        rec.problems.append("prompt must be 1 to 32000 characters")
    if isinstance(plain.get("size"), str) and (why := size_problem(model, plain["size"])):
        rec.problems.append(why)
    if plain.get("partial_images") and not plain.get("stream"):
        rec.problems.append("partial_images without stream=true does nothing")


def check_chat_body(body: dict[str, Any], rec: RecordedRequest) -> None:
    """Note every way a chat completion request breaks the schema or the API's other rules."""
    validator = chat_validator("CreateChatCompletionRequest")
    for err in validator.iter_errors(body):
        rec.problems.append(f"schema: {'/'.join(map(str, err.path)) or '(body)'}: {err.message}")
    for key in sorted(set(body) - CHAT_PARAMETERS):
        rec.problems.append(f"Unrecognized request argument supplied: {key}")
    if "max_tokens" in body:
        # reasoning models refuse it: "Unsupported parameter: 'max_tokens' ..."
        rec.problems.append("max_tokens is deprecated; use max_completion_tokens")
    if body.get("stream") is True:
        rec.problems.append("this fake answers chat completions without streaming only")
    messages = body.get("messages")
    if isinstance(messages, list) and not any(
        isinstance(m, dict) and m.get("role") == "user" for m in messages
    ):
        rec.problems.append("no user message: there is nothing to answer")
