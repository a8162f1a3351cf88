"""One process-wide budget for memory spent decoding images, shared by every job and thread.

Each decode reserves its estimated working memory before any pixel is read and waits, in arrival
order, while the budget is spent; an image larger than the whole budget still runs, alone.
"""

from __future__ import annotations

import asyncio
import ctypes
import functools
import itertools
import os
import sys
import threading
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import ParamSpec, TypeVar

_P = ParamSpec("_P")
_T = TypeVar("_T")

MIB = 1024 * 1024
# A 40 MP photo rotated upright needs about 240 MB while both orientations exist; this lets two
# such steps, or three plain 40 MP decodes, overlap on a large machine and keeps 16 of them at
# once under about 600 MB. A small container gets an eighth of its memory, never below 64 MiB.
_CEILING = 384 * MIB
_FLOOR = 64 * MIB
_SHARE = 8
_CGROUP_LIMITS = (
    Path("/sys/fs/cgroup/memory.max"),
    Path("/sys/fs/cgroup/memory/memory.limit_in_bytes"),
)


_M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter number
_MMAP_THRESHOLD = 1 * MIB


def return_freed_memory() -> bool:
    """Have glibc give large blocks back to the system when freed; False where it can't."""
    # glibc raises its mmap threshold each time a large block is freed, after which Pillow's 16 MB
    # image blocks come from per-thread heaps that keep them: with the decodes spread over many
    # threads the process then holds several budgets' worth. A fixed threshold stops that.
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None)
        return bool(libc.mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD))
    except (OSError, AttributeError):
        return False  # not glibc (musl keeps no such threshold): nothing to fix


def memory_available() -> int | None:
    """Bytes of memory this process may use: the cgroup limit when set, else physical memory."""
    limits: list[int] = []
    with suppress(ValueError, OSError, AttributeError):
        limits.append(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    for path in _CGROUP_LIMITS:
        try:
            text = path.read_text().strip()
        except OSError:
            continue
        if text.isdigit():
            limits.append(int(text))  # cgroup v1 says "unlimited" with a huge number: min() wins
    return min(limits) if limits else None


def default_capacity(memory: int | None = None) -> int:
    """The budget for a machine with ``memory`` bytes (this one's when omitted)."""
    if memory is None:
        memory = memory_available()
    if memory is None:
        return _CEILING // 2
    return max(_FLOOR, min(_CEILING, memory // _SHARE))


class Reservation:
    """Bytes held in a budget; ``shrink`` hands part back early, leaving frees the rest."""

    def __init__(self, budget: DecodeBudget, cost: int) -> None:
        self._budget = budget
        self.cost = cost

    def shrink(self, cost: int) -> None:
        """Keep only ``cost`` bytes of this reservation (the rest of the work needs less)."""
        cost = max(0, min(cost, self.cost))
        self._budget._give_back(self.cost - cost, holder_left=False)
        self.cost = cost


class DecodeBudget:
    """A weighted, first-come-first-served semaphore counted in bytes, safe across threads."""

    def __init__(self, capacity: int) -> None:
        self._capacity = max(1, capacity)
        self._lock = threading.Condition()
        self._queue: deque[int] = deque()
        self._tickets = itertools.count()
        self._in_use = 0
        self._holders = 0
        self.peak_in_use = 0
        self.peak_holders = 0
        # Called with (bytes in use, holders) each time a reservation starts; tests observe it.
        self.on_reserve: Callable[[int, int], None] | None = None

    @property
    def capacity(self) -> int:
        """The bytes that may be reserved at once."""
        return self._capacity

    @property
    def waiting(self) -> int:
        """How many reservations are waiting for room."""
        with self._lock:
            return len(self._queue)

    @property
    def holders(self) -> int:
        """How many reservations are being held."""
        with self._lock:
            return self._holders

    def configure(self, capacity: int) -> None:
        """Change the capacity and forget the peaks (an operator's or a test's setting)."""
        with self._lock:
            self._capacity = max(1, capacity)
            self.peak_in_use = self._in_use
            self.peak_holders = self._holders
            self._lock.notify_all()

    @contextmanager
    def reserve(self, cost: int) -> Iterator[Reservation]:
        """Hold ``cost`` bytes for the duration of the block, waiting for room first."""
        cost = max(0, cost)
        with self._lock:
            ticket = next(self._tickets)
            self._queue.append(ticket)
            try:
                # The head of the line goes when it fits, or when nothing else is running.
                self._lock.wait_for(
                    lambda: (
                        self._queue[0] == ticket
                        and (self._holders == 0 or self._in_use + cost <= self._capacity)
                    )
                )
            finally:
                self._queue.remove(ticket)
                self._lock.notify_all()
            self._in_use += cost
            self._holders += 1
            self.peak_in_use = max(self.peak_in_use, self._in_use)
            self.peak_holders = max(self.peak_holders, self._holders)
            hook, in_use, holders = self.on_reserve, self._in_use, self._holders
        reservation = Reservation(self, cost)
        try:
            if hook is not None:
                hook(in_use, holders)
            yield reservation
        finally:
            self._give_back(reservation.cost, holder_left=True)

    def _give_back(self, cost: int, *, holder_left: bool) -> None:
        with self._lock:
            self._in_use -= cost
            if holder_left:
                self._holders -= 1
            self._lock.notify_all()


return_freed_memory()
decode_budget = DecodeBudget(default_capacity())

# Decodes waiting for the budget block their thread. On threads of their own, a burst of 16-image
# edits queues there instead of taking every thread of the loop's default pool, which file writes,
# owner checks and previews need meanwhile.
_decode_threads = ThreadPoolExecutor(
    max_workers=max(2, os.cpu_count() or 2), thread_name_prefix="imagine-decode"
)


async def decode_off_loop(func: Callable[_P, _T], /, *args: _P.args, **kwargs: _P.kwargs) -> _T:
    """Run a decoding call on the decode threads and wait for its result."""
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(_decode_threads, functools.partial(func, *args, **kwargs))
