"""The httpx client every OpenAI call goes through: auth and project headers, timeouts, and
keys kept out of the logs."""

from __future__ import annotations

import random

import httpx
from tenacity import RetryCallState

from bot.errors import ConfigError
from bot.openai_errors import MAX_RETRY_AFTER, RetryableError
from bot.redact import HTTP_LOGGERS, LOG_FILTER, protect_loggers


def openai_client(
    *,
    api_key: str,
    base_url: str,
    organization: str | None,
    project: str | None,
    timeout: float,
    transport: httpx.AsyncBaseTransport | None,
) -> httpx.AsyncClient:
    """A client for ``base_url`` that sends the key (redacted from every log) and the ids."""
    headers = {"Authorization": f"Bearer {api_key}", "User-Agent": "imagine-bot"}
    if organization:
        headers["OpenAI-Organization"] = organization
    if project:
        headers["OpenAI-Project"] = project
    LOG_FILTER.add_secret(api_key)
    protect_loggers(*HTTP_LOGGERS)
    try:
        return httpx.AsyncClient(
            base_url=base_url.rstrip("/") + "/",
            headers=headers,
            timeout=httpx.Timeout(timeout, connect=5.0),
            transport=transport,
        )
    except UnicodeEncodeError:
        # httpx sends headers as ASCII; say which setting holds the character, not its value
        variable = next(
            (
                name
                for name, value in (
                    ("OPENAI_API_KEY", api_key),
                    ("OPENAI_ORG_ID", organization or ""),
                    ("OPENAI_PROJECT_ID", project or ""),
                )
                if not value.isascii()
            ),
            "OPENAI_API_KEY",
        )
        raise ConfigError(
            variable, "holds a non-ASCII character, which an HTTP header cannot carry"
        ) from None


def retry_wait(state: RetryCallState, backoff_scale: float = 1.0) -> float:
    """The wait before the next attempt, like OpenAI's SDK: the server's ``retry-after`` when it
    gives a reasonable one, else 0.5 s doubling to 8 s, less up to a quarter of jitter."""
    exc = state.outcome.exception() if state.outcome else None
    if (
        isinstance(exc, RetryableError)
        and exc.retry_after is not None
        and exc.retry_after <= MAX_RETRY_AFTER
    ):
        return exc.retry_after
    retries_done = state.attempt_number - 1
    delay = min(0.5 * 2.0**retries_done, 8.0) * (1 - 0.25 * random.random())
    return delay * backoff_scale
