"""Slack's rate limits kept on the bot's side: calls are paced per method, and a 429 is waited out.

Slack docs (docs.slack.dev/apis/web-api/rate-limits): limits apply per method per app per
workspace. Tier 1 allows 1+ calls a minute, Tier 2 20+, Tier 3 50+, Tier 4 100+; chat.postMessage
is special: about one message per second per channel, short bursts allowed. Each method's page
(docs.slack.dev/reference/methods/<method>) names its tier. A limited call is answered HTTP 429
with ``Retry-After`` (seconds) and ``{"ok": false, "error": "ratelimited"}``.

The bot holds one workspace's token, so "per workspace" is per process here. Calls that must land
(a placeholder, an upload, a final edit) wait for their turn and are retried after a 429; progress
edits run under ``best_effort()``: they take only spare capacity and never wait.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

import aiohttp
from aiohttp import FormData
from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.web.async_slack_response import AsyncSlackResponse

from bot import metrics
from bot.pacing import CallBudget

logger = logging.getLogger("adapters.slack")

PLATFORM = "slack"

TIER_1, TIER_2, TIER_3, TIER_4 = 1, 20, 50, 100
MINUTE = 60.0

# Calls a minute, from each method's page on docs.slack.dev.
METHOD_TIERS: dict[str, int] = {
    "apps.connections.open": TIER_1,
    "chat.update": TIER_3,
    "chat.delete": TIER_3,
    "conversations.join": TIER_3,
    "files.delete": TIER_3,
    "auth.test": TIER_4,  # "special", far above what one process needs
    "chat.postEphemeral": TIER_4,
    "files.completeUploadExternal": TIER_4,
    "files.getUploadURLExternal": TIER_4,
    "files.info": TIER_4,
    "users.info": TIER_4,
    "views.open": TIER_4,
}
# chat.postMessage: one a second per channel; a burst of three is "short".
POSTS_PER_CHANNEL = (3, 3.0)
# Our clock starts a window before Slack's sees the call: wait a little longer than Slack.
_MARGIN = 1.05
_SLACK = 0.02

# How often a call that must land is retried after 429s before the error is raised.
MAX_RATE_LIMIT_RETRIES = 6
_LONGEST_WAIT = 120.0

_best_effort: contextvars.ContextVar[int | None] = contextvars.ContextVar(
    "slack_best_effort", default=None
)


class Deferred(Exception):
    """A best-effort call found no spare capacity; nothing was sent."""

    def __init__(self, method: str) -> None:
        super().__init__(f"{method} deferred: no spare rate-limit capacity")
        self.method = method


class RateBudget(CallBudget):
    """Slack's per-method (and for posts, per-channel) windows, shared by every job."""

    def __init__(self, *, scale: float = 1.0, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(clock=clock)
        self.scale = scale

    def limit_of(self, method: str, place: str | None) -> tuple[tuple[str, str], int, float] | None:
        if method == "chat.postMessage":
            if not place:
                return None
            key, (limit, seconds) = (method, place), POSTS_PER_CHANNEL
        elif method in METHOD_TIERS:
            key, limit, seconds = (method, ""), METHOD_TIERS[method], MINUTE
        else:
            return None
        return key, limit, seconds * self.scale * _MARGIN + _SLACK * min(self.scale, 1.0)


@contextlib.contextmanager
def best_effort(keep: int = 0) -> Iterator[None]:
    """Calls inside take only spare capacity (raising Deferred otherwise) and are not retried."""
    token = _best_effort.set(keep)
    try:
        yield
    finally:
        _best_effort.reset(token)


def retry_after(response: AsyncSlackResponse) -> float:
    """Seconds Slack asked to wait (``Retry-After``), 1 if it did not say."""
    for name, value in (response.headers or {}).items():
        if name.lower() == "retry-after":
            raw = value[0] if isinstance(value, list) else value
            try:
                return min(max(float(raw), 0.0), _LONGEST_WAIT)
            except ValueError:
                break
    return 1.0


def _channel_of(*sources: Any) -> str | None:
    for source in sources:
        if isinstance(source, dict):
            channel = source.get("channel") or source.get("channel_id")
            if channel:
                return str(channel)
    return None


class PacedWebClient(AsyncWebClient):
    """The Slack Web API client, with every call paced by a shared ``RateBudget``."""

    def __init__(self, *args: Any, budget: RateBudget, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.budget = budget

    async def api_call(
        self,
        api_method: str,
        *,
        http_verb: str = "POST",
        files: dict[str, Any] | None = None,
        data: dict[str, Any] | FormData | None = None,
        params: dict[str, Any] | None = None,
        json: dict[str, Any] | None = None,
        headers: dict[str, Any] | None = None,
        auth: dict[str, Any] | None = None,
    ) -> AsyncSlackResponse:
        """Wait for the method's turn, call it, and after a 429 wait ``Retry-After`` and retry."""
        channel = _channel_of(json, data, params)
        keep = _best_effort.get()
        retries = 0
        while True:
            if keep is None:
                waited = await self.budget.acquire(api_method, channel)
                if waited > 0:
                    metrics.rate_limit_wait(PLATFORM, api_method, waited)
            elif not self.budget.try_acquire(api_method, channel, keep=keep):
                raise Deferred(api_method)
            try:
                return await super().api_call(
                    api_method,
                    http_verb=http_verb,
                    files=files,
                    data=data,
                    params=params,
                    json=json,
                    headers=headers,
                    auth=auth,
                )
            except SlackApiError as exc:
                limited = exc.response.status_code == 429
                if not limited or keep is not None or retries >= MAX_RATE_LIMIT_RETRIES:
                    _count_error(api_method, exc)
                    raise
                wait = retry_after(exc.response)
                self.budget.pause(api_method, channel, wait)
                retries += 1
                logger.info("Slack rate-limited %s; retrying in %.1f s", api_method, wait)
                if self.budget.limit_of(api_method, channel) is None:
                    # No window of ours to hold the retry back: wait Retry-After here.
                    metrics.rate_limit_wait(PLATFORM, api_method, wait)
                    await asyncio.sleep(wait)
            except (SlackClientError, aiohttp.ClientError, TimeoutError) as exc:
                metrics.platform_error(PLATFORM, api_method, exc)
                raise


def _count_error(method: str, exc: SlackApiError) -> None:
    """Count a refused call, labelled with Slack's error (``SlackApiError:channel_not_found``)."""
    error = exc.response.get("error") if isinstance(exc.response.data, dict) else None
    if isinstance(error, str) and error:
        # error_label reads ``code``: Slack's error names are a short documented list.
        exc.code = error  # type: ignore[attr-defined]
    metrics.platform_error(PLATFORM, method, exc)
