"""The usage ledger: sums of charges per scope and window, the guarded insert, and refusals.

Limits count charged images and budgets charged dollars over rolling windows, each summed over
the jobs of one scope (the requester's, a channel's, a team's, every job); a job's charge is
reserved at admission and settled (or refunded) when it ends.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

from bot.config import WindowRule
from bot.db import Conn
from bot.errors import BudgetExceeded, LimitExceeded
from bot.fit import COST_EPSILON, raise_if_never_fits
from bot.job_rows import JOB_CASTS, JOB_COLUMNS
from bot.migrations import BUCKET_SPANS
from bot.policy import Counted, Counting, split_key, whose

DAY_SPAN, HOUR_SPAN = BUCKET_SPANS
# Which jobs each scope's sums run over; every filter has a covering index (migration 3).
_FILTERS: dict[Counting, str] = {
    "user": "user_key = ?",
    "channel": "platform = ? AND channel_id = ?",
    "team": "platform = ? AND team_id = ?",
    "total": "1 = 1",
}


def filter_params(counted: Counted) -> list[object]:
    """The values of a scope's filter."""
    if counted.scope == "user":
        return [counted.key]
    if counted.scope == "total":
        return []
    return list(split_key(counted.key))


def windows_of(counted: Counted) -> list[int]:
    """The distinct windows (seconds, ascending) a scope's rules are summed over."""
    rules = counted.rules
    return sorted({rule.seconds for rule in (*rules.limits, *rules.budgets)})


def bucket_key(counted: Counted) -> str:
    """The key of a scope's running totals in usage_buckets (see migration 3)."""
    if counted.scope == "total":
        return "*"
    return f"{counted.scope[0]}:{counted.key}"


@functools.lru_cache(maxsize=64)
def sums_sql(windows: int, scope: Counting = "user") -> str:
    """One row: ``images_i`` and ``cost_i`` charged within each window to a scope's jobs.

    Summed from the scope's running totals: whole days, then the hours of the day the window
    starts in, then the jobs of the hour it starts in one by one, so the work stays the same
    however many jobs a month holds.
    """
    parts = " UNION ALL ".join(
        f"SELECT {i} AS w, images, cost FROM usage_buckets "
        f"WHERE scope = ? AND span = {DAY_SPAN} AND bucket > ? "
        f"UNION ALL SELECT {i}, images, cost FROM usage_buckets "
        f"WHERE scope = ? AND span = {HOUR_SPAN} AND bucket > ? AND bucket < ? "
        f"UNION ALL SELECT {i}, charged_images, charged_cost FROM jobs "
        f"WHERE {_FILTERS[scope]} AND created_at > ? AND created_at < ?"
        for i in range(windows)
    )
    columns = ", ".join(
        f"COALESCE(SUM(CASE WHEN w = {i} THEN images END), 0) AS images_{i}, "
        f"COALESCE(SUM(CASE WHEN w = {i} THEN cost END), 0) AS cost_{i}"
        for i in range(windows)
    )
    return f"SELECT {columns} FROM ({parts}) AS charges"


