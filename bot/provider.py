"""The image provider port and its OpenAI Images implementation (httpx, SSE, SDK-style retries)."""

from __future__ import annotations

import asyncio
import json
import random
import re
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import httpx
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, stop_after_attempt

from bot.config import Settings
from bot.errors import InvalidRequest, InvalidSize, ProviderUnavailable
from bot.models import (
    ImageRequest,
    PartialCallback,
    ProviderResult,
)
from bot.openai_errors import MAX_RETRY_AFTER, RetryableError, logger, map_error
from bot.sse import parse_usage, read_stream, result_from_json

__all__ = ["ImageProvider", "OpenAIImages", "check_options", "check_size", "parse_usage"]

STANDARD_SIZES = ("1024x1024", "1536x1024", "1024x1536")
MAX_SOURCES = 16
MAX_PROMPT = 32_000
MIN_PIXELS, MAX_PIXELS, MAX_EDGE = 655_360, 8_294_400, 3840
_SIZE = re.compile(r"^(\d+)x(\d+)$")
_CHOICES = {
    "quality": ("auto", "low", "medium", "high"),
    "background": ("auto", "opaque", "transparent"),
    "output_format": ("png", "jpeg", "webp"),
    "moderation": ("auto", "low"),
}


class ImageProvider(Protocol):
    """Makes images for a request; the service depends on this, tests may swap it."""

    async def create_images(
        self, request: ImageRequest, *, on_partial: PartialCallback | None = None
    ) -> ProviderResult:
        """Generate (no sources) or edit (sources) images."""
        ...

    async def aclose(self) -> None:
        """Release network resources."""
        ...


# --- validation before spending a request ------------------------------------------------


def _size_rule_broken(width: int, height: int) -> str | None:
    if width % 16 or height % 16:
        return "Width and height must both be divisible by 16"
    if max(width, height) > 3 * min(width, height):
        return "The shape can be at most 3 times as wide as tall (or as tall as wide)"
    if max(width, height) > MAX_EDGE:
        return f"The longest side can be at most {MAX_EDGE} pixels"
    if width * height < MIN_PIXELS:
        return f"The image must have at least {MIN_PIXELS:,} pixels (about 1024x640)"
    if width * height > MAX_PIXELS:
        return f"The image can have at most {MAX_PIXELS:,} pixels (3840x2160)"
    return None


def _suggest_size(width: int, height: int) -> str:
    """The nearest size (same shape where possible) that obeys every gpt-image-2 rule."""
    width, height = max(width, 1), max(height, 1)
    if max(width, height) > 3 * min(width, height):
        if width > height:
            width = 3 * height
        else:
            height = 3 * width
    scale = min(1.0, MAX_EDGE / max(width, height), (MAX_PIXELS / (width * height)) ** 0.5)
    scale = max(scale, (MIN_PIXELS / (width * height)) ** 0.5)
    candidates = []
    for snap_w in (round, int, lambda v: int(v) + 1):
        for snap_h in (round, int, lambda v: int(v) + 1):
            w = max(16, snap_w(width * scale / 16) * 16)
            h = max(16, snap_h(height * scale / 16) * 16)
            if _size_rule_broken(w, h) is None:
                candidates.append((abs(w - width * scale) + abs(h - height * scale), w, h))
    if not candidates:
        return "1024x1024"
    _, w, h = min(candidates)
    return f"{w}x{h}"


def check_size(model: str, size: str) -> None:
    """Raise InvalidSize, naming the broken rule and a size that would work."""
    if size == "auto" or size in STANDARD_SIZES:
        return
    match = _SIZE.match(size)
    if not model.startswith("gpt-image-2"):
        raise InvalidSize(
            f"{model} only makes 1024x1024, 1536x1024 or 1024x1536 (or auto); "
            "custom sizes need gpt-image-2."
        )
    if not match:
        raise InvalidSize(f"Can't read the size {size!r}; write it like 1536x1024, or use auto.")
    width, height = int(match[1]), int(match[2])
    broken = _size_rule_broken(width, height)
    if broken:
        raise InvalidSize(f"{broken}, so {size} won't work. Try {_suggest_size(width, height)}.")


