"""The running totals every scope is counted from always equal the sums of the jobs table."""

from __future__ import annotations

import random
import sqlite3
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

import asyncpg
import pytest

from bot import migrations, pg_schema
from bot.config import WINDOW_SECONDS, WindowRule
from bot.db import numbered
from bot.migrations import SCHEMA_VERSION
from bot.policy import Counted, Rules
from bot.store import Store
from tests.core.store_kit import DAY, T0, OpenStore, query

TEAMS = ("g1", "g2", "")
CHANNELS = ("c1", "c2", "c3", "")
WINDOWS = tuple(WindowRule(1.0, seconds, label) for label, seconds in WINDOW_SECONDS.items())


def _scopes() -> list[Counted]:
    rules = Rules(limits=WINDOWS, budgets=WINDOWS)
    scopes = [Counted("total", "", rules)]
    scopes += [Counted("user", f"discord:{u}", rules) for u in range(7)]
    for platform in ("discord", "slack"):
        scopes += [Counted("team", f"{platform}:{t}", rules) for t in TEAMS if t]
        scopes += [Counted("channel", f"{platform}:{c}", rules) for c in CHANNELS if c]
    return scopes


def _filter(counted: Counted) -> tuple[str, list[object]]:
    platform, _, ident = counted.key.partition(":")
    if counted.scope == "team":
        return "platform = ? AND team_id = ?", [platform, ident]
    if counted.scope == "channel":
        return "platform = ? AND channel_id = ?", [platform, ident]
    if counted.scope == "user":
        return "user_key = ?", [counted.key]
    return "1 = 1", []


async def _by_hand(store: Store, counted: Counted, seconds: int, now: float) -> tuple[int, float]:
    where, params = _filter(counted)
    ((images, cost),) = await query(
        store,
        "SELECT COALESCE(SUM(charged_images), 0), COALESCE(SUM(charged_cost), 0) FROM jobs "
        f"WHERE {where} AND created_at > ?",
        [*params, now - seconds],
    )
    return int(str(images)), float(str(cost))


Execute = Callable[[str, Sequence[object]], Awaitable[object]]


async def _write_jobs(execute: Execute, rng: random.Random, count: int, *, offset: int = 0) -> None:
    """Jobs spread over 40 days, some settled lower, some refunded, a few deleted."""
    for i in range(offset, offset + count):
        charged = rng.randint(1, 4)
        await execute(
            "INSERT INTO jobs (id, user_key, platform, user_id, team_id, channel_id, "
            "prompt, options, status, created_at, charged_images, charged_cost) "
            "VALUES (?, ?, ?, ?, ?, ?, 'p', '{}', 'queued', ?, ?, ?)",
            (
                f"job{i}",
                f"discord:{i % 7}",
                rng.choice(("discord", "slack")),
                str(i % 7),
                rng.choice(TEAMS),
                rng.choice(CHANNELS),
                T0 - rng.uniform(0, 40 * DAY) + rng.choice((0.0, 0.5)),
                charged,
                round(rng.uniform(0.01, 0.3), 4),
            ),
        )
    for i in range(offset, offset + count):
        roll = rng.random()
        if roll < 0.3:  # settled at the real cost
            await execute(
                "UPDATE jobs SET status = 'succeeded', charged_cost = charged_cost / 3, "
                "charged_images = 1 WHERE id = ?",
                (f"job{i}",),
            )
        elif roll < 0.5:  # failed: refunded
            await execute(
                "UPDATE jobs SET status = 'failed', charged_images = 0, charged_cost = 0 "
                "WHERE id = ?",
                (f"job{i}",),
            )
        elif roll < 0.55:
            await execute("DELETE FROM jobs WHERE id = ?", (f"job{i}",))


