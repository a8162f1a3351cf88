"""The usage ledger: sums of a user's charges per window, the guarded insert, and refusals.

Limits count charged images and budgets charged dollars over rolling windows; a job's charge
is reserved at admission and settled (or refunded) when it ends.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import aiosqlite

from bot.config import WindowRule
from bot.errors import BudgetExceeded, LimitExceeded
from bot.fit import COST_EPSILON, raise_if_never_fits
from bot.job_rows import JOB_COLUMNS, JOB_VALUES


@functools.lru_cache(maxsize=32)
def sums_sql(windows: int) -> str:
    """One row: ``images_i`` and ``cost_i`` charged to a user within each of the windows."""
    columns = ", ".join(
        f"COALESCE(SUM(CASE WHEN created_at > ? THEN charged_images END), 0) AS images_{i}, "
        f"COALESCE(SUM(CASE WHEN created_at > ? THEN charged_cost END), 0) AS cost_{i}"
        for i in range(windows)
    )
    return f"SELECT {columns} FROM jobs WHERE user_key = ? AND created_at > ?"


def window_params(windows: Sequence[int], key: str, now: float) -> list[object]:
    """Parameters for ``sums_sql``; ``windows`` are seconds, ascending."""
    params: list[object] = [now - seconds for seconds in windows for _ in (0, 1)]
    return [*params, key, now - windows[-1]]


@functools.lru_cache(maxsize=32)
def _guarded_insert_sql(windows: int, checks: tuple[str, ...]) -> str:
    where = " AND ".join(f"{column} + ? <= ?" for column in checks)
    return (
        f"INSERT INTO jobs ({JOB_COLUMNS}) SELECT {JOB_VALUES} "
        f"FROM ({sums_sql(windows)}) WHERE {where}"
    )


def guarded_insert(
    row: tuple[object, ...],
    n: int,
    cost: float,
    limits: Sequence[WindowRule],
    budgets: Sequence[WindowRule],
    now: float,
) -> tuple[str, list[object]]:
    """An INSERT of a ``job_row`` that adds nothing when it would break any rule."""
    windows = sorted({rule.seconds for rule in (*limits, *budgets)})
    checks = [f"images_{windows.index(rule.seconds)}" for rule in limits]
    checks += [f"cost_{windows.index(rule.seconds)}" for rule in budgets]
    bounds: list[object] = [x for rule in limits for x in (n, rule.amount)]
    bounds += [x for rule in budgets for x in (cost, rule.amount + COST_EPSILON)]
    sql = _guarded_insert_sql(len(windows), tuple(checks))
    key = row[1]
    assert isinstance(key, str)
    return sql, [*row, *window_params(windows, key, now), *bounds]


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


async def check_rules(
    db: aiosqlite.Connection,
    key: str,
    n: int,
    cost: float,
    limits: Sequence[WindowRule],
    budgets: Sequence[WindowRule],
    now: float,
) -> None:
    """Raise the refusal with the longest wait if admitting would break any rule."""
    # A request above a rule's whole amount is refused as such: no wait would admit it.
    raise_if_never_fits(n, cost, limits, budgets)
    windows = sorted({rule.seconds for rule in (*limits, *budgets)})
    oldest = now - windows[-1]
    params = window_params(windows, key, now)
    rows = list(await db.execute_fetchall(sums_sql(len(windows)), params))
    used_images = {s: int(rows[0][2 * i]) for i, s in enumerate(windows)}
    used_cost = {s: float(rows[0][2 * i + 1]) for i, s in enumerate(windows)}
    broken_limits = [r for r in limits if used_images[r.seconds] + n > r.amount]
    broken_budgets = [r for r in budgets if used_cost[r.seconds] + cost > r.amount + COST_EPSILON]
    if not broken_limits and not broken_budgets:
        return
    charges = [
        (float(c[0]), float(c[1]), float(c[2]))
        for c in await db.execute_fetchall(
            "SELECT created_at, charged_images, charged_cost FROM jobs "
            "WHERE user_key = ? AND created_at > ? ORDER BY created_at",
            (key, oldest),
        )
    ]
    refusals: list[LimitExceeded | BudgetExceeded] = []
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
            )
        )
    # The request only fits once every rule allows it, so name the longest wait.
    raise max(refusals, key=lambda refusal: refusal.retry_after)
