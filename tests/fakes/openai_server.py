"""A fake OpenAI Images API: a real aiohttp server on 127.0.0.1 that checks every request.

Requests are validated against OpenAI's published schema (tests/contracts) plus the rules the
schema cannot express; invalid ones get a 400 like the real API and fail the test at teardown.
Answers carry real images of the asked size and format, real SSE streams and injectable faults.
It also answers Chat Completions (prompt help) with a deterministic rewrite: see ``chat_reply``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import secrets
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import pytest_asyncio
from aiohttp import web

from tests.fakes.openai_checks import (
    CHAT_SCHEMA,
    CHAT_SCHEMA_PATH,
    SCHEMA,
    SCHEMA_PATH,
    Problem,
    RecordedFile,
    RecordedRequest,
    chat_validator,
    check_body,
    check_chat_body,
    read_edit,
    read_json,
    schema_validator,
    size_problem,
)
from tests.fakes.openai_render import b64, image_result, output_tokens, render_image

# Fixtures for driving the real provider against this fake (make_provider, provider, sleeps).
pytest_plugins = ["tests.fakes.openai_client"]

__all__ = [
    "CHAT_FAULTS",
    "CHAT_SCHEMA",
    "CHAT_SCHEMA_PATH",
    "FAULTS",
    "SCHEMA",
    "SCHEMA_PATH",
    "FakeOpenAI",
    "RecordedFile",
    "RecordedRequest",
    "assert_all_valid",
    "chat_reply",
    "chat_validator",
    "openai_fake",
    "output_tokens",
    "render_image",
    "schema_validator",
    "size_problem",
]

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
_BAD_KEY = (
    "Incorrect API key provided: {shown}. You can find your API key at "
    "https://platform.openai.com/account/api-keys."
)
_ENDPOINTS = ("/v1/images/generations", "/v1/images/edits")
_CHAT_ENDPOINT = "/v1/chat/completions"
_NO_MODEL = "The model `{model}` does not exist or you do not have access to it."
_REFUSAL = "I'm sorry, but I can't help with that."
_NO_INPUT = {"text_tokens": 0, "image_tokens": 0}
FAULTS = frozenset(_ERROR_FAULTS) | {
    "timeout",
    "malformed_json",
    "bad_image",
    "stream_cut",
    "stream_error",
    "stream_garbled",
}
# Chat Completions faults: the error ones answer like the images endpoints (plus a 404 for an
# unknown model); empty_content, refusal and no_usage answer 200 with that kind of completion.
CHAT_FAULTS = (frozenset(_ERROR_FAULTS) - {"moderation_blocked"}) | {
    "model_not_found",
    "timeout",
    "malformed_json",
    "stream_cut",
    "empty_content",
    "refusal",
    "no_usage",
}


def chat_reply(prompt: str) -> str:
    """The rewrite the fake answers for a user message ``prompt``."""
    return f"A detailed illustration of {prompt}, soft light, muted palette"


def _text(content: Any) -> str:
    """A message's text, whether a string or a list of content parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""


def _tokens(text: str) -> int:
    return math.ceil(len(text) / 4)


def _completion(body: dict[str, Any], fault: str | None) -> dict[str, Any]:
    """A ``chat.completion`` answering the last user message, shaped by a content fault."""
    messages = [m for m in body["messages"] if isinstance(m, dict)]
    users = [m for m in messages if m.get("role") == "user"]
    reply: str | None = chat_reply(_text(users[-1].get("content")))
    prompt_tokens = sum(_tokens(_text(m.get("content"))) + 4 for m in messages) + 3
    completion_tokens = _tokens(reply or "")
    cap = body.get("max_completion_tokens")
    finish = "stop"
    if isinstance(cap, int) and completion_tokens > cap:
        reply, completion_tokens, finish = (reply or "")[: cap * 4], cap, "length"
    refusal = None
    if fault == "empty_content":
        reply, completion_tokens = "", 0
    elif fault == "refusal":
        reply, refusal = None, _REFUSAL
        completion_tokens = _tokens(_REFUSAL)
    answer: dict[str, Any] = {
        "id": f"chatcmpl-{secrets.token_hex(12)}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": body["model"],
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": reply,
                    "refusal": refusal,
                    "annotations": [],
                },
                "logprobs": None,
                "finish_reason": finish,
            }
        ],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
            "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
            "completion_tokens_details": {
                "reasoning_tokens": 0,
                "audio_tokens": 0,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0,
            },
        },
        "service_tier": "default",
        "system_fingerprint": "fp_fake",
    }
    if fault == "no_usage":
        del answer["usage"]
    return answer


