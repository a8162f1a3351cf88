"""A fair slot queue: a freed slot goes to the requester with the fewest recent starts."""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from bisect import bisect_right
from collections import deque
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field

Report = Callable[[int], Awaitable[None]]


@dataclass(eq=False)
class _Start:
    at: float
    key: str
    # A grant its job never used (cancelled inside acquire) stops counting at once; the entry
    # stays in the time-ordered log until it ages out, so removal stays O(1).
    live: bool = True


@dataclass(eq=False)
class Ticket:
    """One caller's place: in line, or holding a slot once ``granted``."""

    key: str
    arrival: int
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    granted: bool = False
    start: _Start | None = None
    left: bool = False
    ready: bool = True  # may take a slot (False while busy with work before its turn)


class FairQueue:
    """A semaphore that shares slots fairly between requesters and tells each waiter its place."""

    def __init__(
        self, size: int, *, recent_s: float = 600.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if size < 1:
            raise ValueError("a queue needs at least one slot")
        self._free = size
        self._recent_s = recent_s
        self._clock = clock
        self._lines: dict[str, deque[Ticket]] = {}
        self._waiting = 0
        self._arrivals = itertools.count()
        self._log: deque[_Start] = deque()
        self._started: dict[str, int] = {}
        # The simulated grant order is shared by every waiter and rebuilt only after a change.
        self._version = 0
        self._built = -1
        self._order: list[Ticket] = []
        self._order_counts: list[int] = []
        self._places: dict[Ticket, int] = {}

    @property
    def waiting(self) -> int:
        """How many callers are in line."""
        return self._waiting

    def waiting_for(self, key: str) -> int:
        """How many of ``key``'s callers are in line."""
        line = self._lines.get(key)
        return len(line) if line is not None else 0

    def queued_for(self, key: str) -> int:
        """How many of ``key``'s callers will really wait (not those a free slot is there for)."""
        line = self._lines.get(key)
        return sum(1 for ticket in line if self._place(ticket) > 0) if line else 0

    def started_recently(self, key: str) -> int:
        """How many of ``key``'s jobs this queue started within the recent window."""
        self._expire()
        return self._started.get(key, 0)

    def next_position(self, key: str) -> int:
        """The place in line a caller of ``key`` arriving now gets (0: a slot is free)."""
        if self._free > 0 and not self._waiting:
            return 0
        self._build()
        # The simulated order is sorted by (starts so far, arrival); a newcomer is picked once
        # its key has had all its earlier jobs, and loses every tie as the latest arrival.
        behind = self._started.get(key, 0) + self.waiting_for(key)
        return max(0, bisect_right(self._order_counts, behind) + 1 - self._free)

    def join(self, key: str, *, ready: bool = True) -> Ticket:
        """Take a place for ``key`` now: a free slot at once, else the line (no waiting yet).

        The caller then ``wait``s for the slot, or ``leave``s; a place is counted (in
        ``waiting_for`` and everyone's places) from this moment, so requests arriving together
        each see the others. A ticket not ``ready`` (a job with slow work before its turn, such
        as a prompt rewrite) gets no slot until it waits, so it holds none meanwhile.
        """
        ticket = Ticket(key, next(self._arrivals), ready=ready)
        self._lines.setdefault(key, deque()).append(ticket)
        self._waiting += 1
        self._changed()
        self._dispatch()
        return ticket

    def position(self, ticket: Ticket) -> int:
        """The ticket's place in line now (0: it holds a slot, or a free one is there for it)."""
        return 0 if ticket.granted else self._place(ticket)

    async def wait(self, ticket: Ticket, report: Report) -> None:
        """Until the ticket holds a slot; ``report`` hears 0 for no wait, else each new place.

        Cancelled or failing, the ticket leaves (a slot it got goes to the next in line).
        """
        last = 0
        try:
            ticket.ready = True
            self._dispatch()
            if ticket.granted:
                await report(0)
                return
            while not ticket.granted:
                position = self._place(ticket)
                if position != last:
                    last = position
                    await report(position)
                if ticket.granted:
                    break
                await ticket.wake.wait()
                ticket.wake.clear()
        except BaseException:
            self.leave(ticket)
            raise

    def leave(self, ticket: Ticket) -> None:
        """Give up the place (or the slot, which goes to the next in line); idempotent."""
        if ticket.left:
            return
        ticket.left = True
        if ticket.granted:
            if ticket.start is not None:
                self._refund(ticket.start)
            self.release()
        else:
            self._remove(ticket)

    async def acquire(self, key: str, report: Report) -> None:
        """Take a slot for ``key``; ``report`` hears 0 for no wait, else each new place in line."""
        await self.wait(self.join(key), report)

    def release(self) -> None:
        """Give the slot to the waiter with the fewest recent starts, or back to the pool."""
        self._free += 1
        self._dispatch()

    def _dispatch(self) -> None:
        """Hand free slots out in the fair order, to ready tickets at the head of their line."""
        while self._free > 0 and self._waiting:
            self._build()
            # A requester's own jobs keep their order: only the head of a line may start.
            waiter = next((w for w in self._order if w.ready and self._lines[w.key][0] is w), None)
            if waiter is None:
                return
            line = self._lines[waiter.key]
            line.popleft()
            if not line:
                del self._lines[waiter.key]
            self._waiting -= 1
            self._free -= 1
            waiter.start = self._record_start(waiter.key)
            waiter.granted = True
            waiter.wake.set()
            self._changed()

    def _place(self, waiter: Ticket) -> int:
        self._build()
        # Slots free now go to those ahead (once they wait): behind them, a free slot is a turn.
        return max(0, self._places[waiter] + 1 - self._free)

    def _build(self) -> None:
        """Simulate the grants from now on, counting each as a start for its key."""
        self._expire()
        if self._built == self._version:
            return
        rest: dict[str, Iterator[Ticket]] = {}
        heap: list[tuple[int, int, str, Ticket]] = []
        for key, line in self._lines.items():
            queued = iter(line)
            head = next(queued)
            rest[key] = queued
            heap.append((self._started.get(key, 0), head.arrival, key, head))
        heapq.heapify(heap)
        order: list[Ticket] = []
        counts: list[int] = []
        while heap:
            count, _, key, waiter = heap[0]
            order.append(waiter)
            counts.append(count)
            following = next(rest[key], None)
            if following is None:
                heapq.heappop(heap)
            else:
                heapq.heapreplace(heap, (count + 1, following.arrival, key, following))
        self._order = order
        self._order_counts = counts
        self._places = {waiter: index for index, waiter in enumerate(order)}
        self._built = self._version

    def _record_start(self, key: str) -> _Start:
        self._expire()
        start = _Start(self._clock(), key)
        self._log.append(start)
        self._started[key] = self._started.get(key, 0) + 1
        self._version += 1
        return start

    def _refund(self, start: _Start) -> None:
        if start.live:
            start.live = False
            self._uncount(start.key)

    def _expire(self) -> None:
        cutoff = self._clock() - self._recent_s
        while self._log and self._log[0].at <= cutoff:
            start = self._log.popleft()
            if start.live:
                start.live = False
                self._uncount(start.key)

    def _uncount(self, key: str) -> None:
        left = self._started[key] - 1
        if left:
            self._started[key] = left
        else:
            del self._started[key]
        self._version += 1

    def _remove(self, waiter: Ticket) -> None:
        line = self._lines[waiter.key]
        line.remove(waiter)
        if not line:
            del self._lines[waiter.key]
        self._waiting -= 1
        self._changed()

    def _changed(self) -> None:
        self._version += 1
        for line in self._lines.values():
            for waiter in line:
                waiter.wake.set()
