"""The SQLite store against real files: schema, admission under concurrency, refunds, lookups."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import sqlite3
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest

from bot.config import WindowRule, parse_rules
from bot.errors import (
    BudgetExceeded,
    ConfigError,
    JobNotFound,
    LimitExceeded,
    OverBudget,
    TooManyImages,
)
from bot.migrations import APPLICATION_ID, SCHEMA_VERSION
from bot.models import (
    GeneratedImage,
    ImageOptions,
    ImageRequest,
    JobRecord,
    ProviderResult,
    Requester,
    SourceImage,
    Usage,
)
from bot.store import Store
from bot.store_base import UsageRow

T0 = 1_750_000_000.0
HOUR = 3600.0
DAY = 86_400.0

OpenStore = Callable[[Path], Awaitable[Store]]


@pytest.fixture
async def open_store() -> AsyncIterator[OpenStore]:
    """Opens stores and closes every one at the end, even when the test fails."""
    async with contextlib.AsyncExitStack() as opened:

        async def _open(path: Path) -> Store:
            store = await Store.open(path)
            opened.push_async_callback(store.close)
            return store

        yield _open


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "data" / "imagine.sqlite3"


@pytest.fixture
async def store(open_store: OpenStore, db_path: Path) -> Store:
    return await open_store(db_path)


def request(
    user: str = "1",
    *,
    n: int = 1,
    prompt: str = "a lighthouse in fog",
    sources: tuple[SourceImage, ...] = (),
    mask: SourceImage | None = None,
    parent: str | None = None,
) -> ImageRequest:
    requester = Requester("discord", user, "guild1", "chan1", f"User {user}")
    return ImageRequest(requester, prompt, ImageOptions(n=n), sources, mask, parent)


def limits(text: str) -> tuple[WindowRule, ...]:
    return parse_rules(text, whole=True)


def budgets(text: str) -> tuple[WindowRule, ...]:
    return parse_rules(text, whole=False)


async def admit(
    store: Store,
    req: ImageRequest,
    now: float,
    *,
    limit: Sequence[WindowRule] = (),
    budget: Sequence[WindowRule] = (),
    cost: float = 0.04,
    exempt: bool = False,
) -> JobRecord:
    return await store.admit(
        req, limits=limit, budgets=budget, estimated_cost=cost, exempt=exempt, now=now
    )


def result(*datas: bytes, output_format: str = "png") -> ProviderResult:
    images = tuple(GeneratedImage(data, output_format) for data in datas)
    return ProviderResult(images, Usage(50, 4000, 4050), request_id="req_123")


def png(tag: bytes) -> bytes:
    return b"\x89PNG\r\n\x1a\n" + tag * 100


def source(tag: bytes, name: str = "photo.png") -> SourceImage:
    return SourceImage(png(tag), name, "image/png", 640, 480)


def raw_rows(path: Path, sql: str, params: Sequence[object] = ()) -> list[tuple[object, ...]]:
    db = sqlite3.connect(path)
    try:
        return list(db.execute(sql, params))
    finally:
        db.close()


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
    await store.close()

    tables = {row[0] for row in raw_rows(db_path, "SELECT name FROM sqlite_master")}
    assert {"jobs", "job_images", "message_links", "events", "owners"} <= tables
    assert raw_rows(db_path, "PRAGMA user_version") == [(SCHEMA_VERSION,)]
    assert raw_rows(db_path, "PRAGMA application_id") == [(APPLICATION_ID,)]
    assert raw_rows(db_path, "PRAGMA journal_mode") == [("wal",)]

    again = await open_store(db_path)
    assert raw_rows(db_path, "PRAGMA user_version") == [(SCHEMA_VERSION,)]
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
    paths = raw_rows(db_path, "SELECT path FROM job_images WHERE job_id = ?", (job.id,))
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


# --- limits ---------------------------------------------------------------------------------


async def test_200_concurrent_requests_admit_exactly_the_limit(store: Store, db_path: Path) -> None:
    rule = limits("10/hour")
    outcomes = await asyncio.gather(
        *(admit(store, request(), T0, limit=rule) for _ in range(200)), return_exceptions=True
    )

    admitted = [o for o in outcomes if isinstance(o, JobRecord)]
    refused = [o for o in outcomes if isinstance(o, LimitExceeded)]
    assert len(admitted) == 10
    assert len(refused) == 190
    assert len({job.id for job in admitted}) == 10
    assert all((e.limit, e.used, e.requested) == (10, 10, 1) for e in refused)
    assert all(e.retry_after == pytest.approx(HOUR) for e in refused)
    assert refused[0].resets_at == pytest.approx(T0 + HOUR)
    assert "10 images per hour" in refused[0].user_message
    rows = raw_rows(db_path, "SELECT COUNT(*), SUM(charged_images) FROM jobs")
    assert rows == [(10, 10)]


async def test_two_stores_on_one_file_never_over_admit(
    open_store: OpenStore, db_path: Path
) -> None:
    # Opening a fresh file from two connections at once migrates it once.
    first, second = await asyncio.gather(open_store(db_path), open_store(db_path))
    rule = limits("10/hour")
    attempts = [admit(s, request(), T0, limit=rule) for _ in range(60) for s in (first, second)]

    outcomes = await asyncio.gather(*attempts, return_exceptions=True)

    admitted = [o for o in outcomes if isinstance(o, JobRecord)]
    unexpected = [o for o in outcomes if isinstance(o, BaseException)]
    unexpected = [o for o in unexpected if not isinstance(o, LimitExceeded)]
    assert unexpected == []
    assert len(admitted) == 10
    assert raw_rows(db_path, "SELECT COUNT(*) FROM jobs") == [(10,)]


_CHILD = """
import asyncio, sys
from pathlib import Path
from bot.config import parse_rules
from bot.errors import LimitExceeded
from bot.models import ImageRequest, Requester
from bot.store import Store

