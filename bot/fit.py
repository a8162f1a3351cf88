"""Requests bigger than a whole limit or budget: refused at once, with what would fit instead.

Waiting cannot help such a request, so it is told what to change rather than when to retry.
Everything here is pure: it needs the request's options and the rules, not the ledger.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import replace

from bot.config import WindowRule
from bot.errors import Alternative, BudgetTooSmall, OverBudget, TooManyImages
from bot.models import ImageOptions
from bot.pricing import QUALITIES, STANDARD_SIZES, estimate_cost, reserved_quality

# Dollar sums are floats: a budget counts as kept when within this of the limit.
COST_EPSILON = 1e-9


def raise_if_never_fits(
    n: int,
    cost: float,
    limits: Sequence[WindowRule],
    budgets: Sequence[WindowRule],
    whose: str = "your",
) -> None:
    """Raise a ``NeverFits`` (without suggestions) if one rule's whole amount is below the ask."""
    _check_limits(n, limits, whose)
    over = [rule for rule in budgets if cost > rule.amount + COST_EPSILON]
    if over:
        rule = min(over, key=lambda r: r.amount)
        raise OverBudget(
            budget_usd=rule.amount, window_label=rule.label, estimate_usd=cost, whose=whose
        )


def check_fits(
    options: ImageOptions,
    source_count: int,
    prompt_chars: int,
    limits: Sequence[WindowRule],
    budgets: Sequence[WindowRule],
    whose: str = "your",
) -> None:
    """Raise a ``NeverFits`` naming what would fit if no wait could ever admit this request."""
    _check_limits(options.n, limits, whose)
    if not budgets:
        return
    rule = min(budgets, key=lambda r: r.amount)
    estimate = estimate_cost(options, source_count, prompt_chars)
    if estimate <= rule.amount + COST_EPSILON:
        return
    alternatives = cheaper_alternatives(options, source_count, prompt_chars, rule.amount)
    if alternatives:
        raise OverBudget(
            budget_usd=rule.amount,
            window_label=rule.label,
            estimate_usd=estimate,
            alternatives=alternatives,
            auto_quality=options.quality not in QUALITIES,
            auto_size=options.size == "auto",
            whose=whose,
        )
    # Nothing this request could become fits; say whether its attachments are the reason.
    plain = replace(options, n=1, quality="low", size=STANDARD_SIZES[0])
    size, cheapest = _cheapest_size(plain, 0, prompt_chars)
    sources = 0
    if cheapest <= rule.amount + COST_EPSILON:
        size, cheapest = _cheapest_size(plain, source_count, prompt_chars)
        sources = source_count
    raise BudgetTooSmall(
        budget_usd=rule.amount,
        window_label=rule.label,
        cheapest_usd=cheapest,
        cheapest_size=size,
        source_count=sources,
        whose=whose,
    )


def cheaper_alternatives(
    options: ImageOptions, source_count: int, prompt_chars: int, budget: float
) -> list[Alternative]:
    """Variants within ``budget``: the closest one per option changed, else the best mix."""
    asked = (reserved_quality(options.quality), options.size, options.n)
    qualities = QUALITIES[: QUALITIES.index(asked[0]) + 1]
    sizes = dict.fromkeys((options.size, *STANDARD_SIZES))
    fitting: list[Alternative] = []
    for quality, size, n in itertools.product(qualities, sizes, range(1, options.n + 1)):
        changed = tuple(
            name
            for name, new, old in zip(
                ("quality", "size", "n"), (quality, size, n), asked, strict=True
            )
            if new != old
        )
        if not changed:
            continue
        # An unchanged "auto" stays auto: it is priced as high anyway.
        kept_quality = options.quality if "quality" not in changed else quality
        variant = replace(options, quality=kept_quality, size=size, n=n)
        cost = estimate_cost(variant, source_count, prompt_chars)
        if cost <= budget + COST_EPSILON:
            fitting.append(Alternative(kept_quality, size, n, cost, changed))
    # The closest variant is the one that keeps the most of what was asked, i.e. costs most.
    single = [
        max(group, key=lambda a: a.cost_usd)
        for name in ("quality", "size", "n")
        if (group := [a for a in fitting if a.changed == (name,)])
    ]
    if not single and fitting:
        single = [max(fitting, key=lambda a: (a.cost_usd, -len(a.changed)))]
    return sorted(single, key=lambda a: a.cost_usd)


def _check_limits(n: int, limits: Sequence[WindowRule], whose: str = "your") -> None:
    over = [rule for rule in limits if n > rule.amount]
    if over:
        rule = min(over, key=lambda r: r.amount)
        raise TooManyImages(
            limit=int(rule.amount), window_label=rule.label, requested=n, whose=whose
        )


def _cheapest_size(
    options: ImageOptions, source_count: int, prompt_chars: int
) -> tuple[str, float]:
    costs = {
        size: estimate_cost(replace(options, size=size), source_count, prompt_chars)
        for size in STANDARD_SIZES
    }
    size = min(costs, key=lambda s: costs[s])
    return size, costs[size]
