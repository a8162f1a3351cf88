"""The httpx client every OpenAI call goes through: auth and project headers, timeouts, and
keys kept out of the logs."""

from __future__ import annotations

import httpx

from bot.errors import ConfigError
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