async def main() -> None:
    store = await Store.open(Path(sys.argv[1]))
    rule = parse_rules("10/hour", whole=True)
    req = ImageRequest(Requester("discord", "1"), "from the other process")
    print("ready", flush=True)
    await asyncio.to_thread(sys.stdin.readline)
    async def one() -> bool:
        try:
            await store.admit(req, limits=rule, budgets=(), estimated_cost=0.04, exempt=False,
                              now=float(sys.argv[2]))
        except LimitExceeded:
            return False
        return True
    results = await asyncio.gather(*(one() for _ in range(60)))
    await store.close()
    print("admitted", sum(results), flush=True)

asyncio.run(main())
"""


async def test_another_process_on_the_same_file_never_over_admits(
    store: Store, db_path: Path
) -> None:
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        _CHILD,
        str(db_path),
        str(T0),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert child.stdin is not None and child.stdout is not None
    try:
        ready = await asyncio.wait_for(child.stdout.readline(), 30)
        assert ready == b"ready\n"
        child.stdin.write(b"go\n")
        await child.stdin.drain()
        rule = limits("10/hour")
        here = await asyncio.gather(
            *(admit(store, request(), T0, limit=rule) for _ in range(60)), return_exceptions=True
        )
        out, _ = await asyncio.wait_for(child.communicate(), 60)
    finally:
        if child.returncode is None:
            child.kill()
            await child.wait()
    admitted_here = sum(isinstance(o, JobRecord) for o in here)
    assert all(isinstance(o, JobRecord | LimitExceeded) for o in here)
    admitted_there = int(out.split()[-1])
    assert admitted_here + admitted_there == 10
    assert raw_rows(db_path, "SELECT COUNT(*) FROM jobs") == [(10,)]


async def test_a_limit_survives_a_restart(open_store: OpenStore, db_path: Path) -> None:
    rule = limits("3/hour")
    store = await open_store(db_path)
    for i in range(3):
        job = await admit(store, request(), T0 + i, limit=rule)
        await store.finish(job.id, result(png(b"a")), 0.04, now=T0 + i)
    await store.close()

    reopened = await open_store(db_path)
    with pytest.raises(LimitExceeded) as refused:
        await admit(reopened, request(), T0 + 10, limit=rule)
    assert refused.value.retry_after == pytest.approx(HOUR - 10)
    # Once the first image is an hour old, one more fits, and only one.
    await admit(reopened, request(), T0 + HOUR, limit=rule)
    with pytest.raises(LimitExceeded):
        await admit(reopened, request(), T0 + HOUR, limit=rule)


async def test_limits_count_images_not_requests(store: Store) -> None:
    rule = limits("5/hour")
    await admit(store, request(n=4), T0, limit=rule)
    with pytest.raises(LimitExceeded) as refused:
        await admit(store, request(n=4), T0 + 1, limit=rule)
    assert (refused.value.used, refused.value.requested) == (4, 4)
    assert "You have 1 of your 5 images per hour left and asked for 4" in refused.value.user_message
    await admit(store, request(n=1), T0 + 2, limit=rule)


async def test_each_of_several_rules_is_enforced(store: Store) -> None:
    rule = limits("2/minute,5/day")
    await admit(store, request(), T0, limit=rule)
    await admit(store, request(), T0 + 1, limit=rule)
    with pytest.raises(LimitExceeded) as per_minute:
        await admit(store, request(), T0 + 2, limit=rule)
    assert per_minute.value.window_label == "minute"
    assert per_minute.value.retry_after == pytest.approx(58)

    for now in (T0 + 60, T0 + 61, T0 + 120):
        await admit(store, request(), now, limit=rule)
    with pytest.raises(LimitExceeded) as per_day:
        await admit(store, request(), T0 + 200, limit=rule)
    assert per_day.value.window_label == "day"
    assert per_day.value.limit == 5
    assert per_day.value.retry_after == pytest.approx(DAY - 200)
    # Other users have their own allowance.
    await admit(store, request("2"), T0 + 200, limit=rule)


async def test_the_longest_wait_is_named_when_several_rules_refuse(store: Store) -> None:
    rule = limits("1/minute,1/day")
    await admit(store, request(), T0, limit=rule)
    with pytest.raises(LimitExceeded) as refused:
        await admit(store, request(), T0 + 30, limit=rule)
    assert refused.value.window_label == "day"
    assert refused.value.retry_after == pytest.approx(DAY - 30)


async def test_exempt_users_bypass_limits_but_are_recorded(store: Store) -> None:
    rule = limits("1/hour")
    for i in range(3):
        await admit(store, request(n=2), T0 + i, limit=rule, exempt=True)
    with pytest.raises(LimitExceeded):
        await admit(store, request(), T0 + 5, limit=rule)
    [row] = await store.usage_summary("discord:1", now=T0 + 10)
    assert row.images_today == 6


async def test_retry_after_follows_staggered_jobs(store: Store) -> None:
    rule = limits("4/hour")
    await admit(store, request(n=2), T0, limit=rule)
    await admit(store, request(n=1), T0 + 600, limit=rule)
    await admit(store, request(n=1), T0 + 1200, limit=rule)
    now = T0 + 1800

    with pytest.raises(LimitExceeded) as one:
        await admit(store, request(n=1), now, limit=rule)
    assert one.value.retry_after == pytest.approx(HOUR - 1800)
    with pytest.raises(LimitExceeded) as three:
        await admit(store, request(n=3), now, limit=rule)
    assert three.value.retry_after == pytest.approx(600 + HOUR - 1800)
    with pytest.raises(LimitExceeded) as four:
        await admit(store, request(n=4), now, limit=rule)
    assert four.value.retry_after == pytest.approx(1200 + HOUR - 1800)
    with pytest.raises(TooManyImages) as too_many:
        await admit(store, request(n=5), now, limit=rule)
    assert "at most 4 images per hour, so this can never fit" in too_many.value.user_message


async def test_refunded_jobs_do_not_hold_a_place_in_the_window(store: Store) -> None:
    rule = limits("2/hour")
    first = await admit(store, request(), T0, limit=rule)
    await admit(store, request(), T0 + 100, limit=rule)
    await store.fail(first.id, "blocked", now=T0 + 101)
    await admit(store, request(), T0 + 200, limit=rule)
    with pytest.raises(LimitExceeded) as refused:
        await admit(store, request(), T0 + 300, limit=rule)
    assert refused.value.retry_after == pytest.approx(100 + HOUR - 300)


async def test_budgets_reserve_the_estimate_then_settle_the_real_cost(store: Store) -> None:
    rule = budgets("$1/day")
    first = await admit(store, request(), T0, budget=rule, cost=0.6)
    with pytest.raises(BudgetExceeded) as refused:
        await admit(store, request(), T0 + 1, budget=rule, cost=0.6)
    assert refused.value.spent_usd == pytest.approx(0.6)
    assert refused.value.budget_usd == pytest.approx(1.0)
    assert refused.value.retry_after == pytest.approx(DAY - 1)

    await store.finish(first.id, result(png(b"a")), 0.3, now=T0 + 2)
    await admit(store, request(), T0 + 3, budget=rule, cost=0.6)
    await admit(store, request(), T0 + 4, budget=rule, cost=0.1)  # exactly $1.00
    with pytest.raises(BudgetExceeded) as over:
        await admit(store, request(), T0 + 5, budget=rule, cost=0.2)
    # Room for $0.20 appears when the $0.30 job leaves the window.
    assert over.value.retry_after == pytest.approx(DAY - 5)
    with pytest.raises(OverBudget) as never:
        await admit(store, request("2"), T0, budget=rule, cost=1.5)
    assert "more than your whole budget of $1.00 per day" in never.value.user_message


async def test_limits_and_budgets_together(store: Store) -> None:
    image_rule, dollar_rule = limits("10/hour"), budgets("$0.10/hour")
    await admit(store, request(), T0, limit=image_rule, budget=dollar_rule, cost=0.08)
    with pytest.raises(BudgetExceeded):
        await admit(store, request(), T0 + 1, limit=image_rule, budget=dollar_rule, cost=0.08)
    await admit(store, request(), T0 + 2, limit=image_rule, budget=dollar_rule, cost=0.02)


async def test_cancelled_admissions_leave_the_store_usable(store: Store, db_path: Path) -> None:
    rule = limits("10/hour")
    tasks = [asyncio.create_task(admit(store, request(), T0, limit=rule)) for _ in range(40)]
    for _ in range(5):
        await asyncio.sleep(0)
    for task in tasks[::2]:
        task.cancel()
    outcomes = await asyncio.gather(*tasks, return_exceptions=True)

    admitted = [o for o in outcomes if isinstance(o, JobRecord)]
    [(rows,)] = raw_rows(db_path, "SELECT COUNT(*) FROM jobs")
    assert isinstance(rows, int)
    assert len(admitted) <= rows <= 10
    later = await admit(store, request("2"), T0, limit=rule)
    assert await store.get_job(later.id) is not None


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
