"""The fair slot queue: who gets a freed slot, the places waiters hear, cancellation, the window."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from bot.fair_queue import FairQueue

Report = Callable[[int], Awaitable[None]]


async def settle() -> None:
    """Let every woken job run until it waits again."""
    for _ in range(20):
        await asyncio.sleep(0)


class Line:
    """Jobs on one queue; each holds its slot until the test releases one."""

    def __init__(self, queue: FairQueue) -> None:
        self.queue = queue
        self.started: list[str] = []
        self.places: dict[str, list[int]] = {}
        self.tasks: dict[str, asyncio.Task[None]] = {}

    async def join(self, key: str, *names: str) -> None:
        """Queue one job per name for ``key``, in order, and let them report."""
        for name in names:
            heard = self.places.setdefault(name, [])

            async def report(position: int, heard: list[int] = heard) -> None:
                heard.append(position)

            async def job(name: str = name, report: Report = report) -> None:
                await self.queue.acquire(key, report)
                self.started.append(name)

            self.tasks[name] = asyncio.create_task(job())
            await settle()

    async def finish(self, count: int = 1) -> None:
        """End ``count`` running jobs, one at a time."""
        for _ in range(count):
            self.queue.release()
            await settle()


@pytest.fixture
async def lines() -> AsyncIterator[Callable[[FairQueue], Line]]:
    made: list[Line] = []

    def _make(queue: FairQueue) -> Line:
        line = Line(queue)
        made.append(line)
        return line

    yield _make
    for line in made:
        for task in line.tasks.values():
            task.cancel()
        await asyncio.gather(*line.tasks.values(), return_exceptions=True)


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize("busy", [False, True])
async def test_a_burst_does_not_hold_back_a_single_job(
    lines: Callable[[FairQueue], Line], busy: bool
) -> None:
    line = lines(FairQueue(1))
    if busy:
        await line.join("X", "X1")
    await line.join("A", *(f"A{i}" for i in range(1, 9)))
    await line.join("B", "B1")

    await line.finish(9 if busy else 8)

    order = [name for name in line.started if name != "X1"]
    assert order.index("B1") <= order.index("A2")
    assert order == ["A1", "B1", *(f"A{i}" for i in range(2, 9))]
    assert line.places["B1"][0] <= 2


async def test_own_jobs_keep_their_order(lines: Callable[[FairQueue], Line]) -> None:
    line = lines(FairQueue(1))
    await line.join("X", "X1")
    await line.join("A", "A1", "A2", "A3")
    await line.join("B", "B1", "B2")
    line.tasks["A2"].cancel()
    await settle()

    await line.finish(4)

    assert line.started == ["X1", "A1", "B1", "A3", "B2"]


async def test_places_move_both_ways_and_each_change_is_reported(
    lines: Callable[[FairQueue], Line],
) -> None:
    queue = FairQueue(1)
    line = lines(queue)
    await line.join("X", "X1")
    await line.join("A", "A1", "A2", "A3")
    assert line.places == {"X1": [0], "A1": [1], "A2": [2], "A3": [3]}

    # B has started nothing, so its job goes ahead of A's second.
    await line.join("B", "B1")
    assert line.places["B1"] == [2]
    assert line.places["A2"] == [2, 3]
    assert line.places["A3"] == [3, 4]

    await line.finish()  # X1 ends, A1 starts
    assert line.started == ["X1", "A1"]
    assert line.places["B1"] == [2, 1]
    assert line.places["A2"] == [2, 3, 2]
    assert line.places["A3"] == [3, 4, 3]

    await line.join("C", "C1")
    assert line.places["C1"] == [2]
    assert line.places["B1"] == [2, 1]
    assert line.places["A2"] == [2, 3, 2, 3]
    assert line.places["A3"] == [3, 4, 3, 4]
    assert (queue.waiting, queue.waiting_for("A"), queue.waiting_for("C")) == (4, 2, 1)
    assert queue.waiting_for("X") == 0


async def test_cancelling_a_waiter_moves_the_others_up(
    lines: Callable[[FairQueue], Line],
) -> None:
    queue = FairQueue(1)
    line = lines(queue)
    await line.join("X", "X1")
    await line.join("A", "A1", "A2", "A3")
    await line.join("B", "B1")
    assert [line.places[name][-1] for name in ("A1", "B1", "A2", "A3")] == [1, 2, 3, 4]

    line.tasks["A1"].cancel()
    await settle()

    # A2 becomes A's first job and, having waited longer than B1, takes the head of the line.
    assert line.tasks["A1"].cancelled()
    assert line.places["A2"] == [2, 3, 1]
    assert line.places["A3"] == [3, 4, 3]
    assert line.places["B1"] == [2]
    assert (queue.waiting, queue.waiting_for("A"), queue.waiting_for("B")) == (3, 2, 1)
    await line.finish()
    assert line.started == ["X1", "A2"]


async def test_cancelling_after_the_grant_passes_the_slot_on_and_does_not_count(
    lines: Callable[[FairQueue], Line],
) -> None:
    queue = FairQueue(1)
    line = lines(queue)
    await line.join("A", "A1")
    await line.join("A", "A2", "A3")
    await line.join("B", "B1", "B2")
    # One start for A so far: B's first goes ahead, then A and B take turns.
    assert [line.places[name][-1] for name in ("B1", "A2", "B2", "A3")] == [1, 2, 3, 4]

    queue.release()  # A1 ends and B1 is granted...
    line.tasks["B1"].cancel()  # ...but is cancelled before it runs
    await settle()

    assert line.tasks["B1"].cancelled()
    # B's unused grant is not held against it: B2 is next, not A2.
    assert line.started == ["A1", "B2"]
    assert queue.started_recently("B") == 1
    await line.finish(3)
    assert line.started == ["A1", "B2", "A2", "A3"]
    assert queue.next_position("A") == 0


async def test_a_failing_report_for_a_free_slot_gives_the_slot_back() -> None:
    queue = FairQueue(1)

    async def report(position: int) -> None:
        raise RuntimeError("the message could not be sent")

    with pytest.raises(RuntimeError):
        await queue.acquire("A", report)

    assert queue.next_position("A") == 0
    assert queue.started_recently("A") == 0


async def test_next_position_is_the_place_a_new_job_then_hears(
    lines: Callable[[FairQueue], Line],
) -> None:
    queue = FairQueue(1)
    line = lines(queue)
    assert queue.next_position("A") == 0
    await line.join("X", "X1")
    assert (queue.next_position("A"), queue.next_position("X")) == (1, 1)

    await line.join("A", "A1", "A2", "A3")
    assert queue.next_position("A") == 4
    # X already had a start, so it waits behind A's second job; B had none.
    assert (queue.next_position("B"), queue.next_position("X")) == (2, 3)

    for key, name in (("B", "B1"), ("X", "X2"), ("C", "C1"), ("A", "A4")):
        expected = queue.next_position(key)
        await line.join(key, name)
        assert line.places[name][0] == expected
    assert [line.places[name][0] for name in ("B1", "X2", "C1", "A4")] == [2, 4, 3, 7]


async def test_starts_older_than_the_window_stop_counting(
    lines: Callable[[FairQueue], Line],
) -> None:
    clock = FakeClock()
    queue = FairQueue(1, recent_s=60.0, clock=clock)
    line = lines(queue)
    await line.join("A", "A1")
    clock.now = 10.0
    await line.join("A", "A2")
    await line.join("B", "B1")
    assert queue.started_recently("A") == 1

    await line.finish()  # within the window: A's start counts, so B1 goes first
    assert line.started == ["A1", "B1"]

    clock.now = 200.0
    assert (queue.started_recently("A"), queue.started_recently("B")) == (0, 0)
    await line.join("C", "C1")
    # A's old start no longer counts: A2, waiting longest, is ahead of C's first job.
    assert line.places["C1"] == [2]
    await line.finish()
    assert line.started == ["A1", "B1", "A2"]
    assert (queue.started_recently("A"), queue.started_recently("B")) == (1, 0)


async def test_four_slots_interleave_three_users(lines: Callable[[FairQueue], Line]) -> None:
    queue = FairQueue(4)
    line = lines(queue)
    await line.join("A", *(f"A{i}" for i in range(1, 6)))
    await line.join("B", *(f"B{i}" for i in range(1, 6)))
    await line.join("C", *(f"C{i}" for i in range(1, 6)))
    assert line.started == ["A1", "A2", "A3", "A4"]
    assert line.places["A5"][-1] == 9

    await line.finish(11)

    assert line.started[4:] == [
        *("B1", "C1", "B2", "C2", "B3", "C3", "B4", "C4"),
        *("A5", "B5", "C5"),
    ]
    assert queue.waiting == 0