def _request_id() -> str:
    return f"req_{secrets.token_hex(8)}"


def _masked(key: str) -> str:
    """The key as the real API echoes it back: its start and its last four characters."""
    if len(key) <= 12:
        return key[:3] + "*" * max(0, len(key) - 3)
    return key[:8] + "*" * (len(key) - 12) + key[-4:]


async def _event(response: web.StreamResponse, name: str, data: dict[str, Any]) -> None:
    payload = {"type": name, "created_at": int(time.time()), **data}
    await response.write(f"event: {name}\ndata: {json.dumps(payload)}\n\n".encode())


def _error_frame(shape: str = "both", code: str | None = None) -> bytes:
    """An SSE error frame: ``both`` = ``event: error`` with ``type`` and a nested ``error``;
    ``typed`` = ``type: error`` with the fields at the top; ``bare`` = only ``{"error": ...}``.
    """
    if code == "moderation_blocked":
        error = {"type": "image_generation_user_error", "code": code, "param": None}
        error["message"] = _SAFETY.format(req=secrets.token_hex(8), categories="violence")
    else:
        error = {"type": "server_error", "code": code, "param": None, "message": _SERVER_ERROR}
    if shape == "bare":
        return f"data: {json.dumps({'error': error})}\n\n".encode()
    payload: dict[str, Any] = {"type": "error", "created_at": int(time.time())}
    if shape == "typed":  # the frame's own type says "error"; the error's type is not sent
        payload |= {k: v for k, v in error.items() if k != "type"}
    else:
        payload["error"] = error
    return f"event: error\ndata: {json.dumps(payload)}\n\n".encode()


def _error(
    status: int, message: str, etype: str, code: str | None, param: str | None = None
) -> web.Response:
    body = {"error": {"message": message, "type": etype, "param": param, "code": code}}
    return web.json_response(body, status=status, headers={"x-request-id": _request_id()})


