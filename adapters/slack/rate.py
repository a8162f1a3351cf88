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
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from aiohttp import FormData
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.web.async_slack_response import AsyncSlackResponse

logger = logging.getLogger("adapters.slack")

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


@dataclass
class _Window:
    """A sliding window: at most ``limit`` calls in any ``seconds``."""

    limit: int
    seconds: float
    sent: deque[float] = field(default_factory=deque)
    paused_until: float = 0.0
    waiting: int = 0
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def _prune(self, now: float) -> None:
        while self.sent and self.sent[0] <= now - self.seconds:
            self.sent.popleft()

    def free_at(self, now: float) -> float:
        """When the next call may go."""
        self._prune(now)
        at = self.paused_until
        if len(self.sent) >= self.limit:
            at = max(at, self.sent[len(self.sent) - self.limit] + self.seconds)
        return at

    def spare(self, now: float) -> int:
        """Calls that could go right now."""
        if self.paused_until > now:
            return 0
        self._prune(now)
        return self.limit - len(self.sent)


class RateBudget:
    """Per-method (and for posts, per-channel) windows shared by every job of the process."""

    def __init__(
        self,
        *,
        scale: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.scale = scale
        self._clock = clock
        self._windows: dict[tuple[str, str], _Window] = {}

    def _window(self, method: str, channel: str | None) -> _Window | None:
        if method == "chat.postMessage":
            if not channel:
                return None
            key, (limit, seconds) = (method, channel), POSTS_PER_CHANNEL
        elif method in METHOD_TIERS:
            key, limit, seconds = (method, ""), METHOD_TIERS[method], MINUTE
        else:
            return None
        window = self._windows.get(key)
        if window is None:
            span = seconds * self.scale * _MARGIN + _SLACK * min(self.scale, 1.0)
            window = self._windows[key] = _Window(limit, span)
        return window

    async def acquire(self, method: str, channel: str | None = None) -> None:
        """Wait for this call's turn (first come, first served)."""
        window = self._window(method, channel)
        if window is None:
            return
        window.waiting += 1
        try:
            async with window.lock:
                while True:
                    now = self._clock()
                    at = window.free_at(now)
                    if at <= now:
                        window.sent.append(now)
                        return
                    await asyncio.sleep(at - now)
        finally:
            window.waiting -= 1

    def try_acquire(self, method: str, channel: str | None = None, *, keep: int = 0) -> bool:
        """Take a turn only if one is free now, nobody waits, and ``keep`` more stay free."""
        window = self._window(method, channel)
        if window is None:
            return True
        now = self._clock()
        if window.waiting or window.spare(now) <= keep:
            return False
        window.sent.append(now)
        return True

    def spare(self, method: str, channel: str | None = None) -> int:
        """How many calls of ``method`` could go right now (a large number if unlimited)."""
        window = self._window(method, channel)
        if window is None:
            return 1 << 30
        return 0 if window.waiting else window.spare(self._clock())

    def pause(self, method: str, channel: str | None, seconds: float) -> None:
        """Slack said ``Retry-After: seconds``: hold every call of this method until then."""
        window = self._window(method, channel)
        if window is not None:
            window.paused_until = max(window.paused_until, self._clock() + seconds)


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
                await self.budget.acquire(api_method, channel)
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
                if exc.response.status_code != 429:
                    raise
                wait = retry_after(exc.response)
                self.budget.pause(api_method, channel, wait)
                retries += 1
                if keep is not None or retries > MAX_RATE_LIMIT_RETRIES:
                    raise
                logger.info("Slack rate-limited %s; retrying in %.1f s", api_method, wait)
