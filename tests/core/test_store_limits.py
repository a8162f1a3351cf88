"""The store's limits and budgets: admission under concurrency, across processes, refunds."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest

from bot.errors import BudgetExceeded, LimitExceeded, OverBudget, TooManyImages
from bot.models import JobRecord
from bot.store import Store
from tests.core.store_kit import (
    DAY,
    HOUR,
    T0,
    OpenStore,
    admit,
    budgets,
    limits,
    png,
    query,
    request,
    result,
)

# --- limits ---------------------------------------------------------------------------------


async def test_200_concurrent_requests_admit_exactly_the_limit(store: Store) -> None:
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
    rows = await query(store, "SELECT COUNT(*), SUM(charged_images) FROM jobs")
    assert rows == [(10, 10)]


async def test_two_stores_on_one_database_never_over_admit(
    open_store: OpenStore, db_path: Path
) -> None:
    # Opening a fresh database from two connections at once migrates it once.
    first, second = await asyncio.gather(open_store(db_path), open_store(db_path))
    rule = limits("10/hour")
    attempts = [admit(s, request(), T0, limit=rule) for _ in range(60) for s in (first, second)]

    outcomes = await asyncio.gather(*attempts, return_exceptions=True)

    admitted = [o for o in outcomes if isinstance(o, JobRecord)]
    unexpected = [o for o in outcomes if isinstance(o, BaseException)]
    unexpected = [o for o in unexpected if not isinstance(o, LimitExceeded)]
    assert unexpected == []
    assert len(admitted) == 10
    assert await query(first, "SELECT COUNT(*) FROM jobs") == [(10,)]


_CHILD = """
import asyncio, sys
from pathlib import Path
from bot.config import parse_rules
from bot.errors import LimitExceeded
from bot.models import ImageRequest, Requester
from bot.store import Store

async def main() -> None:
    url = sys.argv[3] if len(sys.argv) > 3 else None
    store = await Store.open(Path(sys.argv[1]), database_url=url)
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


async def test_another_process_on_the_same_database_never_over_admits(
    store: Store, db_path: Path, database_url: str | None
) -> None:
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        _CHILD,
        str(db_path),
        str(T0),
        *([] if database_url is None else [database_url]),
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
    assert await query(store, "SELECT COUNT(*) FROM jobs") == [(10,)]


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


async def test_cancelled_admissions_leave_the_store_usable(store: Store) -> None:
    rule = limits("10/hour")
    tasks = [asyncio.create_task(admit(store, request(), T0, limit=rule)) for _ in range(40)]
    for _ in range(5):
        await asyncio.sleep(0)
    for task in tasks[::2]:
        task.cancel()
    outcomes = await asyncio.gather(*tasks, return_exceptions=True)

    admitted = [o for o in outcomes if isinstance(o, JobRecord)]
    [(rows,)] = await query(store, "SELECT COUNT(*) FROM jobs")
    assert isinstance(rows, int)
    assert len(admitted) <= rows <= 10
    later = await admit(store, request("2"), T0, limit=rule)
    assert await store.get_job(later.id) is not None
