"""SQLite and PostgreSQL side by side: admissions per second, cost per job, 200 at once.

Run: ``.venv/bin/python benchmarks/engines_bench.py [--jobs 5000] [--url postgresql://...]``
(default URL: the local server, ``postgresql://root@127.0.0.1:5432/test``; each run uses a
schema of its own and drops it.)

(a) admissions per second with every rule active (a user in two tiers, a channel, a server,
    the total; day and month windows), 1 and 50 callers, on a fresh database and on one
    holding a month of 20,000 jobs; for PostgreSQL also with the admission function's
    writers' lock (one advisory lock) swapped for row locks on the checked scopes, once with
    every rule and once with only per-user rules (where row locks let users run side by side).
(b) the store's work per job beyond admission: admit, mark running, the shared slot lease
    (PostgreSQL), save one image and settle, link the message, find the job by its message,
    claim a de-duplication key, in milliseconds per job.
(c) 200 requests at once split between two stores (two instances) on one database, with
    shared budgets: what was admitted and spent; overspend must be 0.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import random
import secrets
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

import asyncpg

sys.path.insert(0, str(Path(__file__).parent))

import spend_bench as sb

from bot.errors import BudgetExceeded, LimitExceeded
from bot.job_rows import INSERT_JOB, job_row
from bot.models import (
    GeneratedImage,
    ImageOptions,
    ImageRequest,
    ProviderResult,
    Requester,
    Usage,
)
from bot.policy import Defaults, Policy
from bot.store import Store, new_job_id

SERVER = "postgresql://root@127.0.0.1:5432/test"
NOW = sb.NOW


@asynccontextmanager
async def database(engine: str, server: str) -> AsyncIterator[tuple[Path, str | None]]:
    """A temporary data folder, and for PostgreSQL the URL of a fresh schema of its own."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "imagine.sqlite3"
        if engine == "sqlite":
            yield path, None
            return
        schema = f"bench_{secrets.token_hex(4)}"
        conn = await asyncpg.connect(server)
        try:
            await conn.execute(f'CREATE SCHEMA "{schema}"')
            sep = "&" if "?" in server else "?"
            yield path, f"{server}{sep}search_path={schema}"
        finally:
            await conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
            await conn.close()


# Row locks instead of the advisory lock, for (a)'s comparison only: one row per scope key,
# locked in key order by every admission that checks that scope.
_ROW_LOCKS = """
CREATE TABLE scope_locks (key TEXT PRIMARY KEY);
CREATE FUNCTION imagine_lock_scopes(keys TEXT[]) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO scope_locks SELECT DISTINCT k FROM unnest(keys) AS k ON CONFLICT DO NOTHING;
    PERFORM 1 FROM scope_locks WHERE key = ANY(keys) ORDER BY key FOR UPDATE;
END
$$;
"""


async def use_row_locks(url: str) -> None:
    """Rewrite imagine_admit so it locks the checked scopes' rows, not the writers' lock."""
    conn = await asyncpg.connect(url)
    try:
        source = await conn.fetchval(
            "SELECT pg_get_functiondef(oid) FROM pg_proc WHERE proname = 'imagine_admit' "
            "AND pronamespace = current_schema()::regnamespace"
        )
        start = source.index("PERFORM pg_advisory_xact_lock(")
        end = source.index(";", start) + 1
        await conn.execute(_ROW_LOCKS)
        await conn.execute(source[:start] + "PERFORM imagine_lock_scopes(c_key);" + source[end:])
    finally:
        await conn.close()


def prefill_rows(
    owner: str, jobs: int, requesters: Sequence[Requester]
) -> list[tuple[object, ...]]:
    rng = random.Random(1)
    options = ImageOptions()
    rows = []
    for i in range(jobs):
        created = NOW - 60 - rng.random() * (sb.MONTH - 120)
        request = ImageRequest(requesters[i % len(requesters)], "an old one", options)
        rows.append(job_row(new_job_id(created), request, created, 0.04, owner))
    return rows


