"""A fake OpenAI Images API: a real aiohttp server on 127.0.0.1 that checks every request.

Requests are validated against OpenAI's published schema (tests/contracts) plus the rules the
schema cannot express; invalid ones get a 400 like the real API and fail the test at teardown.
Answers carry real images of the asked size and format, real SSE streams and injectable faults.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import json
import math
import os
import re
import secrets
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import pytest_asyncio
from aiohttp import BodyPartReader, web
from PIL import Image

SCHEMA_PATH = Path(__file__).resolve().parent.parent / "contracts" / "openai_images_schema.json"
SCHEMA: dict[str, Any] = json.loads(SCHEMA_PATH.read_text())
_FORMAT_CHECKER = jsonschema.Draft202012Validator.FORMAT_CHECKER

_STANDARD_SIZES = {"1024x1024", "1536x1024", "1024x1536"}
_INT_FIELDS = {"n", "output_compression", "partial_images"}
_BOOL_FIELDS = {"stream"}
_PIL_FORMATS = {"png": "PNG", "jpeg": "JPEG", "webp": "WEBP"}
_TOKEN_FACTOR = {"low": 16, "medium": 48, "high": 96}
_SAFETY = (
    "Your request was rejected by the safety system. If you believe this is an error, contact "
    "us at help.openai.com and include the request ID req_{req}. safety_violations=[{categories}]."
)
_SERVER_ERROR = "The server had an error while processing your request. Sorry about that!"
_ERROR_FAULTS: dict[str, tuple[int, str, str | None, str]] = {  # status, type, code, message
    "rate_limit": (429, "requests", "rate_limit_exceeded", "Rate limit reached for images."),
    "insufficient_quota": (429, "insufficient_quota", "insufficient_quota", "You exceeded your "
                           "current quota, please check your plan and billing details."),
    "server_error": (500, "server_error", None, _SERVER_ERROR),
    "permission_denied": (403, "invalid_request_error", "model_not_found", "No access to model."),
    "moderation_blocked": (400, "image_generation_user_error", "moderation_blocked", _SAFETY),
    "invalid_value": (400, "invalid_request_error", "invalid_value", "Invalid value."),
}  # fmt: skip
_BAD_KEY = "Incorrect API key provided. You can find your API key at platform.openai.com."
_ENDPOINTS = ("/v1/images/generations", "/v1/images/edits")
_NO_INPUT = {"text_tokens": 0, "image_tokens": 0}
FAULTS = frozenset(_ERROR_FAULTS) | {"timeout", "malformed_json", "stream_cut", "stream_error"}


def schema_validator(name: str) -> jsonschema.Draft202012Validator:
    """A validator for one ``$defs`` entry of the contract schema."""
    return jsonschema.Draft202012Validator(
        {"$ref": f"#/$defs/{name}", "$defs": SCHEMA["$defs"]}, format_checker=_FORMAT_CHECKER
    )


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


class _Problem(Exception):
    pass


def output_tokens(size: tuple[int, int], quality: str) -> int:
    """gpt-image-2 output tokens for one image (the community formula from the notes)."""
    f = _TOKEN_FACTOR.get(quality, 48)
    width, height = size
    short, long = min(width, height), max(width, height)
    s = (2 * f * short + long) // (2 * long)
    return math.ceil(f * s * (2_000_000 + width * height) / 4_000_000)


def size_problem(model: str, size: str) -> str | None:
    """Why the API would refuse ``size`` for ``model``, or None."""
    if size == "auto" or size in _STANDARD_SIZES:
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


@lru_cache(maxsize=64)
def render_image(
    size: tuple[int, int], fmt: str, seed: int, transparent: bool, noise: bool
) -> bytes:
    """A real image of ``size`` in ``fmt``: a gradient tinted by ``seed``, or random noise."""
    width, height = size
    if noise:
        img = Image.frombytes("RGB", size, os.urandom(width * height * 3))
    else:
        ramp = Image.linear_gradient("L").resize(size)
        tint = Image.new("L", size, (seed * 57 + 80) % 256)
        img = Image.merge("RGB", (ramp, tint, ramp.transpose(Image.Transpose.FLIP_TOP_BOTTOM)))
    if transparent:
        img = img.convert("RGBA")
        img.putalpha(Image.linear_gradient("L").resize(size))
    buf = io.BytesIO()
    img.save(buf, _PIL_FORMATS[fmt], **({"quality": 80} if fmt != "png" else {}))
    return buf.getvalue()


def _request_id() -> str:
    return f"req_{secrets.token_hex(8)}"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


async def _event(response: web.StreamResponse, name: str, data: dict[str, Any]) -> None:
    payload = {"type": name, "created_at": int(time.time()), **data}
    await response.write(f"event: {name}\ndata: {json.dumps(payload)}\n\n".encode())


def _error(
    status: int, message: str, etype: str, code: str | None, param: str | None = None
) -> web.Response:
    body = {"error": {"message": message, "type": etype, "param": param, "code": code}}
    return web.json_response(body, status=status, headers={"x-request-id": _request_id()})


class FakeOpenAI:
    """The fake server; ``requests`` lists every request to /v1/images/*."""

    def __init__(self) -> None:
        self.api_key = "sk-test"
        self.base_url = ""
        self.requests: list[RecordedRequest] = []
        self.latency = 0.0
        self.noise = False
        self.expect_invalid = False
        self.send_done = False  # end streams with ``data: [DONE]`` as some proxies do
        self._faults: list[tuple[str, dict[str, Any]]] = []
        self._runner: web.AppRunner | None = None
        self._closed = asyncio.Event()
        self._changed = asyncio.Event()

    # --- control -------------------------------------------------------------------------
    def fail_next(self, fault: str, *, times: int = 1, **params: Any) -> None:
        """Answer the next ``times`` valid requests with ``fault``.

        Parameters by fault: rate_limit ``retry_after`` (seconds, default 0) and/or
        ``retry_after_ms``; moderation_blocked ``categories`` (list); invalid_value ``message``,
        ``param``; timeout ``seconds`` (default: until the server closes); stream_cut and
        stream_error ``after`` (previews sent first, default 1); any error fault ``status``.
        stream_cut on a request that does not stream drops the connection mid-body.
        """
        if fault not in FAULTS:
            raise ValueError(f"unknown fault {fault!r}; use one of {sorted(FAULTS)}")
        self._faults.extend((fault, params) for _ in range(times))

    async def wait_for(
        self,
        predicate: Callable[[RecordedRequest], bool] | None = None,
        *,
        count: int = 1,
        timeout: float = 5.0,  # noqa: ASYNC109 - the fixture's published signature
    ) -> list[RecordedRequest]:
        """Wait until ``count`` recorded requests match ``predicate``; return those matching."""

        async def matching() -> list[RecordedRequest]:
            while True:
                found = [r for r in self.requests if predicate is None or predicate(r)]
                if len(found) >= count:
                    return found
                self._changed.clear()
                await self._changed.wait()

        return await asyncio.wait_for(matching(), timeout)

    async def start(self) -> None:
        """Listen on 127.0.0.1, a free port."""
        app = web.Application(client_max_size=200 * 1024 * 1024)
        app.router.add_route("*", "/v1/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, shutdown_timeout=1.0, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.base_url = f"http://127.0.0.1:{port}/v1"

    async def close(self) -> None:
        """Stop the server, releasing any held ("timeout") responses."""
        self._closed.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @property
    def problems(self) -> list[str]:
        """Every problem found in any request, prefixed with its path."""
        return [f"{r.path}: {p}" for r in self.requests for p in r.problems]

    # --- handling ------------------------------------------------------------------------
    async def _handle(self, request: web.Request) -> web.StreamResponse:
        rec = RecordedRequest(
            method=request.method,
            path=request.path,
            headers={k.lower(): v for k, v in request.headers.items()},
        )
        is_edit = request.path.endswith("/edits")
        body: dict[str, Any] | None = None
        try:
            if request.method != "POST" or request.path not in _ENDPOINTS:
                raise _Problem(f"no such endpoint: {request.method} {request.path}")
            body = await (
                self._read_edit(request, rec) if is_edit else self._read_json(request, rec)
            )
        except _Problem as exc:
            rec.problems.append(str(exc))
        # recorded once its body is read, so wait_for predicates can look at it
        self.requests.append(rec)
        self._changed.set()
        response = await self._answer(request, rec, body, is_edit)
        rec.status = response.status
        self._changed.set()
        return response

    async def _answer(
        self,
        request: web.Request,
        rec: RecordedRequest,
        body: dict[str, Any] | None,
        is_edit: bool,
    ) -> web.StreamResponse:
        if request.method != "POST" or request.path not in _ENDPOINTS:
            return _error(404, rec.problems[0], "invalid_request_error", "unknown_url")
        if rec.headers.get("authorization") != f"Bearer {self.api_key}":
            return _error(401, _BAD_KEY, "invalid_request_error", "invalid_api_key")
        if body is not None:
            self._check(body, rec, is_edit)
            body["_edit"] = is_edit
        if rec.problems or body is None:
            return _error(400, "; ".join(rec.problems), "invalid_request_error", "invalid_value")
        if self.latency:
            await self._hold(self.latency)
        if self._faults:
            fault, params = self._faults.pop(0)
            rec.fault = fault
            answer = await self._fault(request, fault, params, body)
            if answer is not None:
                return answer
        if body.get("stream") is True:
            return await self._stream(request, body)
        return self._json_answer(await asyncio.to_thread(self._result, body, is_edit))

    async def _read_json(self, request: web.Request, rec: RecordedRequest) -> dict[str, Any]:
        if request.content_type != "application/json":
            raise _Problem(f"generations must be JSON, got {request.content_type}")
        try:
            data = json.loads(await request.read())
        except ValueError as exc:
            raise _Problem(f"body is not JSON: {exc}") from None
        if not isinstance(data, dict):
            raise _Problem("body is not a JSON object")
        rec.json = data
        return dict(data)

    async def _read_edit(self, request: web.Request, rec: RecordedRequest) -> dict[str, Any]:
        if request.content_type != "multipart/form-data":
            raise _Problem(f"edits must be multipart/form-data, got {request.content_type}")
        reader = await request.multipart()
        while (part := await reader.next()) is not None:
            if not isinstance(part, BodyPartReader) or part.name is None:
                raise _Problem("nested or unnamed multipart part")
            if part.filename is not None:
                ctype = part.headers.get("Content-Type", "")
                data = bytes(await part.read())
                rec.files.append(RecordedFile(part.name, part.filename, ctype, data))
            else:
                if part.name in rec.form:
                    rec.problems.append(f"form field {part.name!r} sent twice")
                rec.form[part.name] = await part.text()
        body: dict[str, Any] = {}
        for key, text in rec.form.items():
            body[key] = self._typed(key, text, rec)
        fields = {f.field for f in rec.files}
        if fields - {"image", "image[]", "mask"}:
            rec.problems.append(
                f"unexpected file parts {sorted(fields - {'image', 'image[]', 'mask'})}"
            )
        images = [f for f in rec.files if f.field in ("image", "image[]")]
        if "image" in fields and "image[]" in fields:
            rec.problems.append("send either one 'image' part or 'image[]' parts, not both")
        if sum(f.field == "image" for f in rec.files) > 1:
            rec.problems.append("several parts named 'image': use 'image[]' for more than one")
        if sum(f.field == "mask" for f in rec.files) > 1:
            rec.problems.append("more than one mask")
        if images:
            body["image"] = (
                images[0].filename if "image" in fields else [f.filename for f in images]
            )
        sizes = [self._check_image(f, rec) for f in images]
        for mask in (f for f in rec.files if f.field == "mask"):
            body["mask"] = mask.filename
            self._check_image(mask, rec, sizes[0] if sizes else None)
        body["_first_size"] = sizes[0] if sizes else None
        return body

    @staticmethod
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

    @staticmethod
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

    def _check(self, body: dict[str, Any], rec: RecordedRequest, is_edit: bool) -> None:
        name = "CreateImageEditRequest" if is_edit else "CreateImageRequest"
        validator = schema_validator(name)
        plain = {k: v for k, v in body.items() if not k.startswith("_")}
        for err in validator.iter_errors(plain):
            rec.problems.append(
                f"schema: {'/'.join(map(str, err.path)) or '(body)'}: {err.message}"
            )
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

    # --- answers -------------------------------------------------------------------------
    def _out_size(self, body: dict[str, Any], is_edit: bool) -> tuple[int, int]:
        size = body.get("size") or ("1024x1024" if is_edit else "auto")
        if size != "auto":
            w, h = size.split("x")
            return int(w), int(h)
        first = body.get("_first_size")
        if not is_edit or first is None:
            return (1024, 1024)
        width, height = first
        # keep the source's shape inside gpt-image-2's limits, on the 16-pixel grid
        scale = min(1.0, 3840 / max(width, height), math.sqrt(8_294_400 / (width * height)))
        scale = max(scale, math.sqrt(655_360 / (width * height)))
        snap = math.ceil if scale > 1 else math.floor
        width, height = snap(width * scale / 16) * 16, snap(height * scale / 16) * 16
        if size_problem("gpt-image-2", f"{width}x{height}"):
            return (1024, 1024)
        return width, height

    def _result(self, body: dict[str, Any], is_edit: bool) -> dict[str, Any]:
        size = self._out_size(body, is_edit)
        quality = body.get("quality") or "auto"
        quality = "medium" if quality == "auto" else quality
        transparent = body.get("background") == "transparent"
        fmt = body.get("output_format") or "png"
        n = body.get("n") or 1
        images = [render_image(size, fmt, i, transparent, self.noise) for i in range(n)]
        text_tokens = max(1, len(str(body.get("prompt", ""))) // 4)
        image_tokens = 0
        if is_edit:
            count = len(body["image"]) if isinstance(body.get("image"), list) else 1
            image_tokens = 388 * count  # a plausible per-image input cost
        out = n * (output_tokens(size, quality) + 100 * (body.get("partial_images") or 0))
        usage = {
            "input_tokens": text_tokens + image_tokens,
            "output_tokens": out,
            "total_tokens": text_tokens + image_tokens + out,
            "input_tokens_details": {"text_tokens": text_tokens, "image_tokens": image_tokens},
        }
        return {
            "created": int(time.time()),
            "data": [{"b64_json": base64.b64encode(img).decode()} for img in images],
            "background": "transparent" if transparent else "opaque",
            "output_format": fmt,
            "size": f"{size[0]}x{size[1]}",
            "quality": quality,
            "usage": usage,
            "_images": images,
            "_size": size,
        }

    @staticmethod
    def _json_answer(result: dict[str, Any]) -> web.Response:
        body = {k: v for k, v in result.items() if not k.startswith("_")}
        return web.json_response(body, headers={"x-request-id": _request_id()})

    async def _stream(
        self, request: web.Request, body: dict[str, Any], cut: str | None = None, after: int = 1
    ) -> web.StreamResponse:
        is_edit = bool(body.get("_edit"))
        result = await asyncio.to_thread(self._result, body, is_edit)
        prefix = "image_edit" if is_edit else "image_generation"
        headers = {"Content-Type": "text/event-stream", "x-request-id": _request_id()}
        response = web.StreamResponse(headers=headers)
        await response.prepare(request)
        common = {k: result[k] for k in ("size", "quality", "background", "output_format")}
        width, height = result["_size"]
        small = (max(16, width // 4), max(16, height // 4))  # previews are smaller: fine for tests
        usage = result["usage"]
        per_image = usage["output_tokens"] // len(result["_images"])
        for index, data in enumerate(result["_images"]):
            partials = body.get("partial_images") or 0
            for p in range(min(partials, after) if cut else partials):
                preview = render_image(small, result["output_format"], index * 10 + p, False, False)
                partial = {"b64_json": _b64(preview), "partial_image_index": p, **common}
                await _event(response, f"{prefix}.partial_image", partial)
            if cut == "stream_error":
                error = {
                    "message": "The server had an error while processing your request.",
                    "type": "server_error",
                    "param": None,
                    "code": None,
                }
                await _event(response, "error", {"error": error})
            if cut:
                await response.write_eof()
                return response
            # each completed event carries its own image's share; the input is counted once
            first_input = usage["input_tokens"] if index == 0 else 0
            details = usage["input_tokens_details"] if index == 0 else _NO_INPUT
            share = {
                "input_tokens": first_input,
                "output_tokens": per_image,
                "total_tokens": first_input + per_image,
                "input_tokens_details": details,
            }
            done = {"b64_json": _b64(data), "usage": share, **common}
            await _event(response, f"{prefix}.completed", done)
        if self.send_done:
            await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response

    async def _hold(self, seconds: float | None) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._closed.wait(), seconds)

    async def _fault(
        self, request: web.Request, fault: str, params: dict[str, Any], body: dict[str, Any]
    ) -> web.StreamResponse | None:
        if fault in _ERROR_FAULTS:
            status, etype, code, message = _ERROR_FAULTS[fault]
            if fault == "moderation_blocked":
                categories = ", ".join(params.get("categories", ["sexual"]))
                message = message.format(req=secrets.token_hex(8), categories=categories)
            status = int(params.get("status", status))
            message = params.get("message", message)
            response = _error(status, message, etype, code, params.get("param"))
            if fault == "rate_limit":
                if "retry_after_ms" in params:
                    response.headers["retry-after-ms"] = str(params["retry_after_ms"])
                if "retry_after" in params or "retry_after_ms" not in params:
                    response.headers["retry-after"] = str(params.get("retry_after", 0))
            return response
        if fault == "timeout":
            await self._hold(params.get("seconds"))
            return None
        if fault == "malformed_json":
            broken = b'{"created": 1, "data": [{"b64_json": "iVBO'
            return web.Response(body=broken, content_type="application/json")
        if body.get("stream") is True:
            return await self._stream(request, body, cut=fault, after=params.get("after", 1))
        # stream_cut without streaming: the connection drops halfway through the JSON body
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        response.content_length = 10_000
        await response.prepare(request)
        await response.write(b'{"created": 1, "data": [')
        if request.transport is not None:
            request.transport.close()
        return response


def assert_all_valid(fake: FakeOpenAI) -> None:
    """Fail the test if the fake received an invalid request it was not told to expect."""
    if fake.problems and not fake.expect_invalid:
        pytest.fail("invalid requests sent to the OpenAI fake:\n" + "\n".join(fake.problems))


@pytest_asyncio.fixture
async def openai_fake() -> AsyncIterator[FakeOpenAI]:
    """A started FakeOpenAI; the test fails if any request it got was invalid."""
    fake = FakeOpenAI()
    await fake.start()
    try:
        yield fake
    finally:
        await fake.close()
    assert_all_valid(fake)
