"""Budgets for platform calls: a token bucket per channel for progress edits (the most useful
waiting edit first), and sliding windows per kind of call for documented rate limits."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

URGENT, ROUTINE = 0, 1


class Pacer:
    """A token bucket for one channel's progress edits: ``burst`` at once, then one per ``every``.

    ``turn(urgency)`` waits for the next edit; when several jobs wait, the most urgent (lowest
    ``urgency()``, asked at hand-out time) goes first, then the one that waited longest.
    """

    def __init__(self, burst: int, every: float) -> None:
        self.burst = burst
        self.every = every
        loop = asyncio.get_running_loop()
        self._tokens = float(burst)
        self._stamp = loop.time()
        self._seq = itertools.count()
        self._waiting: dict[asyncio.Future[None], tuple[int, Callable[[], int]]] = {}
        self._pump: asyncio.Task[None] | None = None

    async def turn(self, urgency: Callable[[], int]) -> None:
        """Wait for this channel's next edit."""
        self._refill()
        if not self._waiting and self._tokens >= 1:
            self._tokens -= 1
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting[future] = (next(self._seq), urgency)
        if self._pump is None or self._pump.done():
            self._pump = asyncio.create_task(self._hand_out())
        try:
            await future
        finally:
            self._waiting.pop(future, None)

    def at_rest(self) -> bool:
        """Nobody waits and the bucket is full again: forgetting it changes nothing."""
        self._refill()
        return not self._waiting and self._tokens >= self.burst

    def close(self) -> None:
        """Stop handing out turns."""
        if self._pump is not None:
            self._pump.cancel()

    def _refill(self) -> None:
        now = asyncio.get_running_loop().time()
        self._tokens = min(self.burst, self._tokens + (now - self._stamp) / self.every)
        self._stamp = now

    async def _hand_out(self) -> None:
        while self._waiting:
            self._refill()
            if self._tokens < 1:
                await asyncio.sleep((1 - self._tokens) * self.every)
                continue
            future = min(self._waiting, key=lambda f: (self._waiting[f][1](), self._waiting[f][0]))
            del self._waiting[future]
            if not future.done():
                self._tokens -= 1
                future.set_result(None)


class EditBudget:
    """The progress-edit budget of every channel the bot is working in."""

    def __init__(self, burst: int, every: float, *, remembered: int = 256) -> None:
        self.burst = burst
        self.every = every
        self.remembered = remembered
        self._channels: dict[str, Pacer] = {}

    def channel(self, channel_id: str) -> Pacer:
        """The pacer for ``channel_id``."""
        pacer = self._channels.get(channel_id)
        if pacer is None:
            if len(self._channels) >= self.remembered:
                for key in [k for k, p in self._channels.items() if p.at_rest()]:
                    del self._channels[key]
            pacer = self._channels[channel_id] = Pacer(self.burst, self.every)
        return pacer

    def close(self) -> None:
        """Stop every pacer."""
        for pacer in self._channels.values():
            pacer.close()


@dataclass
class Window:
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


class CallBudget:
    """Sliding windows of API calls shared by every job of the process, one per kind of call.

    A platform says which window a call draws on (``limit_of``): its key, how many calls, in
    how many seconds. Calls that must land wait their turn (``acquire``); cosmetic ones take a
    turn only when one is free now (``try_acquire``); a 429 pauses the window (``pause``).
    """

    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._windows: dict[tuple[str, str], Window] = {}

    def limit_of(self, method: str, place: str | None) -> tuple[tuple[str, str], int, float] | None:
        """The window ``method`` (in ``place``) draws on: key, calls, seconds; None: unlimited."""
        return None

    def _window(self, method: str, channel: str | None) -> Window | None:
        rule = self.limit_of(method, channel)
        if rule is None:
            return None
        key, limit, seconds = rule
        window = self._windows.get(key)
        if window is None:
            window = self._windows[key] = Window(limit, seconds)
        return window

    async def acquire(self, method: str, channel: str | None = None) -> float:
        """Wait for this call's turn (first come, first served); returns the seconds waited."""
        window = self._window(method, channel)
        if window is None:
            return 0.0
        began, slept = self._clock(), False
        window.waiting += 1
        try:
            async with window.lock:
                while True:
                    now = self._clock()
                    at = window.free_at(now)
                    if at <= now:
                        window.sent.append(now)
                        return now - began if slept else 0.0
                    slept = True
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
        """The platform said ``Retry-After: seconds``: hold every call of this kind until then."""
        window = self._window(method, channel)
        if window is not None:
            window.paused_until = max(window.paused_until, self._clock() + seconds)