async def throughput(
    engine: str,
    server: str,
    jobs: int,
    concurrency: int,
    prefill: int,
    *,
    row_locks: bool = False,
    users_only: bool = False,
) -> float:
    settings = sb._settings()
    requesters = sb._requesters(500)
    async with database(engine, server) as (path, url):
        store = await Store.open(path, database_url=url)
        try:
            if url is not None and row_locks:
                await use_row_locks(url)
            for entry in sb._TIERS:
                await store.set_policy(entry, "bench")
            policy = Policy(Defaults.from_settings(settings), await store.policy_entries())
            if prefill:
                rows = prefill_rows(store.owner.id, prefill, requesters)
                async with store.database.write() as db:
                    await db.executemany(INSERT_JOB, rows)
                if url is not None:
                    # A month of jobs came with a month of autovacuum; one transaction didn't.
                    conn = await asyncpg.connect(url)
                    try:
                        await conn.execute("VACUUM ANALYZE jobs, usage_buckets")
                    finally:
                        await conn.close()
            options = ImageOptions()

            async def worker(start: int, count: int) -> None:
                for i in range(start, start + count):
                    who = requesters[i % len(requesters)]
                    scopes = policy.standing(who).counted
                    if users_only:
                        scopes = [s for s in scopes if s.scope == "user"]
                    await store.admit(
                        ImageRequest(who, "a lighthouse", options),
                        estimated_cost=0.04,
                        scopes=scopes,
                        now=NOW + i * 1e-4,
                    )

            await worker(0, 200)  # warm-up: statement caches, first pages
            per = jobs // concurrency
            started = time.perf_counter()
            await asyncio.gather(*(worker(200 + w * per, per) for w in range(concurrency)))
            elapsed = time.perf_counter() - started
        finally:
            await store.close()
    return per * concurrency / elapsed


async def per_job(engine: str, server: str, jobs: int) -> dict[str, float]:
    """Milliseconds per job of each store step after admission, run one job after another."""
    requester = Requester("slack", "U1", "T1", "C1", "Ann")
    image = GeneratedImage(b"\x89PNG\r\n\x1a\n" + b"x" * 20_000, "png")
    result = ProviderResult((image,), Usage(50, 4000, 4050), request_id="req_1")
    steps: Counter[str] = Counter()
    async with database(engine, server) as (path, url):
        store = await Store.open(path, database_url=url)
        try:
            for i in range(jobs + 20):
                marks = [time.perf_counter()]
                job = await store.admit(
                    ImageRequest(requester, "a lighthouse", ImageOptions()), estimated_cost=0.04
                )
                marks.append(time.perf_counter())
                await store.mark_running(job.id)
                if store.database.shared:
                    await store.take_slot(job.id, 4)
                marks.append(time.perf_counter())
                await store.finish(job.id, result, 0.04)
                if store.database.shared:
                    await store.give_slot(job.id)
                marks.append(time.perf_counter())
                await store.link_message("slack", f"C1:{i}", job.id)
                await store.job_for_message("slack", f"C1:{i}")
                await store.claim_event(f"event-{i}")
                marks.append(time.perf_counter())
                if i >= 20:  # after a warm-up
                    for name, (a, b) in zip(
                        ("admit", "start+slot", "save+settle", "link+find+dedupe"),
                        itertools.pairwise(marks),
                        strict=True,
                    ):
                        steps[name] += (b - a) * 1000
        finally:
            await store.close()
    return {name: total / jobs for name, total in steps.items()}


async def burst(engine: str, server: str) -> tuple[Counter[str], float, float]:
    """sb's 200 requests at once, half through each of two stores on one database."""
    async with database(engine, server) as (path, url):
        first = await Store.open(path, database_url=url)
        second = await Store.open(path, database_url=url)
        try:
            other = ImageRequest(Requester("discord", "9", "g2", "c9"), "a harbour")
            await first.admit(other, estimated_cost=sb._PRIOR, scopes=(), now=NOW - 3600)
            plan = sb._plan()

            async def one(store: Store, who: Requester, cost: float) -> str:
                request = ImageRequest(who, "a lighthouse", ImageOptions())
                try:
                    await store.admit(request, estimated_cost=cost, scopes=sb._scopes(who), now=NOW)
                except (BudgetExceeded, LimitExceeded) as exc:
                    return f"refused:{exc.scope}"
                return "admitted"

            outcomes = await asyncio.gather(
                *(one(first if i % 2 else second, who, cost) for i, (who, cost) in enumerate(plan))
            )
            rows = await first.database.fetch(
                "SELECT COALESCE(SUM(CASE WHEN team_id = 'g1' THEN charged_cost ELSE 0 END), 0), "
                "COALESCE(SUM(charged_cost), 0) FROM jobs"
            )
        finally:
            await second.close()
            await first.close()
    return Counter(outcomes), float(rows[0][0]), float(rows[0][1])


