"""The store on either engine: schema, lifecycle, recovery, links and lookups."""

from __future__ import annotations

import asyncio
import shutil
import sqlite3
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest

from bot.errors import ConfigError, JobNotFound, LimitExceeded
from bot.migrations import APPLICATION_ID, SCHEMA_VERSION
from bot.models import ImageOptions, JobRecord, SourceImage, Usage
from bot.store import Store
from bot.store_base import UsageRow
from tests.core.store_kit import (
    DAY,
    T0,
    OpenStore,
    admit,
    limits,
    png,
    query,
    raw_rows,
    request,
    result,
    schema_version,
    source,
    table_names,
)

# --- schema ---------------------------------------------------------------------------------


async def test_open_creates_schema_and_reopening_keeps_data(
    open_store: OpenStore, db_path: Path
) -> None:
    store = await open_store(db_path)
    job = await admit(store, request(), T0)
    options = ImageOptions(
        model="gpt-image-1-mini",
        size="1536x1024",
        quality="high",
        n=3,
        background="transparent",
        output_format="webp",
        output_compression=70,
        moderation="low",
        partial_images=2,
    )
    detailed = await admit(store, replace(request(), options=options), T0 + 1)
    await store.finish(detailed.id, result(png(b"a"), png(b"b"), png(b"c")), 0.3, now=T0 + 2)
    tables = await table_names(store)
    assert {"jobs", "job_images", "message_links", "events", "owners"} <= tables
    assert await schema_version(store) == SCHEMA_VERSION
    await store.close()

    again = await open_store(db_path)
    assert await table_names(again) == tables
    assert await schema_version(again) == SCHEMA_VERSION
    stored = await again.get_job(job.id)
    assert stored is not None
    assert stored.prompt == "a lighthouse in fog"
    assert stored.requester == request().requester
    # Its store closed before it ran: reopening ends it, refunded.
    assert (stored.status, stored.charged_images) == ("interrupted", 0)
    # every option and the requester's platform ids come back as they were asked
    reread = await again.get_job(detailed.id)
    assert reread is not None
    assert reread.options == options
    assert (reread.requester.team_id, reread.requester.channel_id) == ("guild1", "chan1")
    assert (reread.status, reread.charged_images) == ("succeeded", 3)


@pytest.mark.sqlite_only
async def test_the_file_is_marked_as_the_bots_and_kept_in_wal_mode(
    open_store: OpenStore, db_path: Path
) -> None:
    store = await open_store(db_path)
    await admit(store, request(), T0)
    await store.close()

    tables = {row[0] for row in raw_rows(db_path, "SELECT name FROM sqlite_master")}
    assert {"jobs", "job_images", "message_links", "events", "owners"} <= tables
    assert raw_rows(db_path, "PRAGMA user_version") == [(SCHEMA_VERSION,)]
    assert raw_rows(db_path, "PRAGMA application_id") == [(APPLICATION_ID,)]
    assert raw_rows(db_path, "PRAGMA journal_mode") == [("wal",)]

    await open_store(db_path)
    assert raw_rows(db_path, "PRAGMA user_version") == [(SCHEMA_VERSION,)]


async def test_a_file_from_a_newer_version_is_refused(db_path: Path) -> None:
    db_path.parent.mkdir(parents=True)
    db = sqlite3.connect(db_path)
    db.execute(f"PRAGMA application_id = {APPLICATION_ID}")
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    db.close()
    with pytest.raises(ConfigError, match="newer imagine-bot"):
        await Store.open(db_path)


# --- lifecycle ------------------------------------------------------------------------------


async def test_admit_run_finish_saves_images_and_settles_cost(store: Store, db_path: Path) -> None:
    job = await admit(store, request(n=2), T0, cost=0.08)
    assert (job.status, job.charged_images, job.created_at) == ("queued", 2, T0)
    await store.mark_running(job.id, now=T0 + 1)

    saved = await store.finish(job.id, result(png(b"a"), png(b"b")), 0.07, now=T0 + 30)

    assert [image.index for image in saved] == [0, 1]
    assert saved[0].path == db_path.parent / "images" / job.id / "out_0.png"
    assert saved[0].path.is_absolute()
    assert [image.read_bytes() for image in saved] == [png(b"a"), png(b"b")]
    assert saved[0].mime == "image/png"
    assert await store.job_images(job.id) == saved
    done = await store.get_job(job.id)
    assert done is not None
    assert (done.status, done.started_at, done.finished_at) == ("succeeded", T0 + 1, T0 + 30)
    assert done.usage == Usage(50, 4000, 4050)
    assert done.cost_usd == pytest.approx(0.07)
    assert done.charged_images == 2
    paths = await query(
        store, "SELECT path FROM job_images WHERE job_id = ? ORDER BY idx", (job.id,)
    )
    assert paths == [(f"images/{job.id}/out_0.png",), (f"images/{job.id}/out_1.png",)]
    # Calling finish again does not write a second set.
    assert await store.finish(job.id, result(png(b"c")), 0.01, now=T0 + 31) == saved