def check_options(request: ImageRequest) -> None:
    """Raise InvalidRequest for anything the API would refuse, before paying for a call."""
    options = request.options
    prompt = request.prompt.strip()
    if not prompt:
        raise InvalidRequest("Please describe the image you want.", param="prompt")
    if len(request.prompt) > MAX_PROMPT:
        raise InvalidRequest(
            f"The prompt is {len(request.prompt):,} characters; the limit is {MAX_PROMPT:,}.",
            param="prompt",
        )
    if not 1 <= options.n <= 10:
        raise InvalidRequest("You can ask for 1 to 10 images at once.", param="n")
    if not 0 <= options.partial_images <= 3:
        raise InvalidRequest("Previews (partial images) can be 0 to 3.", param="partial_images")
    for param, allowed in _CHOICES.items():
        value = getattr(options, param)
        if value not in allowed:
            raise InvalidRequest(
                f"{param.replace('_', ' ').capitalize()} {value!r} isn't available; "
                f"choose {', '.join(allowed)}.",
                param=param,
            )
    if options.background == "transparent" and options.output_format not in ("png", "webp"):
        raise InvalidRequest(
            "A transparent background needs PNG or WebP output, not JPEG.", param="background"
        )
    if options.output_compression is not None:
        if options.output_format not in ("jpeg", "webp"):
            raise InvalidRequest(
                "Compression only applies to JPEG or WebP output.", param="output_compression"
            )
        if not 0 <= options.output_compression <= 100:
            raise InvalidRequest(
                "Compression must be between 0 and 100.", param="output_compression"
            )
    if len(request.sources) > MAX_SOURCES:
        raise InvalidRequest(
            f"At most {MAX_SOURCES} images can be edited together; you gave "
            f"{len(request.sources)}.",
            param="image",
        )
    if request.mask is not None and not request.sources:
        raise InvalidRequest("A mask needs an image to apply to.", param="mask")
    check_size(options.model, options.size)


# --- the client --------------------------------------------------------------------------

Sleep = Callable[[float], Awaitable[None]]


