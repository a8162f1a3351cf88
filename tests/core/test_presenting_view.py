"""JobView.fold: what each progress event changes in what the user sees."""

from __future__ import annotations

from bot.models import Finished, PartialImage, Queued, Requester, Started
from bot.presenting import JobView

ANN = Requester("slack", "U1")


def test_queued_sets_the_job_and_its_place_in_line() -> None:
    view = JobView("a kite", ANN, now=1.0).fold(Queued("j1", 3), now=2.0)
    assert (view.phase, view.job_id, view.position, view.now) == ("queued", "j1", 3, 2.0)
    assert view.started_at is None
    assert view.elapsed_s == 0.0


def test_started_runs_the_job_and_starts_its_clock() -> None:
    view = JobView("a kite", ANN).fold(Queued("j1", 1), 5.0).fold(Started("j1"), 10.0)
    assert (view.phase, view.job_id, view.started_at) == ("running", "j1", 10.0)
    later = view.fold(Queued("j1", 0), 14.5)  # a late place in line never un-starts a job
    assert later.phase == "running"
    assert later.position == 0
    assert later.elapsed_s == 4.5


def test_each_preview_counts_and_the_newest_is_kept() -> None:
    view = JobView("a kite", ANN).fold(Started("j1"), 1.0)
    view = view.fold(PartialImage("j1", 0, b"first", "png"), 2.0)
    view = view.fold(PartialImage("j1", 1, b"second", "webp"), 3.0)
    assert (view.previews, view.preview, view.preview_format) == (2, b"second", "webp")
    assert view.step == ("running", 2)


def test_finished_changes_nothing_but_the_time() -> None:
    view = JobView("a kite", ANN).fold(Started("j1"), 1.0)
    after = view.fold(Finished("j1", "succeeded"), 9.0)
    assert after == JobView("a kite", ANN, "running", "j1", started_at=1.0, now=9.0)


def test_step_ignores_the_place_in_line() -> None:
    first = JobView("a kite", ANN).fold(Queued("j1", 3), 1.0)
    assert first.fold(Queued("j1", 2), 2.0).step == first.step == ("queued", 0)
    assert first.fold(Started("j1"), 2.0).step == ("running", 0)
