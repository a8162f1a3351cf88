"""Retention: the sweep removes old job image folders; rows, charges and kept jobs stay."""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import signal
import sqlite3
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from bot import retention
from bot.commands import Edit, Generate, Overrides, Regenerate, Vary
from bot.config import Settings
from bot.errors import ImagePruned, JobNotFound
from bot.models import Requester, SourceImage
from bot.retention import sweep
from bot.store import Store
from tests.core.store_kit import DAY, HOUR, T0, admit, query, raw_rows, request, result
from tests.fakes.app_fixtures import AppFactory
from tests.fakes.cli_process import start_cli

ALICE = Requester("slack", "U1", "T1", "C1", "Alice")
KEPT_WORDS = "That image is no longer kept (images are kept for 90 days); nothing was charged."
ROOM_WORDS = (
    "That image is no longer kept (the oldest images are removed to make room); "
    "nothing was charged."
)


def settings(data_dir: Path, *, days: float = 90, max_gb: float | None = None) -> Settings:
    return Settings(  # type: ignore[call-arg]
        _env_file=None,
        imagine_data_dir=data_dir,
        imagine_keep_images_days=days,
        imagine_max_data_gb=max_gb,
    )


def sized(size: int, name: str = "photo.png") -> SourceImage:
    return SourceImage(b"\x89PNG\r\n\x1a\n" + b"s" * (size - 8), name, "image/png", 64, 64)


async def finished(store: Store, created: float, *, size: int = 1000, user: str = "1") -> str:
    """A succeeded edit job made at ``created``: one source and one output of ``size`` bytes."""
    job = await admit(store, request(user, sources=(sized(size),)), created)
    await store.mark_running(job.id, now=created + 1)
    await store.finish(job.id, result(b"o" * size), 0.04, now=created + 10)
    return job.id


def folder(store: Store, job_id: str) -> Path:
    return store.data_dir / "images" / job_id


def _file_ledger(path: Path) -> list[tuple[object, ...]]:
    """``ledger`` read from the SQLite file itself, with no store open."""
    jobs = raw_rows(
        path, "SELECT id, status, charged_images, charged_cost, cost_usd FROM jobs ORDER BY id"
    )
    return [*jobs, *raw_rows(path, "SELECT * FROM usage_buckets ORDER BY scope, span, bucket")]


async def ledger(store: Store) -> list[tuple[object, ...]]:
    """Every job row's charges and the usage totals: what a sweep must never change."""
    jobs = await query(
        store, "SELECT id, status, charged_images, charged_cost, cost_usd FROM jobs ORDER BY id"
    )
    buckets = await query(store, "SELECT * FROM usage_buckets ORDER BY scope, span, bucket")
    return [*jobs, *buckets]


def tree(root: Path) -> list[tuple[str, bytes]]:
    return sorted(
        (str(path.relative_to(root)), path.read_bytes())
        for path in root.rglob("*")
        if path.is_file() and not path.name.startswith("imagine.sqlite3")
    )


def age(path: Path, when: float) -> None:
    for item in [path, *path.rglob("*")]:
        os.utime(item, (when, when))


async def test_the_age_bound_removes_old_folders_and_keeps_rows_and_charges(
    store: Store,
) -> None:
    old = await finished(store, T0)
    young = await finished(store, T0 + 95 * DAY)
    before = await ledger(store)
    young_files = tree(folder(store, young))

    report = await sweep(store, settings(store.data_dir), now=T0 + 100 * DAY)

    assert not folder(store, old).exists()
    assert tree(folder(store, young)) == young_files
    assert (report.folders, report.orphans, report.failed) == (1, 0, 0)
    assert report.bytes_freed == 2000
    assert report.oldest_kept == T0 + 95 * DAY
    assert await ledger(store) == before
    assert await query(store, "SELECT job_id FROM job_images") == [(young,)] * 2
    assert await query(store, "SELECT id FROM jobs WHERE images_pruned_at IS NOT NULL") == [(old,)]
    with pytest.raises(ImagePruned) as caught:
        await store.job_images(old)
    assert caught.value.user_message == KEPT_WORDS
    with pytest.raises(ImagePruned):
        await store.job_sources(old)
    assert len(await store.job_images(young)) == 1


async def test_the_size_bound_removes_the_oldest_folders_until_the_rest_fits(
    store: Store,
) -> None:
    jobs = [await finished(store, T0 + i * HOUR, size=100_000) for i in range(5)]
    before = await ledger(store)
    # Each folder holds 200,000 bytes: 450,000 leave room for the two newest only.
    report = await sweep(store, settings(store.data_dir, days=0, max_gb=0.00045), now=T0 + DAY)

    assert [folder(store, job).exists() for job in jobs] == [False, False, False, True, True]
    assert (report.folders, report.bytes_freed, report.bytes_kept) == (3, 600_000, 400_000)
    assert report.over_by == 0
    assert report.oldest_kept == T0 + 3 * HOUR
    assert await ledger(store) == before
    with pytest.raises(ImagePruned) as caught:
        await store.job_images(jobs[0])
    assert caught.value.user_message == ROOM_WORDS


