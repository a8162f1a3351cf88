"""Edit budgets: a token bucket per place (a channel), most useful waiting edit first."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable

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