async def image_storage(server: str, count: int, size: int) -> dict[str, tuple[float, float]]:
    """Milliseconds to save and to read back one image of ``size`` bytes: files, large objects."""
    data = random.Random(2).randbytes(size)  # incompressible, like a PNG
    timings: dict[str, tuple[float, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        started = time.perf_counter()
        for i in range(count):
            path = folder / f"{i}.png"
            await asyncio.to_thread(path.write_bytes, data)
        saved = time.perf_counter()
        for i in range(count):
            assert len(await asyncio.to_thread((folder / f"{i}.png").read_bytes)) == size
        read = time.perf_counter()
        timings["files (shared volume)"] = ((saved - started) / count, (read - saved) / count)
    async with database("postgresql", server) as (_, url):
        assert url is not None
        conn = await asyncpg.connect(url)
        try:
            started = time.perf_counter()
            oids = [await conn.fetchval("SELECT lo_from_bytea(0, $1)", data) for _ in range(count)]
            saved = time.perf_counter()
            for oid in oids:
                assert len(await conn.fetchval("SELECT lo_get($1)", oid)) == size
            read = time.perf_counter()
            for oid in oids:
                await conn.execute("SELECT lo_unlink($1)", oid)
        finally:
            await conn.close()
        timings["PostgreSQL large objects"] = ((saved - started) / count, (read - saved) / count)
    return {name: (a * 1000, b * 1000) for name, (a, b) in timings.items()}


async def main(args: argparse.Namespace) -> None:
    began = time.perf_counter()
    engines = ["sqlite", "postgresql"]
    print("(a) admissions per second, every rule active (user via two tiers, channel, server,")
    print("    total; day and month windows)")
    print(f"{'jobs before':>12}{'callers':>9}{'SQLite':>10}{'PostgreSQL':>12}")
    for prefill in (0, args.prefill):
        for callers in (1, 50):
            rates = [await throughput(e, args.url, args.jobs, callers, prefill) for e in engines]
            print(f"{prefill:>12,}{callers:>9}{rates[0]:>10,.0f}{rates[1]:>12,.0f}")
    print()
    print("    PostgreSQL's writers' lock: one advisory lock vs row locks on the checked scopes")
    print(f"{'rules':<22}{'callers':>9}{'advisory':>10}{'row locks':>11}")
    for users_only in (False, True):
        for callers in (1, 50):
            rates = [
                await throughput(
                    "postgresql",
                    args.url,
                    args.jobs,
                    callers,
                    0,
                    row_locks=r,
                    users_only=users_only,
                )
                for r in (False, True)
            ]
            label = "per-user only" if users_only else "every rule"
            print(f"{label:<22}{callers:>9}{rates[0]:>10,.0f}{rates[1]:>11,.0f}")
    print()
    print("(b) the store's work per job (ms), one job after another")
    results = [await per_job(e, args.url, args.per_job) for e in engines]
    print(f"{'step':<22}{'SQLite':>10}{'PostgreSQL':>12}")
    for name in results[0]:
        print(f"{name:<22}{results[0][name]:>10.2f}{results[1][name]:>12.2f}")
    totals = [sum(r.values()) for r in results]
    print(f"{'total':<22}{totals[0]:>10.2f}{totals[1]:>12.2f}")
    print()
    print("(c) 200 requests at once through two stores on one database (shared budgets:")
    print("    team $5/day, total $6/day with $1.50 spent elsewhere)")
    print(
        f"{'engine':<12}{'admitted':>9}{'refused':>9}{'team $':>9}{'total $':>9}{'overspend':>11}"
    )
    for engine in engines:
        outcomes, team, total = await burst(engine, args.url)
        over = max(0.0, team - sb._TEAM.budgets[0].amount, total - sb._TOTAL.budgets[0].amount)
        refused = sum(v for k, v in outcomes.items() if k != "admitted")
        print(
            f"{engine:<12}{outcomes['admitted']:>9}{refused:>9}{team:>9.2f}{total:>9.2f}"
            f"{over:>11.4f}"
        )
    print()
    size = 1_600_000
    print(f"(d) where images live: ms to save / read one {size / 1e6:.1f} MB image")
    for name, (save, read) in (await image_storage(args.url, 30, size)).items():
        print(f"{name:<28}{save:>8.1f}{read:>8.1f}")
    print(f"\ntotal runtime: {time.perf_counter() - began:.1f} s")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=5000, help="admissions per rate")
    parser.add_argument("--prefill", type=int, default=20_000, help="jobs of the month before")
    parser.add_argument("--per-job", type=int, default=300, help="jobs for (b)")
    parser.add_argument("--url", default=SERVER, help="PostgreSQL server (a schema is made)")
    asyncio.run(main(parser.parse_args()))
