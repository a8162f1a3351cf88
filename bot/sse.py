"""Reading the Images API's answers: JSON bodies and server-sent event streams."""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

import httpx
from httpx_sse import EventSource, SSEError

from bot.errors import ProviderUnavailable
from bot.models import GeneratedImage, PartialCallback, ProviderResult, Usage
from bot.openai_errors import RetryableError, UnreadableAnswer, map_error, redact


def _int(mapping: Any, key: str) -> int:
    value = mapping.get(key) if isinstance(mapping, dict) else None
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def parse_usage(raw: Any) -> Usage | None:
    """The API's ``usage`` object as Usage (None when absent)."""
    if not isinstance(raw, dict):
        return None
    details = raw.get("input_tokens_details")
    cached_details = details.get("cached_tokens_details") if isinstance(details, dict) else None
    return Usage(
        input_tokens=_int(raw, "input_tokens"),
        output_tokens=_int(raw, "output_tokens"),
        total_tokens=_int(raw, "total_tokens"),
        input_text_tokens=_int(details, "text_tokens"),
        input_image_tokens=_int(details, "image_tokens"),
        cached_input_tokens=_int(details, "cached_tokens"),
        cached_image_tokens=_int(cached_details, "image_tokens")
        or _int(details, "cached_image_tokens"),
    )


def _add_usage(total: Usage | None, more: Usage | None) -> Usage | None:
    if total is None or more is None:
        return more if total is None else total
    return Usage(*(a + b for a, b in zip(_usage_tuple(total), _usage_tuple(more), strict=True)))


def _usage_tuple(usage: Usage) -> tuple[int, ...]:
    return (
        usage.input_tokens,
        usage.output_tokens,
        usage.total_tokens,
        usage.input_text_tokens,
        usage.input_image_tokens,
        usage.cached_input_tokens,
        usage.cached_image_tokens,
    )


def _b64_image(payload: dict[str, Any]) -> bytes:
    data = payload.get("b64_json")
    if not isinstance(data, str):
        raise UnreadableAnswer("the answer has no b64_json image")
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise UnreadableAnswer("the answer's image is not valid base64") from None


def _text(payload: dict[str, Any], key: str) -> str | None:
    value = payload.get(key)
    return value if isinstance(value, str) else None


def result_from_json(body: Any, fmt: str, request_id: str | None) -> ProviderResult:
    """The images of a 200 JSON answer; UnreadableAnswer when it is not the documented shape."""
    if not isinstance(body, dict) or not isinstance(body.get("data"), list):
        raise UnreadableAnswer(f"the answer has no image list (request {request_id})")
    output_format = _text(body, "output_format") or fmt
    images = tuple(
        GeneratedImage(_b64_image(item if isinstance(item, dict) else {}), output_format)
        for item in body["data"]
    )
    return ProviderResult(
        images=images,
        usage=parse_usage(body.get("usage")),
        request_id=request_id,
        size=_text(body, "size"),
        quality=_text(body, "quality"),
        background=_text(body, "background"),
        output_format=output_format,
    )


async def read_stream(
    response: httpx.Response, fmt: str, request_id: str | None, on_partial: PartialCallback
) -> ProviderResult:
    """Read an image event stream, handing each preview to ``on_partial`` as it arrives."""
    images: list[GeneratedImage] = []
    usage: Usage | None = None
    last: dict[str, Any] = {}
    previews = 0
    try:
        async for event in EventSource(response).aiter_sse():
            if event.data.strip() == "[DONE]":
                break
            if not event.data.strip():
                continue
            try:
                payload = json.loads(event.data)
            except ValueError:
                raise UnreadableAnswer("a stream event was not JSON") from None
            kind = payload.get("type", event.event) if isinstance(payload, dict) else ""
            if not isinstance(payload, dict) or kind == "error" or "error" in payload:
                error = map_error(None, payload, {}, request_id=request_id)
                if isinstance(error, RetryableError):
                    # the stream already answered 200: the service's failure is final here
                    error = ProviderUnavailable(_after(error.detail, previews))
                raise error
            if kind.endswith(".partial_image"):
                index = payload.get("partial_image_index", previews)
                await on_partial(
                    index if isinstance(index, int) else previews,
                    _b64_image(payload),
                    _text(payload, "output_format") or fmt,
                )
                previews += 1
            elif kind.endswith(".completed"):
                # How n > 1 streams is undocumented: keep every completed event and add up their
                # usage, so a repeated total over-counts the bill rather than under-counting it
                images.append(
                    GeneratedImage(_b64_image(payload), _text(payload, "output_format") or fmt)
                )
                usage = _add_usage(usage, parse_usage(payload.get("usage")))
                last = payload
    except UnreadableAnswer as exc:
        raise UnreadableAnswer(_after(f"{exc.detail} (request {request_id})", previews)) from None
    except (httpx.TransportError, SSEError) as exc:
        detail = redact(f"the stream broke: {type(exc).__name__}: {exc} (request {request_id})")
        raise UnreadableAnswer(_after(detail, previews)) from None
    if not images:
        detail = f"the stream ended before the image was done (request {request_id})"
        raise UnreadableAnswer(_after(detail, previews))
    return ProviderResult(
        images=tuple(images),
        usage=usage,
        request_id=request_id,
        size=_text(last, "size"),
        quality=_text(last, "quality"),
        background=_text(last, "background"),
        output_format=_text(last, "output_format") or fmt,
    )


def _after(detail: str, previews: int) -> str:
    return f"{detail} after {previews} preview(s)" if previews else detail