async def test_images_pruned_from_disk_are_not_offered(store: Store) -> None:
    job = await admit(store, request(n=2), T0)
    saved = await store.finish(job.id, result(png(b"a"), png(b"b")), 0.02, now=T0 + 5)
    saved[0].path.unlink()
    assert await store.job_images(job.id) == (saved[1],)
    saved[1].path.unlink()
    assert await store.job_images(job.id) == ()


async def test_finish_keeps_the_output_format_in_the_file_name(store: Store) -> None:
    job = await admit(store, request(), T0)
    saved = await store.finish(job.id, result(b"jpegdata", output_format="jpeg"), 0.02)
    assert saved[0].path.name == "out_0.jpg"
    assert saved[0].mime == "image/jpeg"


async def test_finish_of_an_unknown_job_raises(store: Store) -> None:
    with pytest.raises(JobNotFound):
        await store.finish("nosuchjob", result(png(b"a")), 0.01)


async def test_fail_refunds_and_a_final_job_stays_final(store: Store) -> None:
    rule = limits("2/hour")
    job = await admit(store, request(n=2), T0, limit=rule)
    with pytest.raises(LimitExceeded):
        await admit(store, request(), T0 + 1, limit=rule)

    await store.fail(job.id, "provider timed out", now=T0 + 2)

    failed = await store.get_job(job.id)
    assert failed is not None
    assert (failed.status, failed.error, failed.charged_images) == (
        "failed",
        "provider timed out",
        0,
    )
    second = await admit(store, request(n=2), T0 + 3, limit=rule)
    # Failing again, or as interrupted, changes nothing on a final job.
    await store.fail(job.id, "again", status="interrupted", now=T0 + 4)
    assert await store.get_job(job.id) == failed
    await store.finish(second.id, result(png(b"x")), 0.03, now=T0 + 5)
    await store.fail(second.id, "too late", now=T0 + 6)
    finished = await store.get_job(second.id)
    assert finished is not None
    assert (finished.status, finished.error, finished.charged_images) == ("succeeded", None, 1)
    with pytest.raises(ValueError, match="status"):
        await store.fail(second.id, "x", status="succeeded")


# --- recovery, links, sources, events, usage ------------------------------------------------


async def test_recover_interrupted_marks_refunds_and_returns_platform_refs(
    open_store: OpenStore, db_path: Path
) -> None:
    store = await open_store(db_path)
    queued = await admit(store, request(n=2), T0)
    running = await admit(store, request(), T0 + 1)
    await store.mark_running(running.id, now=T0 + 2)
    await store.set_platform_ref(running.id, {"channel": "C1", "ts": "123.4"})
    await store.set_platform_ref(running.id, {"thread_ts": "99.1"})
    done = await admit(store, request(), T0 + 3)
    await store.finish(done.id, result(png(b"d")), 0.04, now=T0 + 4)

    other = await open_store(db_path)
    # The first store is open, so its jobs are alive: nothing to recover, nothing refunded.
    assert await other.recover_interrupted(now=T0 + 50) == []
    assert await other.claim_interrupted() == []
    [row] = await other.usage_summary(now=T0 + 50)
    assert row.images_today == 4
    await store.close()

    recovered = await other.recover_interrupted(now=T0 + 100)

    assert [job.id for job in recovered] == [queued.id, running.id]
    assert all(job.status == "interrupted" for job in recovered)
    assert all(job.charged_images == 0 for job in recovered)
    assert all(job.finished_at == T0 + 100 for job in recovered)
    assert recovered[1].platform_ref == {"channel": "C1", "ts": "123.4", "thread_ts": "99.1"}
    finished = await other.get_job(done.id)
    assert finished is not None and finished.status == "succeeded"
    [row] = await other.usage_summary(now=T0 + 100)
    assert row.images_today == 1
    assert await other.recover_interrupted(now=T0 + 200) == []
    # Their users are told once: the first claim returns them, any later one nothing.
    claimed = await other.claim_interrupted({"discord"})
    assert [job.id for job in claimed] == [queued.id, running.id]
    assert claimed[1].platform_ref == recovered[1].platform_ref
    assert await other.claim_interrupted() == []


async def test_platform_ref_of_an_unknown_job_raises(store: Store) -> None:
    with pytest.raises(JobNotFound):
        await store.set_platform_ref("nosuchjob", {"a": 1})


async def test_messages_link_to_jobs(store: Store) -> None:
    first = await admit(store, request(), T0)
    second = await admit(store, request(), T0 + 1)
    await store.link_message("slack", "C1:171.2", first.id)
    await store.link_message("discord", "171.2", second.id)

    found = await store.job_for_message("slack", "C1:171.2")
    assert found is not None and found.id == first.id
    other = await store.job_for_message("discord", "171.2")
    assert other is not None and other.id == second.id
    assert await store.job_for_message("slack", "C1:999") is None
    await store.link_message("slack", "C1:171.2", second.id)
    moved = await store.job_for_message("slack", "C1:171.2")
    assert moved is not None and moved.id == second.id
    with pytest.raises(JobNotFound):
        await store.link_message("slack", "C1:5", "nosuchjob")


