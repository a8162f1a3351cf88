"""The image provider port and its OpenAI Images client (httpx, SSE, SDK-style retries)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import httpx
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, stop_after_attempt

from bot.config import Settings
from bot.errors import ProviderMisconfigured, ProviderUnavailable
from bot.image_rules import MAX_SOURCES, check_options
from bot.models import (
    ImageRequest,
    PartialCallback,
    ProviderResult,
)
from bot.openai_errors import (
    RetryableError,
    UnreadableAnswer,
    logger,
    map_error,
    redact,
)
from bot.openai_http import openai_client, retry_wait
from bot.sse import read_stream, result_from_json

# The gpt-image rules live in bot.image_rules; the service and adapters import these here.
__all__ = ["MAX_SOURCES", "ImageProvider", "OpenAIImages", "check_options"]


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
        self._secrets = (api_key,)
        self._client = openai_client(
            api_key=api_key,
            base_url=base_url,
            organization=organization,
            project=project,
            timeout=timeout,
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
            logger.warning(
                "image request failed after %d attempts: %s", self._tries, self._redact(exc.detail)
            )
            raise ProviderUnavailable(exc.detail, retry_after=exc.retry_after) from exc
        raise AssertionError("unreachable: tenacity either returns or raises")

    @property
    def _tries(self) -> int:
        return self._max_retries + 1

    def _wait(self, state: RetryCallState) -> float:
        return retry_wait(state, self._backoff_scale)

    def _log_retry(self, state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        wait = state.next_action.sleep if state.next_action else 0.0
        logger.warning(
            "image request attempt %d of %d failed (%s); retrying in %.2f s",
            state.attempt_number,
            self._tries,
            self._redact(str(getattr(exc, "detail", exc))),
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
        # Once a 200 arrived the image may be made and billed: whatever breaks after that is
        # final, never retried (OpenAI's SDK, too, only retries before a success status).
        answered = False
        try:
            async with asyncio.timeout(self._timeout):
                response = await self._client.send(outgoing, stream=True)
                try:
                    if response.status_code != 200:
                        raise await self._refusal(response, kind)
                    answered = True
                    return await self._read(response, request, on_partial, kind)
                finally:
                    await response.aclose()
        except (TimeoutError, httpx.TimeoutException):
            if answered:
                raise self._broken(kind, f"the answer stopped within {self._timeout:g} s") from None
            raise RetryableError(f"no answer within {self._timeout:g} s") from None
        except httpx.LocalProtocolError as exc:
            raise self._unsendable(exc) from None
        except httpx.TransportError as exc:
            problem = self._redact(f"{type(exc).__name__}: {exc}")
            if answered:
                raise self._broken(kind, f"the connection broke mid-answer: {problem}") from None
            raise RetryableError(f"connection problem: {problem}") from None

    def _redact(self, text: str) -> str:
        return redact(text, *self._secrets)

    def _broken(self, kind: str, detail: str) -> UnreadableAnswer:
        logger.warning("OpenAI %s answered 200 but %s; not retried", kind, detail)
        return UnreadableAnswer(detail)

    def _unsendable(self, exc: httpx.LocalProtocolError) -> ProviderMisconfigured:
        """The request itself can't be sent: a header holds a character HTTP forbids.

        httpx quotes the refused value (the API key) in its message, so none of it is kept.
        """
        problem = "a header value" if "header" in str(exc).lower() else "the request"
        detail = (
            f"the request could not be sent: {problem} is not valid HTTP "
            f"({type(exc).__name__}); check OPENAI_API_KEY, OPENAI_ORG_ID and OPENAI_PROJECT_ID "
            "for spaces, line breaks or other characters"
        )
        logger.error("OpenAI is misconfigured: %s", detail)
        return ProviderMisconfigured(detail)

    async def _refusal(self, response: httpx.Response, kind: str) -> Exception:
        request_id = response.headers.get("x-request-id")
        raw = await response.aread()
        try:
            body: Any = json.loads(raw)
        except ValueError:
            body = {"error": {"message": self._redact(raw[:200].decode(errors="replace"))}}
        logger.warning("OpenAI %s answered %d (request %s)", kind, response.status_code, request_id)
        return map_error(response.status_code, body, response.headers, request_id=request_id)

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
        try:
            if on_partial is not None and "text/event-stream" in content_type:
                result = await read_stream(response, fmt, request_id, on_partial)
            else:
                try:
                    body = json.loads(await response.aread())
                except ValueError:
                    raise UnreadableAnswer(
                        f"the answer was not valid JSON (request {request_id or 'unknown'})"
                    ) from None
                result = result_from_json(body, fmt, request_id)
        except UnreadableAnswer as exc:
            logger.warning("OpenAI %s answered 200 but %s; not retried", kind, exc.detail)
            raise
        logger.info("OpenAI %s made %d image(s) (request %s)", kind, len(result.images), request_id)
        return result