class FakeOpenAI:
    """The fake server; ``requests`` lists image requests, ``chat_requests`` chat completions."""

    def __init__(self) -> None:
        self.api_key = "sk-test"
        self.base_url = ""
        self.requests: list[RecordedRequest] = []
        self.chat_requests: list[RecordedRequest] = []
        self.latency = 0.0
        self.noise = False
        self.expect_invalid = False
        self.send_done = False  # end streams with ``data: [DONE]`` as some proxies do
        # when set, every valid request waits for it (or the server closing) before its answer
        self.answer_gate: asyncio.Event | None = None
        # when set, streams pause after their previews until the event is set (or the server
        # closes): proves a client reads previews while the answer is still open
        self.completion_gate: asyncio.Event | None = None
        # when set, every valid chat completion waits for it (or the server closing); latency
        # and answer_gate are for images only
        self.chat_gate: asyncio.Event | None = None
        # image requests received and not yet answered, and the most there ever were at once
        self.in_flight = 0
        self.most_in_flight = 0
        self._faults: list[tuple[str, dict[str, Any]]] = []
        self._chat_faults: list[tuple[str, dict[str, Any]]] = []
        self._runner: web.AppRunner | None = None
        self._closed = asyncio.Event()
        self._changed = asyncio.Event()

    # --- control -------------------------------------------------------------------------
    def fail_next(self, fault: str, *, times: int = 1, **params: Any) -> None:
        """Answer the next ``times`` valid requests with ``fault``.

        Parameters by fault: rate_limit ``retry_after`` (seconds or an HTTP date, default 0)
        and/or ``retry_after_ms``; moderation_blocked ``categories`` (list); invalid_value
        ``message``, ``param``; timeout ``seconds`` (default: until the server closes);
        stream_cut and stream_error ``after`` (previews sent first, default 1); stream_error
        ``shape`` (both, typed, bare: see ``_error_frame``) and ``code`` (moderation_blocked);
        any error fault ``status``.
        stream_cut on a request that does not stream drops the connection mid-body.
        Faults that answer 200 with a broken body: malformed_json (cut-off JSON), bad_image
        (well-formed JSON whose ``b64_json`` is not base64), stream_garbled (a stream event
        that is not JSON; ``after`` previews first) and stream_cut.
        """
        if fault not in FAULTS:
            raise ValueError(f"unknown fault {fault!r}; use one of {sorted(FAULTS)}")
        self._faults.extend((fault, params) for _ in range(times))

    def fail_next_chat(self, fault: str, *, times: int = 1, **params: Any) -> None:
        """Answer the next ``times`` valid chat completions with ``fault`` (see CHAT_FAULTS).

        Image requests never take these, nor chat completions those of ``fail_next``. The
        error faults take ``status`` and ``message``; rate_limit ``retry_after`` and
        ``retry_after_ms``; timeout ``seconds``; stream_cut drops the connection mid-body.
        """
        if fault not in CHAT_FAULTS:
            raise ValueError(f"unknown chat fault {fault!r}; use one of {sorted(CHAT_FAULTS)}")
        self._chat_faults.extend((fault, params) for _ in range(times))

    async def wait_for(
        self,
        predicate: Callable[[RecordedRequest], bool] | None = None,
        *,
        count: int = 1,
        timeout: float = 5.0,  # noqa: ASYNC109 - the fixture's published signature
        chat: bool = False,
    ) -> list[RecordedRequest]:
        """Wait until ``count`` recorded requests (``chat``: completions) match; return them."""

        async def matching() -> list[RecordedRequest]:
            while True:
                recorded = self.chat_requests if chat else self.requests
                found = [r for r in recorded if predicate is None or predicate(r)]
                if len(found) >= count:
                    return found
                self._changed.clear()
                await self._changed.wait()

        return await asyncio.wait_for(matching(), timeout)

    async def wait_until(
        self,
        condition: Callable[[], bool],
        timeout: float = 5.0,  # noqa: ASYNC109 - like wait_for
    ) -> None:
        """Wait until ``condition()`` holds (checked whenever a request arrives or is answered)."""

        async def met() -> None:
            while not condition():
                self._changed.clear()
                await self._changed.wait()

        await asyncio.wait_for(met(), timeout)

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
        for gate in (self.answer_gate, self.completion_gate, self.chat_gate):
            if gate is not None:
                gate.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @property
    def problems(self) -> list[str]:
        """Every problem found in any request, prefixed with its path."""
        recorded = self.requests + self.chat_requests
        return [f"{r.path}: {p}" for r in recorded for p in r.problems]

    # --- handling ------------------------------------------------------------------------
    async def _handle(self, request: web.Request) -> web.StreamResponse:
        if request.method == "POST" and request.path == _CHAT_ENDPOINT:
            return await self._chat(request)
        rec = RecordedRequest(
            method=request.method,
            path=request.path,
            headers={k.lower(): v for k, v in request.headers.items()},
        )
        is_edit = request.path.endswith("/edits")
        body: dict[str, Any] | None = None
        try:
            if request.method != "POST" or request.path not in _ENDPOINTS:
                raise Problem(f"no such endpoint: {request.method} {request.path}")
            body = await (read_edit(request, rec) if is_edit else read_json(request, rec))
        except Problem as exc:
            rec.problems.append(str(exc))
        # recorded once its body is read, so wait_for predicates can look at it
        self.requests.append(rec)
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        self._changed.set()
        try:
            response = await self._answer(request, rec, body, is_edit)
        finally:
            self.in_flight -= 1
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
        auth = rec.headers.get("authorization", "")
        if auth != f"Bearer {self.api_key}":
            shown = _masked(auth.removeprefix("Bearer "))
            message = _BAD_KEY.format(shown=shown)
            return _error(401, message, "invalid_request_error", "invalid_api_key")
        if body is not None:
            check_body(body, rec, is_edit)
            body["_edit"] = is_edit
        if rec.problems or body is None:
            return _error(400, "; ".join(rec.problems), "invalid_request_error", "invalid_value")
        if self.latency:
            await self._hold(self.latency)
        if self.answer_gate is not None:
            await self.answer_gate.wait()
        if self._faults:
            fault, params = self._faults.pop(0)
            rec.fault = fault
            answer = await self._fault(request, fault, params, body)
            if answer is not None:
                return answer
        if body.get("stream") is True:
            return await self._stream(request, body)
        return self._json_answer(await asyncio.to_thread(image_result, body, is_edit, self.noise))

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        rec = RecordedRequest(
            method=request.method,
            path=request.path,
            headers={k.lower(): v for k, v in request.headers.items()},
        )
        body: dict[str, Any] | None = None
        try:
            body = await read_json(request, rec)
        except Problem as exc:
            rec.problems.append(str(exc))
        self.chat_requests.append(rec)
        self._changed.set()
        response = await self._chat_answer(request, rec, body)
        rec.status = response.status
        self._changed.set()
        return response

    async def _chat_answer(
        self, request: web.Request, rec: RecordedRequest, body: dict[str, Any] | None
    ) -> web.StreamResponse:
        auth = rec.headers.get("authorization", "")
        if auth != f"Bearer {self.api_key}":
            message = _BAD_KEY.format(shown=_masked(auth.removeprefix("Bearer ")))
            return _error(401, message, "invalid_request_error", "invalid_api_key")
        if body is not None:
            check_chat_body(body, rec)
        if rec.problems or body is None:
            return _error(400, "; ".join(rec.problems), "invalid_request_error", "invalid_value")
        if self.chat_gate is not None:
            await self.chat_gate.wait()
        fault: str | None = None
        if self._chat_faults:
            fault, params = self._chat_faults.pop(0)
            rec.fault = fault
            if fault == "model_not_found":
                message = params.get("message", _NO_MODEL.format(model=body["model"]))
                status = int(params.get("status", 404))
                return _error(status, message, "invalid_request_error", "model_not_found")
            if fault not in ("empty_content", "refusal", "no_usage"):
                answer = await self._fault(request, fault, params, body)
                if answer is not None:
                    return answer
                fault = None  # a timeout that ended answers normally
        rec.answer = _completion(body, fault)
        return web.json_response(rec.answer, headers={"x-request-id": _request_id()})

    # --- answers -------------------------------------------------------------------------
    @staticmethod
    def _json_answer(result: dict[str, Any]) -> web.Response:
        body = {k: v for k, v in result.items() if not k.startswith("_")}
        return web.json_response(body, headers={"x-request-id": _request_id()})

    async def _stream(
        self,
        request: web.Request,
        body: dict[str, Any],
        cut: str | None = None,
        after: int = 1,
        frame: dict[str, Any] | None = None,
    ) -> web.StreamResponse:
        is_edit = bool(body.get("_edit"))
        result = await asyncio.to_thread(image_result, body, is_edit, self.noise)
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
                partial = {"b64_json": b64(preview), "partial_image_index": p, **common}
                await _event(response, f"{prefix}.partial_image", partial)
            if cut == "stream_error":
                await response.write(_error_frame(**(frame or {})))
            if cut == "stream_garbled":
                await response.write(f"event: {prefix}.completed\ndata: {{not json\n\n".encode())
            if cut:
                await response.write_eof()
                return response
            if self.completion_gate is not None:
                await self.completion_gate.wait()
            # each completed event carries its own image's share; the input is counted once
            first_input = usage["input_tokens"] if index == 0 else 0
            details = usage["input_tokens_details"] if index == 0 else _NO_INPUT
            share = {
                "input_tokens": first_input,
                "output_tokens": per_image,
                "total_tokens": first_input + per_image,
                "input_tokens_details": details,
            }
            done = {"b64_json": b64(data), "usage": share, **common}
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
        if fault == "bad_image":
            mangled = {"created": int(time.time()), "data": [{"b64_json": "not base64!"}]}
            return web.json_response(mangled, headers={"x-request-id": _request_id()})
        if body.get("stream") is True:
            frame = {k: params[k] for k in ("shape", "code") if k in params}
            return await self._stream(
                request, body, cut=fault, after=params.get("after", 1), frame=frame
            )
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
