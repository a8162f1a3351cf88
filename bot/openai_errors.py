"""Turn OpenAI API error answers into the bot's exceptions, following the official SDK's rules."""

from __future__ import annotations

import email.utils
import logging
import re
import time
from collections.abc import Mapping
from typing import Any

from bot.errors import (
    ContentBlocked,
    ImagineError,
    InvalidRequest,
    ProviderMisconfigured,
    ProviderUnavailable,
    QuotaExhausted,
)
from bot.redact import redact

__all__ = [
    "MAX_RETRY_AFTER",
    "RetryableError",
    "UnreadableAnswer",
    "error_fields",
    "logger",
    "map_error",
    "redact",
    "retry_after_seconds",
    "safety_categories",
]

logger = logging.getLogger("bot.provider")

# The SDK waits out a server-given retry-after up to this long; anything longer is not worth
# holding a user's request for, so we give up at once and pass the wait on to the user.
MAX_RETRY_AFTER = 120.0
_RETRY_STATUSES = frozenset({408, 409, 429})
_SAFETY = re.compile(r"safety_violations=\[([^\]]*)\]")


class RetryableError(ImagineError):
    """A failure worth another attempt; ``retry_after`` is the server's wait, if it gave one."""

    def __init__(self, detail: str, *, retry_after: float | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.retry_after = retry_after


class UnreadableAnswer(ProviderUnavailable):
    """The service answered 200 but the body broke off or could not be read; never retried.

    Each attempt may be billed as a generation, so a broken success is final (as in OpenAI's SDK).
    """

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.user_message = (
            "The image service's answer broke off or could not be read, so no image came back. "
            "Nothing was charged; try again in a minute or two."
        )
        self.args = (self.user_message,)


def retry_after_seconds(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """The wait the server asked for: ``retry-after-ms``, else ``retry-after`` (seconds or date)."""
    millis = headers.get("retry-after-ms")
    if millis is not None:
        try:
            return max(0.0, float(millis) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, moment.timestamp() - (time.time() if now is None else now))


def safety_categories(message: str) -> tuple[str, ...]:
    """The categories named in a ``moderation_blocked`` message (``safety_violations=[a, b]``)."""
    match = _SAFETY.search(message)
    if not match:
        return ()
    return tuple(part.strip() for part in match.group(1).split(",") if part.strip())


def error_fields(body: Any) -> tuple[str, str, str | None, str | None]:
    """``(message, type, code, param)`` from an error body, tolerating odd shapes."""
    nested = body.get("error") if isinstance(body, dict) else None
    flat = not isinstance(nested, dict)
    error: dict[str, Any] = body if flat and isinstance(body, dict) else nested or {}
    message = error.get("message")
    etype = error.get("type")
    if flat and etype == "error":
        etype = None  # a flat stream frame's type names the event, not the kind of error
    code = error.get("code")
    param = error.get("param")
    return (
        message if isinstance(message, str) else "",
        etype if isinstance(etype, str) else "",
        code if isinstance(code, str) else None,
        param if isinstance(param, str) else None,
    )


def map_error(
    status: int | None,
    body: Any,
    headers: Mapping[str, str],
    *,
    request_id: str | None = None,
) -> Exception:
    """The exception for an error answer: RetryableError when another attempt may succeed.

    ``status`` is None for an error frame inside an event stream.
    """
    message, etype, code, param = error_fields(body)
    label = f"HTTP {status}" if status is not None else "stream error"
    detail = f"{label} {code or etype or 'error'}: {redact(message) or 'no message'}"
    if request_id:
        detail += f" (request {request_id})"
    # the same error type also covers other input problems; only safety refusals name violations
    if code == "moderation_blocked" or (
        etype == "image_generation_user_error" and "safety" in message.lower()
    ):
        return ContentBlocked(safety_categories(message))
    if code == "insufficient_quota" or etype == "insufficient_quota":
        logger.warning("OpenAI account is out of credit: %s", detail)
        return QuotaExhausted()
    if status in (401, 403):
        fix = (
            "check OPENAI_API_KEY"
            if status == 401
            else "check that the key's organization/project (OPENAI_ORG_ID, OPENAI_PROJECT_ID) "
            "may use this model; gpt-image models may need a verified organization"
        )
        logger.error("OpenAI refused the credentials (%s): %s", detail, fix)
        return ProviderMisconfigured(f"{detail}; {fix}")
    retry_after = retry_after_seconds(headers)
    should_retry = headers.get("x-should-retry")
    if should_retry == "true":
        retryable = True
    elif should_retry == "false":
        retryable = False
    else:
        retryable = (status is None and etype in ("server_error", "requests", "")) or (
            status is not None and (status in _RETRY_STATUSES or status >= 500)
        )
    if retryable:
        if retry_after is not None and retry_after > MAX_RETRY_AFTER:
            return ProviderUnavailable(detail, retry_after=retry_after)
        return RetryableError(detail, retry_after=retry_after)
    if status is not None and (status in _RETRY_STATUSES or status >= 500):
        return ProviderUnavailable(detail, retry_after=retry_after)
    text = message.strip() or "The image service refused the request."
    return InvalidRequest(f"The image service refused the request: {redact(text)}", param=param)