async def test_sources_and_mask_round_trip_after_the_data_dir_moves(
    open_store: OpenStore, db_path: Path, tmp_path: Path
) -> None:
    sources = (
        source(b"one", "cat.png"),
        SourceImage(b"\xff\xd8jpeg" * 50, "dog.jpg", "image/jpeg"),
    )
    mask = SourceImage(png(b"mask"), "mask.png", "image/png", 640, 480)
    store = await open_store(db_path)
    job = await admit(store, request(sources=sources, mask=mask, parent="parent1"), T0)
    assert (job.is_edit, job.source_count, job.parent_job_id) == (True, 2, "parent1")
    assert (db_path.parent / "images" / job.id / "src_1.jpg").read_bytes() == sources[1].data
    await store.close()

    moved = tmp_path / "elsewhere"
    shutil.copytree(db_path.parent, moved)
    shutil.rmtree(db_path.parent)
    store = await open_store(moved / db_path.name)

    assert await store.job_sources(job.id) == (sources, mask)
    stored = await store.get_job(job.id)
    assert stored is not None and (stored.is_edit, stored.source_count) == (True, 2)
    assert await store.job_sources("nosuchjob") == ((), None)
    (moved / "images" / job.id / "src_0.png").unlink()
    with pytest.raises(JobNotFound):
        await store.job_sources(job.id)


async def test_a_refused_edit_leaves_no_files(store: Store, db_path: Path) -> None:
    rule = limits("1/hour")
    await admit(store, request(), T0, limit=rule)
    with pytest.raises(LimitExceeded):
        await admit(store, request(sources=(source(b"x"),)), T0 + 1, limit=rule)
    images = db_path.parent / "images"
    assert not images.exists() or list(images.iterdir()) == []


async def test_concurrent_edits_over_the_limit_keep_only_the_admitted_files(
    store: Store, db_path: Path
) -> None:
    rule = limits("1/hour")
    edits = [request(sources=(source(bytes([i])),)) for i in range(6)]

    outcomes = await asyncio.gather(
        *(admit(store, edit, T0, limit=rule) for edit in edits), return_exceptions=True
    )

    admitted = [o for o in outcomes if isinstance(o, JobRecord)]
    assert len(admitted) == 1
    assert all(isinstance(o, LimitExceeded) for o in outcomes if o not in admitted)
    kept = sorted(path.name for path in (db_path.parent / "images").iterdir())
    assert kept == [admitted[0].id]
    sources, _ = await store.job_sources(admitted[0].id)
    assert len(sources) == 1


async def test_claim_event_is_true_once_per_key(open_store: OpenStore, db_path: Path) -> None:
    store = await open_store(db_path)
    assert await store.claim_event("slack:C1:171.2", now=T0) is True
    assert await store.claim_event("slack:C1:171.2", now=T0 + 1) is False
    assert await store.claim_event("slack:C1:171.3", now=T0 + 1) is True
    await store.close()

    store = await open_store(db_path)
    assert await store.claim_event("slack:C1:171.2", now=T0 + 2) is False
    # After a day the key is forgotten, so the table does not grow for ever.
    assert await store.claim_event("slack:C1:171.2", now=T0 + DAY + 10) is True


async def test_usage_summary_counts_today_and_this_month(store: Store) -> None:
    now = datetime(2026, 3, 15, 12, tzinfo=UTC).timestamp()
    yesterday = datetime(2026, 3, 14, 23, tzinfo=UTC).timestamp()
    last_month = datetime(2026, 2, 28, 23, tzinfo=UTC).timestamp()

    async def succeeded(user: str, when: float, n: int, cost: float) -> None:
        job = await admit(store, request(user, n=n), when)
        await store.finish(job.id, result(*[png(b"i")] * n), cost, now=when + 1)

    await succeeded("a", last_month, 3, 0.30)
    await succeeded("a", yesterday, 2, 0.10)
    await succeeded("a", now - 60, 1, 0.05)
    failed = await admit(store, request("a", n=3), now - 50, cost=0.12)
    await store.fail(failed.id, "blocked", now=now - 40)
    await admit(store, request("a", n=2), now - 30, cost=0.08)  # still running: reserved
    await succeeded("b", now - 20, 4, 0.40)

    summary = await store.usage_summary(now=now)

    assert [row.user_key for row in summary] == ["discord:b", "discord:a"]
    b, a = summary
    assert (b.images_today, b.images_month) == (4, 4)
    assert b.cost_today == pytest.approx(0.40)
    assert b.cost_month == pytest.approx(0.40)
    assert (a.images_today, a.images_month) == (3, 5)
    assert a.cost_today == pytest.approx(0.13)
    assert a.cost_month == pytest.approx(0.23)
    assert await store.usage_summary("discord:a", now=now) == [a]
    assert await store.usage_summary("discord:nobody", now=now) == [
        UsageRow("discord:nobody", 0, 0.0, 0, 0.0)
    ]
