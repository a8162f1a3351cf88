"""Counting the bot's Discord REST calls: the failures it catches and the rate-limit waits.

discord.py waits out a 429 by itself (``retry_after`` from the body, up to 5 tries per call) and
says so only in a log line; the aiohttp trace hook it documents (``Client(http_trace=...)``) sees
every answer on the session shared by REST, interaction responses and webhooks, so each 429 it
will wait on is counted there, under the route's name.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from types import SimpleNamespace

import aiohttp
import discord

from bot import metrics
from bot.pacing import Pacer

PLATFORM = "discord"
_ID = r"[^/]+"
# (HTTP method, path ending) -> the short name counted, after discord.py's own method names.
ROUTES: tuple[tuple[str, re.Pattern[str], str], ...] = tuple(
    (method, re.compile(f"{pattern}$"), name)
    for method, pattern, name in (
        ("POST", rf"/channels/{_ID}/messages", "send_message"),
        ("PATCH", rf"/channels/{_ID}/messages/{_ID}", "edit_message"),
        ("DELETE", rf"/channels/{_ID}/messages/{_ID}", "delete_message"),
        ("GET", rf"/channels/{_ID}/messages/{_ID}", "get_message"),
        ("POST", rf"/interactions/{_ID}/{_ID}/callback", "interaction_response"),
        ("POST", rf"/webhooks/{_ID}/{_ID}", "followup"),
        ("PATCH", rf"/webhooks/{_ID}/{_ID}/messages/{_ID}", "edit_webhook_message"),
        ("DELETE", rf"/webhooks/{_ID}/{_ID}/messages/{_ID}", "delete_webhook_message"),
        ("GET", rf"/webhooks/{_ID}/{_ID}/messages/{_ID}", "get_webhook_message"),
        ("GET", rf"/guilds/{_ID}/members/{_ID}", "get_member"),
        ("PUT", r"/commands", "sync_commands"),
        ("GET", r"/users/@me", "login"),
        ("GET", r"/oauth2/applications/@me", "application_info"),
        ("GET", r"/gateway/bot", "gateway_bot"),
    )
)


def route_name(method: str, path: str) -> str:
    """The short name of a REST call, e.g. ``edit_message``; unknown ones by method and kind."""
    path = path.rstrip("/")
    for route_method, pattern, name in ROUTES:
        if route_method == method.upper() and pattern.search(path):
            return name
    parts = [p for p in path.split("/") if p and not p.isdigit() and not re.fullmatch(r"v\d+", p)]
    return f"{method.lower()}_{parts[-1] if parts else 'api'}"


def call_name(exc: discord.HTTPException, fallback: str) -> str:
    """The route name of the call that failed with ``exc`` (``fallback`` if it doesn't say)."""
    response = getattr(exc, "response", None)
    method = getattr(response, "method", None)
    url = getattr(response, "url", None)
    return route_name(method, url.path) if isinstance(method, str) and url is not None else fallback


def failed_call(exc: discord.HTTPException, fallback: str) -> None:
    """Count a failed REST call the bot caught (named by its route when the answer says it)."""
    metrics.platform_error(PLATFORM, call_name(exc, fallback), exc)


async def _on_request_end(
    _session: aiohttp.ClientSession,
    _context: SimpleNamespace,
    params: aiohttp.TraceRequestEndParams,
) -> None:
    response = params.response
    # discord.py treats a 429 without Discord's Via header as a Cloudflare ban: no wait then.
    if response.status != 429 or not response.headers.get("Via"):
        return
    try:
        # Read once here; discord.py reads the same cached body right after.
        body = await response.json(content_type=None)
        wait = float(body["retry_after"])
    except (aiohttp.ClientError, ValueError, KeyError, TypeError):
        return
    metrics.rate_limit_wait(PLATFORM, route_name(params.method, params.url.path), wait)


def http_trace() -> aiohttp.TraceConfig:
    """The trace hook for ``discord.Client(http_trace=...)``: counts each 429 waited out."""
    trace = aiohttp.TraceConfig()
    trace.on_request_end.append(_on_request_end)
    return trace


# A turn handed out without waiting takes microseconds; anything longer was held back.
HELD_BACK_S = 0.001


class MeteredPacer(Pacer):
    """A channel's progress-edit pacer that counts each edit it holds back (the bot's pacing)."""

    def __init__(self, inner: Pacer, clock: Callable[[], float] = time.monotonic) -> None:
        # Not Pacer.__init__: every call goes to the channel's own pacer.
        self.inner = inner
        self.burst, self.every = inner.burst, inner.every
        self._clock = clock

    async def turn(self, urgency: Callable[[], int]) -> None:
        """Wait for the channel's next edit, counting the wait if there was one."""
        began = self._clock()
        await self.inner.turn(urgency)
        waited = self._clock() - began
        if waited >= HELD_BACK_S:
            metrics.rate_limit_wait(PLATFORM, "progress_edit", waited)

    def at_rest(self) -> bool:
        """As the channel's pacer."""
        return self.inner.at_rest()

    def close(self) -> None:
        """As the channel's pacer."""
        self.inner.close()