async def test_queued_running_and_just_finished_jobs_are_never_touched(store: Store) -> None:
    queued = await admit(store, request("q", sources=(sized(5000),)), T0)
    running = await admit(store, request("r", sources=(sized(5000),)), T0)
    await store.mark_running(running.id, now=T0 + 1)
    recent = await finished(store, T0 + 100 * DAY - 60)
    done = await finished(store, T0)
    kept = {job: tree(folder(store, job)) for job in (queued.id, running.id, recent)}

    # Past the age bound and far over a one-byte cap: still only the finished old job goes.
    report = await sweep(store, settings(store.data_dir, max_gb=0.000000001), now=T0 + 100 * DAY)

    assert not folder(store, done).exists()
    assert {job: tree(folder(store, job)) for job in kept} == kept
    assert report.folders == 1
    assert report.over_by == report.bytes_kept - 1 > 0
    assert await store.job_sources(queued.id) == ((sized(5000),), None)


async def test_folders_with_no_job_row_go_once_older_than_the_bound(store: Store) -> None:
    now = time.time()
    images = store.data_dir / "images"
    stale = images / "0000000000000000"
    fresh = images / "1111111111111111"  # an admission writing its files before its row
    young = images / "2222222222222222"
    for path in (stale, fresh, young):
        path.mkdir(parents=True)
        (path / "src_0.png").write_bytes(b"x" * 300)
    age(stale, now - 91 * DAY)
    age(young, now - 30 * DAY)
    stray = images / "notes.txt"
    stray.write_text("not a job folder")

    report = await sweep(store, settings(store.data_dir))

    assert not stale.exists()
    assert fresh.is_dir() and young.is_dir() and stray.is_file()
    assert (report.folders, report.orphans, report.bytes_freed) == (1, 1, 300)
    assert report.oldest_kept is None


async def test_a_dry_run_changes_nothing_and_says_what_would_go(store: Store) -> None:
    old = await finished(store, T0)
    await finished(store, T0 + 99 * DAY)
    files = tree(store.data_dir)
    rows = await query(store, "SELECT * FROM jobs ORDER BY id")
    images = await query(store, "SELECT * FROM job_images ORDER BY job_id, kind")

    report = await sweep(store, settings(store.data_dir), dry_run=True, now=T0 + 100 * DAY)

    assert (report.dry_run, report.folders, report.bytes_freed) == (True, 1, 2000)
    assert tree(store.data_dir) == files
    assert await query(store, "SELECT * FROM jobs ORDER BY id") == rows
    assert await query(store, "SELECT * FROM job_images ORDER BY job_id, kind") == images
    assert len(await store.job_images(old)) == 1


async def test_a_pruned_jobs_buttons_and_replies_say_the_image_is_no_longer_kept(
    make_app: AppFactory,
) -> None:
    app = await make_app()
    service = app.service
    made = await service.run(await service.prepare(Generate(ALICE, "a red fox", Overrides())))
    edit = await service.prepare(Edit(ALICE, "make it night", job_id=made.job_id))
    edited = await service.run(edit)

    report = await sweep(app.store, app.settings, now=time.time() + 100 * DAY)
    assert report.folders == 2

    attempts = [
        service.regenerate_request(edited.job_id, ALICE),
        service.edit_request(made.job_id, ALICE, "add snow"),
        service.edit_request(edited.job_id, ALICE, "add snow"),
        service.prepare(Regenerate(ALICE, edited.job_id)),
        service.prepare(Edit(ALICE, "add snow", job_id=made.job_id)),
        service.prepare(Vary(ALICE, made.job_id)),
    ]
    for attempt in attempts:
        with pytest.raises(ImagePruned) as caught:
            await attempt
        assert caught.value.user_message == KEPT_WORDS
        assert isinstance(caught.value, JobNotFound)
    # A prompt-only job needs no kept image to be made again.
    again = await service.prepare(Regenerate(ALICE, made.job_id))
    assert (again.prompt, again.sources) == ("a red fox", ())