def sums_params(counted: Counted, now: float) -> list[object]:
    """Parameters for ``sums_sql`` of one scope."""
    key, matching = bucket_key(counted), filter_params(counted)
    params: list[object] = []
    for seconds in windows_of(counted):
        start = now - seconds
        first_day = math.floor(start / DAY_SPAN)
        first_hour = math.floor(start / HOUR_SPAN)
        day_end_hour = (first_day + 1) * (DAY_SPAN // HOUR_SPAN)
        params += [key, first_day, key, first_hour, day_end_hour]
        params += [*matching, start, (first_hour + 1) * HOUR_SPAN]
    return params


@functools.lru_cache(maxsize=64)
def _guarded_insert_sql(shape: tuple[tuple[Counting, int, tuple[str, ...]], ...]) -> str:
    sources = ", ".join(
        f"({sums_sql(windows, scope)}) AS s{i}" for i, (scope, windows, _) in enumerate(shape)
    )
    where = " AND ".join(
        f"s{i}.{column} + ? <= ?" for i, (_, _, checks) in enumerate(shape) for column in checks
    )
    return f"INSERT INTO jobs ({JOB_COLUMNS}) SELECT {JOB_CASTS} FROM {sources} WHERE {where}"


def guarded_insert(
    row: tuple[object, ...], n: int, cost: float, scopes: Sequence[Counted], now: float
) -> tuple[str, list[object]]:
    """An INSERT of a ``job_row`` that adds nothing when it would break any scope's rule."""
    shape = []
    sums: list[object] = []
    bounds: list[object] = []
    for counted in scopes:
        windows = windows_of(counted)
        limits, budgets = counted.rules.limits, counted.rules.budgets
        checks = [f"images_{windows.index(rule.seconds)}" for rule in limits]
        checks += [f"cost_{windows.index(rule.seconds)}" for rule in budgets]
        shape.append((counted.scope, len(windows), tuple(checks)))
        sums += sums_params(counted, now)
        bounds += [x for rule in limits for x in (n, rule.amount)]
        bounds += [x for rule in budgets for x in (cost, rule.amount + COST_EPSILON)]
    return _guarded_insert_sql(tuple(shape)), [*row, *sums, *bounds]


# The call of PostgreSQL's ``imagine_admit`` (bot.pg_schema): the job's values, then one array
# element per (scope, window) check.
ADMIT_CALL = "SELECT imagine_admit(" + ", ".join("?" * (len(JOB_COLUMNS.split(",")) + 11)) + ")"


def admit_call(
    row: tuple[object, ...], scopes: Sequence[Counted], now: float
) -> tuple[str, list[object]]:
    """``ADMIT_CALL`` and its parameters for a ``job_row`` under every rule of ``scopes``."""
    columns: list[list[object]] = [[] for _ in range(11)]
    for counted in scopes:
        key, matching = bucket_key(counted), filter_params(counted)
        a, b = [*matching, "", ""][:2]
        rules = counted.rules
        for seconds in windows_of(counted):
            start = now - seconds
            first_day = math.floor(start / DAY_SPAN)
            first_hour = math.floor(start / HOUR_SPAN)
            limits = [r.amount for r in rules.limits if r.seconds == seconds]
            budgets = [r.amount + COST_EPSILON for r in rules.budgets if r.seconds == seconds]
            values: tuple[object, ...] = (
                *(key, counted.scope, str(a), str(b), first_day, first_hour),
                (first_day + 1) * (DAY_SPAN // HOUR_SPAN),
                *(start, float((first_hour + 1) * HOUR_SPAN)),
                float(min(limits)) if limits else None,
                float(min(budgets)) if budgets else None,
            )
            for column, value in zip(columns, values, strict=True):
                column.append(value)
    return ADMIT_CALL, [*row, *columns]


def wait_for_room(
    charges: Sequence[tuple[float, float]],
    used: float,
    requested: float,
    rule: WindowRule,
    now: float,
) -> float:
    """Seconds until enough of ``charges`` (created_at, amount; oldest first) leave the window."""
    excess = used + requested - rule.amount
    for created_at, amount in charges:
        excess -= amount
        if excess <= COST_EPSILON:
            return max(0.0, created_at + rule.seconds - now)
    return float(rule.seconds)


async def scope_sums(
    db: Conn, counted: Counted, now: float
) -> tuple[dict[int, int], dict[int, float]]:
    """Images and dollars charged to a scope within each of its windows (by seconds)."""
    windows = windows_of(counted)
    rows = list(
        await db.execute_fetchall(sums_sql(len(windows), counted.scope), sums_params(counted, now))
    )
    images = {s: int(rows[0][2 * i]) for i, s in enumerate(windows)}
    cost = {s: float(rows[0][2 * i + 1]) for i, s in enumerate(windows)}
    return images, cost


async def scope_charges(
    db: Conn, counted: Counted, since: float
) -> list[tuple[float, float, float]]:
    """(created_at, images, dollars) of a scope's charges since ``since``, oldest first."""
    return [
        (float(c[0]), float(c[1]), float(c[2]))
        for c in await db.execute_fetchall(
            "SELECT created_at, charged_images, charged_cost FROM jobs "
            f"WHERE {_FILTERS[counted.scope]} AND created_at > ? "
            "AND (charged_images > 0 OR charged_cost > 0) ORDER BY created_at",
            [*filter_params(counted), since],
        )
    ]


async def check_rules(
    db: Conn,
    scopes: Sequence[Counted],
    n: int,
    cost: float,
    now: float,
    platform: str = "",
) -> None:
    """Raise the refusal with the longest wait if admitting would break any scope's rule."""
    for counted in scopes:
        # A request above a rule's whole amount is refused as such: no wait would admit it.
        rules, named = counted.rules, whose(counted.scope, platform) or "your"
        raise_if_never_fits(n, cost, rules.limits, rules.budgets, named)
    refusals: list[LimitExceeded | BudgetExceeded] = []
    for counted in scopes:
        owner = whose(counted.scope, platform)
        limits, budgets = counted.rules.limits, counted.rules.budgets
        used_images, used_cost = await scope_sums(db, counted, now)
        broken_limits = [r for r in limits if used_images[r.seconds] + n > r.amount]
        broken_budgets = [
            r for r in budgets if used_cost[r.seconds] + cost > r.amount + COST_EPSILON
        ]
        if not broken_limits and not broken_budgets:
            continue
        charges = await scope_charges(db, counted, now - windows_of(counted)[-1])
        for rule in broken_limits:
            used = used_images[rule.seconds]
            aged = [(t, images) for t, images, _ in charges if t > now - rule.seconds]
            refusals.append(
                LimitExceeded(
                    limit=int(rule.amount),
                    window_label=rule.label,
                    used=used,
                    requested=n,
                    retry_after=wait_for_room(aged, used, n, rule, now),
                    now=now,
                    whose=owner,
                    scope=counted.scope,
                )
            )
        for rule in broken_budgets:
            spent = used_cost[rule.seconds]
            aged = [(t, dollars) for t, _, dollars in charges if t > now - rule.seconds]
            refusals.append(
                BudgetExceeded(
                    budget_usd=rule.amount,
                    window_label=rule.label,
                    spent_usd=spent,
                    requested_usd=cost,
                    retry_after=wait_for_room(aged, spent, cost, rule, now),
                    now=now,
                    whose=owner,
                    scope=counted.scope,
                )
            )
    if refusals:
        # The request only fits once every rule allows it, so name the longest wait.
        raise max(refusals, key=lambda refusal: refusal.retry_after)