async def _assert_sums_match(store: Store, moments: list[float]) -> None:
    scopes = _scopes()
    for now in moments:
        uses = await store.rule_uses(scopes, now)
        assert len(uses) == len(scopes) * len(WINDOWS) * 2
        for use in uses:
            images, cost = await _by_hand(store, use.counted, use.rule.seconds, now)
            expected = cost if use.dollars else images
            assert use.used == pytest.approx(expected, abs=1e-9), (
                use.counted.scope,
                use.counted.key,
                use.rule.label,
                now,
            )


async def test_every_scope_sums_like_the_jobs_table_at_any_moment(store: Store) -> None:
    rng = random.Random(7)
    async with store.database.write() as db:
        await _write_jobs(db.execute, rng, 600)
    # Moments on and between hour and day boundaries, and ones no job is near.
    moments = [T0, T0 + 0.25, T0 - 3 * DAY + 1800.0, T0 - 7.5 * DAY, T0 + 20 * DAY]
    moments += [T0 - rng.uniform(0, 35 * DAY) for _ in range(6)]
    moments += [float(int(T0 / 3600) * 3600), float(int(T0 / 86400) * 86400) + 1e-3]
    await _assert_sums_match(store, moments)


@pytest.mark.sqlite_only
async def test_a_file_written_before_the_running_totals_is_counted_in_full(
    open_store: OpenStore, tmp_path: Path
) -> None:
    path = tmp_path / "old.sqlite3"
    db = sqlite3.connect(path, isolation_level=None)
    try:
        for statements in migrations.MIGRATIONS[:2]:
            for statement in statements:
                db.execute(statement)
        db.execute("PRAGMA user_version = 2")
    finally:
        db.close()
    rng = random.Random(11)
    await _write_raw(path, rng, 300)

    store = await open_store(path)  # migrates: the totals are filled from the jobs so far
    await _assert_sums_match(store, [T0, T0 - 2 * DAY + 77.0, T0 - 29 * DAY])
    await _write_raw(path, rng, 100, offset=300)  # and kept up to date afterwards
    await _assert_sums_match(store, [T0, T0 - 5 * DAY + 3599.5])


async def _write_raw(path: Path, rng: random.Random, count: int, *, offset: int = 0) -> None:
    """``_write_jobs`` from a connection of its own, as another program would."""
    db = sqlite3.connect(path)

    async def execute(sql: str, params: Sequence[object]) -> object:
        return db.execute(sql, params)

    try:
        with db:
            await _write_jobs(execute, rng, count, offset=offset)
    finally:
        db.close()


async def test_a_postgresql_database_of_schema_6_keeps_exact_totals_after_the_upgrade(
    tmp_path: Path, pg_url: str
) -> None:
    conn = await asyncpg.connect(pg_url)
    try:
        async with conn.transaction():
            for statements in pg_schema.MIGRATIONS[:6]:
                for statement in statements:
                    await conn.execute(statement)
            await conn.execute("CREATE TABLE imagine_schema (version INTEGER NOT NULL)")
            await conn.execute("INSERT INTO imagine_schema (version) VALUES (6)")

        async def execute(sql: str, params: Sequence[object]) -> object:
            return await conn.execute(numbered(sql), *params)

        rng = random.Random(13)
        await _write_jobs(execute, rng, 300)  # counted by schema 6's trigger
    finally:
        await conn.close()

    store = await Store.open(tmp_path / "imagine.sqlite3", database_url=pg_url)
    try:
        assert await query(store, "SELECT version FROM imagine_schema") == [(SCHEMA_VERSION,)]
        assert (
            await query(store, "SELECT 1 FROM pg_proc WHERE proname = 'imagine_bucket_add'") == []
        )
        await _assert_sums_match(store, [T0, T0 - 2 * DAY + 77.0, T0 - 29 * DAY])
        async with store.database.write() as db:  # and by schema 7's from now on
            await _write_jobs(db.execute, rng, 200, offset=300)
        await _assert_sums_match(store, [T0, T0 - 5 * DAY + 3599.5, T0 - 31 * DAY])
    finally:
        await store.close()
