"""What a refused request is told, from the real SQLite ledger: counts, waits and dollars."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.config import parse_rules
from bot.errors import (
    BudgetExceeded,
    LimitExceeded,
    OverBudget,
    TooManyImages,
    count_images,
    format_duration,
)
from bot.models import ImageOptions, ImageRequest, JobRecord, Requester
from bot.store import Store

T0 = 1_750_000_000.0
HOUR = 3600.0


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    opened = await Store.open(tmp_path / "data" / "imagine.sqlite3")
    try:
        yield opened
    finally:
        await opened.close()


async def admit(
    store: Store,
    now: float,
    *,
    n: int = 1,
    limit: str = "",
    budget: str = "",
    cost: float = 0.04,
) -> JobRecord:
    requester = Requester("discord", "1", "guild1", "chan1", "User 1")
    request = ImageRequest(requester, "a lighthouse in fog", ImageOptions(n=n))
    return await store.admit(
        request,
        limits=parse_rules(limit, whole=True),
        budgets=parse_rules(budget, whole=False),
        estimated_cost=cost,
        exempt=False,
        now=now,
    )


async def test_some_images_left_says_how_many_and_when_all_fit(store: Store) -> None:
    await admit(store, T0, n=17, limit="20/hour")
    with pytest.raises(LimitExceeded) as refused:
        await admit(store, T0 + 1, n=4, limit="20/hour")
    assert refused.value.user_message == (
        "You have 3 of your 20 images per hour left and asked for 4. "
        "Ask for 3 or fewer now, or try again in 60 minutes for all 4."
    )


async def test_one_image_left_of_two_is_singular(store: Store) -> None:
    await admit(store, T0, limit="2/hour")
    with pytest.raises(LimitExceeded) as refused:
        await admit(store, T0 + 1, n=2, limit="2/hour")
    assert refused.value.user_message == (
        "You have 1 of your 2 images per hour left and asked for 2. "
        "Ask for 1 image now, or try again in 60 minutes for both."
    )


async def test_a_limit_of_one_image_is_singular(store: Store) -> None:
    await admit(store, T0, limit="1/day")
    with pytest.raises(LimitExceeded) as refused:
        await admit(store, T0 + 1, limit="1/day")
    assert refused.value.user_message == (
        "You've reached your limit of 1 image per day. Try again in 24 hours."
    )


async def test_a_used_up_limit_says_when_all_requested_images_fit(store: Store) -> None:
    await admit(store, T0, n=3, limit="3/hour")
    with pytest.raises(LimitExceeded) as refused:
        await admit(store, T0 + 1, n=2, limit="3/hour")
    assert refused.value.user_message == (
        "You've reached your limit of 3 images per hour. "
        "Try again in 60 minutes, when there is room for both."
    )


async def test_more_images_than_the_whole_limit_is_not_told_to_wait(store: Store) -> None:
    with pytest.raises(TooManyImages) as refused:
        await admit(store, T0, n=4, limit="3/hour")
    assert refused.value.user_message == (
        "You asked for 4 images, but your limit allows at most 3 images per hour, "
        "so this can never fit; ask for 3 or fewer."
    )
    await admit(store, T0 + 1, n=3, limit="3/hour")  # nothing was charged for the refusal


async def test_a_budget_without_room_now_says_spent_cost_and_wait(store: Store) -> None:
    await admit(store, T0, budget="0.25/day", cost=0.21)
    with pytest.raises(BudgetExceeded) as refused:
        await admit(store, T0 + 1, budget="0.25/day", cost=0.211)
    assert refused.value.user_message == (
        "This request would cost up to $0.22, and $0.21 of your budget of $0.25 per day is "
        "spent or held for requests still running. Try again in 24 hours, or ask for "
        "something cheaper."
    )
    assert refused.value.requested_usd == pytest.approx(0.211)


async def test_an_estimate_above_the_whole_budget_is_not_told_to_wait(store: Store) -> None:
    with pytest.raises(OverBudget) as refused:
        await admit(store, T0, budget="1/day", cost=1.5)
    assert refused.value.user_message == (
        "This request would cost up to $1.50, more than your whole budget of $1.00 per day, "
        "so it can never fit. Ask for a lower quality, a smaller size or fewer images."
    )


@pytest.mark.parametrize(
    ("seconds", "said"),
    [
        (1, "1 second"),
        (45, "45 seconds"),
        (3599, "60 minutes"),
        (95 * 60, "1 hour 35 minutes"),
        (121 * 60, "2 hours 1 minute"),
        (2 * 86_400, "2 days"),
    ],
)
def test_waits_are_pluralised(seconds: float, said: str) -> None:
    assert format_duration(seconds) == said


def test_image_counts_are_pluralised() -> None:
    assert [count_images(n) for n in (1, 2)] == ["1 image", "2 images"]
