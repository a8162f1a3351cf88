"""Fairness of the slot queue: who starts when, against a first-come-first-served baseline.

Run: ``.venv/bin/python benchmarks/fairness.py [--duration 0.02] [--waiters 500]``

Prints ``name: value`` lines for three scenarios:
1. one slot, A queues 8 jobs then B queues 1: the start order and where B starts;
2. four slots, 20 users in mixed bursts at staggered times: per-user waits and their spread;
3. many waiters on one slot: the cost of keeping every place in line up to date.
Jobs "run" by sleeping ``--duration`` seconds of real time.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bot.fair_queue import FairQueue

Report = Callable[[int], Awaitable[None]]


class Queue(Protocol):
    async def acquire(self, key: str, report: Report) -> None: ...

    def release(self) -> None: ...


@dataclass(eq=False)
class _Waiter:
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    granted: bool = False


class FifoQueue:
    """The baseline: first come, first served, whoever asks (the queue the service had)."""

    def __init__(self, size: int) -> None:
        self._free = size
        self._waiters: deque[_Waiter] = deque()

    async def acquire(self, key: str, report: Report) -> None:
        if self._free > 0 and not self._waiters:
            self._free -= 1
            await report(0)
            return
        waiter = _Waiter()
        self._waiters.append(waiter)
        self._wake_all()
        last = 0
        try:
            while not waiter.granted:
                position = self._waiters.index(waiter) + 1
                if position != last:
                    last = position
                    await report(position)
                if waiter.granted:
                    break
                await waiter.wake.wait()
                waiter.wake.clear()
        except BaseException:
            if waiter.granted:
                self.release()
            else:
                self._waiters.remove(waiter)
                self._wake_all()
            raise

    def release(self) -> None:
        if self._waiters:
            waiter = self._waiters.popleft()
            waiter.granted = True
            waiter.wake.set()
            self._wake_all()
        else:
            self._free += 1

    def _wake_all(self) -> None:
        for waiter in self._waiters:
            waiter.wake.set()


async def _quiet(position: int) -> None:
    return None


async def _burst_order(queue: Queue, duration: float) -> list[str]:
    order: list[str] = []

    async def job(key: str) -> None:
        await queue.acquire(key, _quiet)
        order.append(key)
        try:
            await asyncio.sleep(duration)
        finally:
            queue.release()

    tasks = [asyncio.create_task(job("A")) for _ in range(8)]
    await asyncio.sleep(0)
    tasks.append(asyncio.create_task(job("B")))
    await asyncio.gather(*tasks)
    return order


def _jobs_of(user: int) -> int:
    return 1 + (user % 5) * 3


async def _mixed_waits(queue: Queue, duration: float, users: int) -> dict[int, list[float]]:
    waits: dict[int, list[float]] = {user: [] for user in range(users)}

    async def job(key: str, record: list[float] | None) -> None:
        asked = time.perf_counter()
        await queue.acquire(key, _quiet)
        if record is not None:
            record.append(time.perf_counter() - asked)
        try:
            await asyncio.sleep(duration)
        finally:
            queue.release()

    async def user(number: int) -> None:
        # Users come in a shuffled order, half a job apart, each with its whole burst at once.
        await asyncio.sleep((number * 7 % users) * duration / 2)
        jobs = [job(f"user{number}", waits[number]) for _ in range(_jobs_of(number))]
        await asyncio.gather(*jobs)

    # The bot is already busy when the first user comes, so nobody starts on an idle queue.
    busy = [asyncio.create_task(job("earlier", None)) for _ in range(4)]
    await asyncio.sleep(0)
    await asyncio.gather(*busy, *(user(number) for number in range(users)))
    return waits


async def _many_waiters(queue: Queue, waiters: int, keys: int) -> tuple[float, int]:
    reports = 0

    async def count(position: int) -> None:
        nonlocal reports
        reports += 1

    async def job(key: str) -> None:
        await queue.acquire(key, count)
        await asyncio.sleep(0)
        queue.release()

    started = time.perf_counter()
    await asyncio.gather(*(job(f"user{i % keys}") for i in range(waiters)))
    return time.perf_counter() - started, reports


def _spread(values: list[float]) -> float:
    return max(values) / min(values) if min(values) > 0 else float("inf")


def _per_turn(waits: dict[int, list[float]], duration: float) -> float:
    """The worst wait of a user's k-th job divided by k, in job durations.

    Round robin serves every waiting user once per turn, and a turn of 20 users on 4 slots
    lasts about 5 jobs: so under a fair queue no user's k-th job waits much more than k turns.
    """
    return max(
        wait / (k * duration)
        for values in waits.values()
        for k, wait in enumerate(sorted(values), start=1)
    )


def _print_mixed(name: str, waits: dict[int, list[float]]) -> tuple[float, float]:
    means = {user: statistics.fmean(values) for user, values in waits.items()}
    # A user's jobs all arrive at once, so the shortest wait is the wait for the first start.
    firsts = {user: min(values) for user, values in waits.items()}
    for size in sorted({_jobs_of(user) for user in waits}):
        group = [user for user in waits if _jobs_of(user) == size]
        mean = statistics.fmean(means[user] for user in group)
        worst = max(max(waits[user]) for user in group)
        first = statistics.fmean(firsts[user] for user in group)
        print(
            f"{name}_users_with_{size}_jobs: mean_wait_s {mean:.3f} max_wait_s {worst:.3f} "
            f"first_start_wait_s {first:.3f}"
        )
    for user in sorted(waits):
        print(
            f"{name}_user{user}: jobs {len(waits[user])} mean_wait_s {means[user]:.3f} "
            f"max_wait_s {max(waits[user]):.3f} first_start_wait_s {firsts[user]:.3f}"
        )
    mean_spread = _spread(list(means.values()))
    first_spread = _spread(list(firsts.values()))
    print(f"{name}_mean_wait_spread_max_over_min: {mean_spread:.1f}")
    print(f"{name}_first_start_wait_spread_max_over_min: {first_spread:.1f}")
    print(f"{name}_first_start_wait_max_s: {max(firsts.values()):.3f}")
    return mean_spread, first_spread


async def _run(duration: float, users: int, waiters: int, keys: int) -> None:
    for name, queue in (("fair", FairQueue(1)), ("fifo", FifoQueue(1))):
        order = await _burst_order(queue, duration)
        seconds_a = [index for index, key in enumerate(order) if key == "A"][1]
        print(f"burst_{name}_start_order: {' '.join(order)}")
        print(f"burst_{name}_b_start_index: {order.index('B')} (A's second: {seconds_a})")
    assert order.index("B") == 8  # the baseline really is first come, first served

    fair_waits = await _mixed_waits(FairQueue(4), duration, users)
    fifo_waits = await _mixed_waits(FifoQueue(4), duration, users)
    fair = _print_mixed("mixed_fair", fair_waits)
    fifo = _print_mixed("mixed_fifo", fifo_waits)
    print(f"mixed_mean_wait_spread_fifo_over_fair: {fifo[0] / fair[0]:.2f}")
    print(f"mixed_first_start_wait_spread_fifo_over_fair: {fifo[1] / fair[1]:.2f}")
    turn = users / 4
    print(
        f"mixed_worst_wait_per_turn_in_jobs: fair {_per_turn(fair_waits, duration):.1f} "
        f"fifo {_per_turn(fifo_waits, duration):.1f} (one round-robin turn: {turn:.0f} jobs)"
    )

    for name, slow in (("fair", FairQueue(1)), ("fifo", FifoQueue(1))):
        elapsed, reports = await _many_waiters(slow, waiters, keys)
        print(
            f"many_{name}_{waiters}_waiters_{keys}_keys: drain_s {elapsed:.2f} "
            f"per_release_ms {elapsed / waiters * 1000:.2f} reports {reports}"
        )


def main() -> None:
    """Parse arguments, run the scenarios, print the figures."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--duration", type=float, default=0.02, help="seconds a job runs")
    parser.add_argument("--users", type=int, default=20)
    parser.add_argument("--waiters", type=int, default=500)
    parser.add_argument("--keys", type=int, default=50)
    args = parser.parse_args()
    asyncio.run(_run(args.duration, args.users, args.waiters, args.keys))


if __name__ == "__main__":
    main()