async def _prune(data_dir: Path, *args: str, **env: str) -> tuple[int, str, str]:
    process = await start_cli(
        "prune", *args, cwd=data_dir.parent, IMAGINE_DATA_DIR=str(data_dir), **env
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_the_prune_command_prints_what_it_frees(db_path: Path) -> None:
    store = await Store.open(db_path)
    now = time.time()
    old = await finished(store, now - 100 * DAY, size=400_000)
    await finished(store, now - 10 * DAY, size=100_000)
    orphan = store.data_dir / "images" / "0000000000000000"
    orphan.mkdir()
    (orphan / "out_0.png").write_bytes(b"x" * 200_000)
    age(orphan, now - 120 * DAY)
    await store.close()
    kept_day = time.strftime("%Y-%m-%d", time.gmtime(now - 10 * DAY))

    code, out, err = await _prune(db_path.parent, "--dry-run")
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert lines[0] == "Would remove 2 image folders (1 with no job), would free 1.0 MB."
    assert lines[1].startswith(f"Kept 0.2 MB; oldest kept job: {kept_day} ")
    assert len(lines) == 2
    assert folder(store, old).is_dir() and orphan.is_dir()

    code, out, err = await _prune(db_path.parent)
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert lines[0] == "Removed 2 image folders (1 with no job), freed 1.0 MB."
    assert lines[1].startswith(f"Kept 0.2 MB; oldest kept job: {kept_day} ")
    assert len(lines) == 2
    assert not folder(store, old).exists() and not orphan.exists()

    code, out, _ = await _prune(db_path.parent, IMAGINE_KEEP_IMAGES_DAYS="0")
    assert code == 0
    assert out.splitlines()[0] == "Removed 0 image folders, freed 0.0 MB."
    assert "images are kept forever" in out.splitlines()[-1]


def _half_then_fail(path: Path) -> None:
    """Delete half of a folder's files, then fail as a full or failing disk would."""
    files = sorted(p for p in Path(path).rglob("*") if p.is_file())
    for item in files[: len(files) // 2]:
        item.unlink()
    raise OSError(5, "Input/output error", str(path))


async def test_a_sweep_that_fails_half_way_is_finished_by_the_next(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    old = await finished(store, T0)
    young = await finished(store, T0 + 99 * DAY)
    young_files = tree(folder(store, young))
    before = await ledger(store)
    monkeypatch.setattr(retention, "_remove_tree", _half_then_fail)

    first = await sweep(store, settings(store.data_dir), now=T0 + 100 * DAY)
    assert (first.folders, first.failed, first.bytes_freed) == (0, 1, 1000)
    assert folder(store, old).is_dir()
    with pytest.raises(ImagePruned):  # marked before its files went: never half offered
        await store.job_images(old)

    monkeypatch.setattr(retention, "_remove_tree", shutil.rmtree)
    second = await sweep(store, settings(store.data_dir), now=T0 + 100 * DAY)
    assert (second.folders, second.failed, second.bytes_freed) == (1, 0, 1000)
    assert not folder(store, old).exists()
    assert tree(folder(store, young)) == young_files
    assert await ledger(store) == before


async def test_a_prune_killed_while_deleting_is_finished_by_the_next(db_path: Path) -> None:
    store = await Store.open(db_path)
    now = time.time()
    old = await finished(store, now - 100 * DAY)
    young = await finished(store, now - DAY)
    await store.close()
    # A big tree makes the deletion slow enough to be caught in the middle.
    probes: list[Path] = []
    for i in range(60):
        sub = folder(store, old) / f"bulk{i:02d}"
        sub.mkdir()
        for j in range(400):
            (sub / f"{j}.bin").write_bytes(b"b")
        probes.append(sub / "0.bin")
    young_files = tree(folder(store, young))
    before = _file_ledger(db_path)

    process = await start_cli(
        "prune", cwd=db_path.parent.parent, IMAGINE_DATA_DIR=str(db_path.parent)
    )
    deadline = time.monotonic() + 60
    while all(probe.exists() for probe in probes):
        assert process.returncode is None, "prune finished before it could be stopped"
        assert time.monotonic() < deadline
        await asyncio.sleep(0.002)
    process.send_signal(signal.SIGKILL)
    await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode == -signal.SIGKILL
    assert folder(store, old).is_dir(), "killed after the deletion had finished"

    code, out, _ = await _prune(db_path.parent)
    assert code == 0
    assert out.startswith("Removed 1 image folder, freed ")
    assert not folder(store, old).exists()
    assert tree(folder(store, young)) == young_files
    assert _file_ledger(db_path) == before
    marked = raw_rows(db_path, "SELECT id FROM jobs WHERE images_pruned_at IS NOT NULL")
    assert marked == [(old,)]


class _FlakyStore:
    """The real store, whose first read for a sweep fails as a locked database does."""

    def __init__(self, store: Store) -> None:
        self.inner = store
        self.data_dir = store.data_dir
        self.failures = 1

    async def retention_rows(self, job_ids: Sequence[str]) -> dict[str, sqlite3.Row]:
        if self.failures:
            self.failures -= 1
            raise sqlite3.OperationalError("database is locked")
        return await self.inner.retention_rows(job_ids)

    async def mark_pruned(
        self, job_ids: Sequence[str], kept_days: float | None, now: float
    ) -> set[str]:
        return await self.inner.mark_pruned(job_ids, kept_days, now)


async def test_the_background_sweep_logs_a_failure_and_keeps_going(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="bot.retention")
    old = await finished(store, time.time() - 100 * DAY)
    flaky = _FlakyStore(store)
    task = asyncio.create_task(
        retention.keep_sweeping(flaky, settings(store.data_dir), first_after_s=0, every_s=0.01)
    )
    try:
        deadline = time.monotonic() + 30
        while folder(store, old).exists():
            assert not task.done()
            assert time.monotonic() < deadline
            await asyncio.sleep(0.01)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    messages = [r.getMessage() for r in caplog.records if r.name == "bot.retention"]
    assert any("image sweep failed" in m and "database is locked" in m for m in messages)
    assert any(m.startswith("image sweep: removed 1 folder(s)") for m in messages)