class OpenAIImages(ImageProvider):
    """OpenAI's Images API over httpx: JSON generations, multipart edits, SSE previews."""

    def __init__(
        self,
        *,
        api_key: str,
        base_url: str = "https://api.openai.com/v1",
        organization: str | None = None,
        project: str | None = None,
        timeout: float = 600.0,
        max_retries: int = 2,
        transport: httpx.AsyncBaseTransport | None = None,
        backoff_scale: float = 1.0,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        headers = {"Authorization": f"Bearer {api_key}", "User-Agent": "imagine-bot"}
        if organization:
            headers["OpenAI-Organization"] = organization
        if project:
            headers["OpenAI-Project"] = project
        self._client = httpx.AsyncClient(
            base_url=base_url.rstrip("/") + "/",
            headers=headers,
            timeout=httpx.Timeout(timeout, connect=5.0),
            transport=transport,
        )
        self._timeout = timeout
        self._max_retries = max(0, max_retries)
        self._backoff_scale = backoff_scale
        self._sleep = sleep

    @classmethod
    def from_settings(cls, settings: Settings, *, backoff_scale: float = 1.0) -> OpenAIImages:
        """The provider configured from OPENAI_* settings."""
        return cls(
            api_key=settings.require_openai_key(),
            base_url=settings.openai_base_url,
            organization=settings.openai_org_id,
            project=settings.openai_project_id,
            timeout=settings.openai_timeout,
            max_retries=settings.openai_max_retries,
            backoff_scale=backoff_scale,
        )

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._client.aclose()

    async def create_images(
        self, request: ImageRequest, *, on_partial: PartialCallback | None = None
    ) -> ProviderResult:
        """Generate or edit images, retrying like the official SDK; raises UserFacingError."""
        stream = request.options.partial_images > 0 and on_partial is not None
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self._max_retries + 1),
            retry=retry_if_exception_type(RetryableError),
            wait=self._wait,
            sleep=self._sleep,
            before_sleep=self._log_retry,
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    return await self._attempt(request, on_partial if stream else None)
        except RetryableError as exc:
            logger.warning("image request failed after %d attempts: %s", self._tries, exc.detail)
            raise ProviderUnavailable(exc.detail, retry_after=exc.retry_after) from exc
        raise AssertionError("unreachable: tenacity either returns or raises")

    @property
    def _tries(self) -> int:
        return self._max_retries + 1

    def _wait(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        if (
            isinstance(exc, RetryableError)
            and exc.retry_after is not None
            and exc.retry_after <= MAX_RETRY_AFTER
        ):
            return exc.retry_after
        retries_done = state.attempt_number - 1
        delay = min(0.5 * 2.0**retries_done, 8.0) * (1 - 0.25 * random.random())
        return delay * self._backoff_scale

    def _log_retry(self, state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        wait = state.next_action.sleep if state.next_action else 0.0
        logger.warning(
            "image request attempt %d of %d failed (%s); retrying in %.2f s",
            state.attempt_number,
            self._tries,
            getattr(exc, "detail", exc),
            wait,
        )

    def _body(self, request: ImageRequest, stream: bool) -> dict[str, Any]:
        options = request.options
        body: dict[str, Any] = {
            "model": options.model,
            "prompt": request.prompt,
            "n": options.n,
            "size": options.size,
            "quality": options.quality,
            "background": options.background,
            "output_format": options.output_format,
            "user": request.requester.hashed_id,
        }
        if options.output_compression is not None and options.output_format in ("jpeg", "webp"):
            body["output_compression"] = options.output_compression
        if not request.is_edit:
            body["moderation"] = options.moderation  # the multipart edit form has no such field
        if stream:
            body["stream"] = True
            body["partial_images"] = options.partial_images
        return body

    def _build(self, request: ImageRequest, stream: bool) -> httpx.Request:
        body = self._body(request, stream)
        if not request.is_edit:
            return self._client.build_request("POST", "images/generations", json=body)
        form = {
            key: ("true" if value else "false") if isinstance(value, bool) else str(value)
            for key, value in body.items()
        }
        # The API reads one source from a part named "image" and several from "image[]" parts.
        name = "image" if len(request.sources) == 1 else "image[]"
        files = [(name, (s.filename, s.data, s.mime)) for s in request.sources]
        if request.mask is not None:
            mask = request.mask
            files.append(("mask", (mask.filename, mask.data, mask.mime or "image/png")))
        return self._client.build_request("POST", "images/edits", data=form, files=files)

    async def _attempt(
        self, request: ImageRequest, on_partial: PartialCallback | None
    ) -> ProviderResult:
        outgoing = self._build(request, stream=on_partial is not None)
        kind = "edit" if request.is_edit else "generation"
        try:
            async with asyncio.timeout(self._timeout):
                response = await self._client.send(outgoing, stream=True)
                try:
                    return await self._read(response, request, on_partial, kind)
                finally:
                    await response.aclose()
        except (TimeoutError, httpx.TimeoutException):
            raise RetryableError(f"no answer within {self._timeout:g} s") from None
        except httpx.TransportError as exc:
            raise RetryableError(f"connection problem: {type(exc).__name__}: {exc}") from None

    async def _read(
        self,
        response: httpx.Response,
        request: ImageRequest,
        on_partial: PartialCallback | None,
        kind: str,
    ) -> ProviderResult:
        request_id = response.headers.get("x-request-id")
        fmt = request.options.output_format
        content_type = response.headers.get("content-type", "")
        if response.status_code != 200:
            raw = await response.aread()
            try:
                body: Any = json.loads(raw)
            except ValueError:
                body = {"error": {"message": raw[:200].decode(errors="replace")}}
            logger.warning(
                "OpenAI %s answered %d (request %s)", kind, response.status_code, request_id
            )
            raise map_error(response.status_code, body, response.headers, request_id=request_id)
        if on_partial is not None and "text/event-stream" in content_type:
            result = await read_stream(response, fmt, request_id, on_partial)
        else:
            try:
                result = result_from_json(json.loads(await response.aread()), fmt, request_id)
            except ValueError:
                raise RetryableError(
                    f"the answer was not valid JSON (request {request_id})"
                ) from None
        logger.info("OpenAI %s made %d image(s) (request %s)", kind, len(result.images), request_id)
        return result
