"""Throttle on a fake clock: merged views, one edit per interval, retries, ticks, close()."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import replace

import pytest

from bot.models import Requester
from bot.presenting import JobView, Throttle

INTERVAL = 2.0
ANN = Requester("discord", "1")


class FakeTime:
    """A clock that only moves when told to; sleepers wake when their time comes."""

    def __init__(self) -> None:
        self.now = 100.0
        self._sleepers: list[tuple[float, asyncio.Future[None]]] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._sleepers.append((self.now + seconds, future))
        await future

    async def advance(self, seconds: float) -> None:
        """Move the clock in small steps, letting every woken task run."""
        end = self.now + seconds
        while True:
            await settle()
            due = [s for s in self._sleepers if s[0] <= end and not s[1].done()]
            if not due:
                break
            when = min(s[0] for s in due)
            self.now = max(self.now, when)
            for entry in list(self._sleepers):
                if entry[0] <= self.now:
                    self._sleepers.remove(entry)
                    if not entry[1].done():
                        entry[1].set_result(None)
        self.now = end
        await settle()


async def settle() -> None:
    for _ in range(30):
        await asyncio.sleep(0)


class Screen:
    """A ``show`` that records each view and the fake time it was shown at."""

    def __init__(self, time: FakeTime, answers: Callable[[int], bool] = lambda _: True) -> None:
        self.time = time
        self.answers = answers
        self.shown: list[tuple[float, JobView]] = []
        self.gate: asyncio.Event | None = None
        self.finished = 0

    async def show(self, view: JobView) -> bool:
        self.shown.append((self.time.now, view))
        if self.gate is not None:
            await self.gate.wait()
        self.finished += 1
        return self.answers(len(self.shown))

    @property
    def views(self) -> list[JobView]:
        return [view for _, view in self.shown]


def view(position: int, phase: str = "queued") -> JobView:
    return JobView("a kite", ANN, phase, "j1", position)  # type: ignore[arg-type]


@pytest.fixture
def time() -> FakeTime:
    return FakeTime()


async def test_the_first_view_shows_at_once_and_later_ones_merge_into_the_newest(
    time: FakeTime,
) -> None:
    screen = Screen(time)
    throttle = Throttle(screen.show, INTERVAL, clock=time.clock, sleep=time.sleep)
    throttle.update(view(5))
    await settle()
    assert screen.views == [view(5)]
    for position in (4, 3, 2):
        throttle.update(view(position))
    await time.advance(INTERVAL - 0.01)
    assert screen.views == [view(5)], "a second edit within the interval"
    await time.advance(0.01)
    assert screen.views == [view(5), view(2)], "only the newest of the merged views is shown"
    await time.advance(INTERVAL * 3)
    assert len(screen.shown) == 2, "nothing new, nothing shown"
    await throttle.close()


async def test_edits_are_at_least_an_interval_apart(time: FakeTime) -> None:
    screen = Screen(time)
    throttle = Throttle(screen.show, INTERVAL, clock=time.clock, sleep=time.sleep)
    start = time.now
    for position in range(10, 0, -1):
        throttle.update(view(position))
        await time.advance(0.5)
    await time.advance(INTERVAL)
    times = [when - start for when, _ in screen.shown]
    assert times == [0.0, 2.0, 4.0, 6.0]
    assert screen.views[-1] == view(1)
    assert throttle.edits == 4
    await throttle.close()


async def test_a_view_that_was_not_shown_is_tried_again_soon(time: FakeTime) -> None:
    screen = Screen(time, answers=lambda call: call > 1)  # the first edit: "not now"
    interval = 0.01
    throttle = Throttle(screen.show, interval, clock=time.clock, sleep=time.sleep)
    retry = throttle.retry_every
    assert retry == 0.05  # never sooner than 50 ms, however short the interval
    throttle.update(view(3))
    await settle()
    assert screen.views == [view(3)]
    await time.advance(retry - 0.001)
    assert screen.views == [view(3)]
    await time.advance(0.001)
    assert screen.views == [view(3), view(3)], "the refused view was shown again"
    await time.advance(1.0)
    assert len(screen.shown) == 2, "once shown, it is not retried"
    await throttle.close()


async def test_a_newer_view_replaces_the_refused_one_in_the_retry(time: FakeTime) -> None:
    screen = Screen(time, answers=lambda call: call > 1)
    throttle = Throttle(screen.show, 0.01, clock=time.clock, sleep=time.sleep)
    throttle.update(view(3))
    await settle()
    throttle.update(view(2))
    await time.advance(throttle.retry_every)
    assert screen.views == [view(3), view(2)]
    await throttle.close()


async def test_a_running_job_is_shown_again_each_tick(time: FakeTime) -> None:
    screen = Screen(time)
    throttle = Throttle(screen.show, INTERVAL, clock=time.clock, sleep=time.sleep, tick=10.0)
    running = replace(view(0, "running"), now=1.0)
    throttle.update(running)
    await settle()
    await time.advance(9.9)
    assert len(screen.shown) == 1
    await time.advance(0.1)
    assert len(screen.shown) == 2
    ticked = screen.views[1]
    assert replace(ticked, now=1.0) == running
    assert ticked.now > running.now, "a tick moves the view's time on"
    await time.advance(10.0)
    assert len(screen.shown) == 3
    await throttle.close()


async def test_a_queued_job_does_not_tick(time: FakeTime) -> None:
    screen = Screen(time)
    throttle = Throttle(screen.show, INTERVAL, clock=time.clock, sleep=time.sleep, tick=10.0)
    throttle.update(view(2))
    await time.advance(60.0)
    assert len(screen.shown) == 1
    await throttle.close()


async def test_close_waits_for_the_edit_on_the_wire_and_drops_the_queued_one(
    time: FakeTime,
) -> None:
    screen = Screen(time)
    screen.gate = asyncio.Event()
    throttle = Throttle(screen.show, INTERVAL, clock=time.clock, sleep=time.sleep)
    throttle.update(view(3))
    await settle()
    assert screen.views == [view(3)] and screen.finished == 0  # on the wire
    throttle.update(view(2))  # queued behind it
    closing = asyncio.create_task(throttle.close())
    await settle()
    assert not closing.done(), "close() returned while an edit was still on the wire"
    screen.gate.set()
    await asyncio.wait_for(closing, 1)
    assert screen.finished == 1
    await time.advance(INTERVAL * 5)
    assert screen.views == [view(3)], "the queued view was shown after close()"
    throttle.update(view(1))
    await time.advance(INTERVAL * 5)
    assert screen.views == [view(3)], "an update after close() was shown"


async def test_close_drops_a_view_waiting_for_its_turn_without_waiting(time: FakeTime) -> None:
    screen = Screen(time)
    throttle = Throttle(screen.show, INTERVAL, clock=time.clock, sleep=time.sleep)
    throttle.update(view(3))
    await settle()
    throttle.update(view(2))
    await settle()
    await asyncio.wait_for(throttle.close(), 1)  # the clock never moved: no waiting
    await time.advance(INTERVAL * 5)
    assert screen.views == [view(3)]


async def test_a_failing_show_does_not_stop_later_edits(
    time: FakeTime, caplog: pytest.LogCaptureFixture
) -> None:
    calls: list[JobView] = []

    async def show(shown: JobView) -> bool:
        calls.append(shown)
        if len(calls) == 1:
            raise RuntimeError("the platform said no")
        return True

    throttle = Throttle(show, INTERVAL, clock=time.clock, sleep=time.sleep)
    throttle.update(view(3))
    await settle()
    throttle.update(view(2))
    await time.advance(INTERVAL)
    assert calls == [view(3), view(2)]
    assert "progress update for job j1 failed: the platform said no" in caplog.text
    await throttle.close()
