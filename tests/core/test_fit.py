"""Requests bigger than a whole limit or budget: told what would fit, never told to wait."""

from __future__ import annotations

import pytest

from bot.config import WindowRule, parse_rules
from bot.errors import BudgetTooSmall, OverBudget, TooManyImages
from bot.fit import check_fits
from bot.models import ImageOptions
from bot.pricing import estimate_cost

PROMPT_CHARS = 20


def limits(text: str) -> tuple[WindowRule, ...]:
    return parse_rules(text, whole=True)


def budgets(text: str) -> tuple[WindowRule, ...]:
    return parse_rules(text, whole=False)


def fits(options: ImageOptions, *, limit: str = "", budget: str = "", sources: int = 0) -> None:
    check_fits(options, sources, PROMPT_CHARS, limits(limit), budgets(budget))


def test_more_images_than_a_limit_allows_says_how_many_to_ask_for() -> None:
    with pytest.raises(TooManyImages) as refused:
        fits(ImageOptions(n=4), limit="3/hour")
    assert refused.value.user_message == (
        "You asked for 4 images, but your limit allows at most 3 images per hour, "
        "so this can never fit; ask for 3 or fewer."
    )
    assert (refused.value.limit, refused.value.requested) == (3, 4)
    assert not hasattr(refused.value, "retry_after")


def test_the_smallest_limit_is_named_and_one_image_is_singular() -> None:
    with pytest.raises(TooManyImages) as refused:
        fits(ImageOptions(n=2), limit="1/minute,10/day")
    assert refused.value.user_message == (
        "You asked for 2 images, but your limit allows at most 1 image per minute, "
        "so this can never fit; ask for 1 image."
    )


def test_auto_quality_above_the_budget_says_why_and_offers_what_fits() -> None:
    options = ImageOptions(quality="auto", size="auto")
    with pytest.raises(OverBudget) as refused:
        fits(options, budget="0.20/day")
    assert refused.value.user_message == (
        "This request would cost up to $0.22 (auto quality is reserved at the high-quality "
        "price, auto size at the priciest size), more than your whole budget of $0.20 per day, "
        "so it can never fit. Ask for quality medium (up to $0.06) or size 1536x1024 "
        "(up to $0.17) instead."
    )
    medium, landscape = refused.value.alternatives
    assert (medium.quality, medium.size, medium.n) == ("medium", "auto", 1)
    assert (landscape.quality, landscape.size) == ("auto", "1536x1024")
    for offer in (medium, landscape):
        assert offer.cost_usd <= 0.20
        changed = ImageOptions(quality=offer.quality, size=offer.size, n=offer.n)
        assert offer.cost_usd == estimate_cost(changed, 0, PROMPT_CHARS)


def test_only_alternatives_that_fit_are_offered_cheapest_first() -> None:
    # Four high squares reserve $0.85; fewer images or a lower quality fit, another size doesn't.
    options = ImageOptions(quality="high", size="1024x1024", n=4)
    with pytest.raises(OverBudget) as refused:
        fits(options, budget="0.50/day")
    assert refused.value.user_message == (
        "This request would cost up to $0.85, more than your whole budget of $0.50 per day, "
        "so it can never fit. Ask for quality medium (up to $0.22) or 2 images (up to $0.43) "
        "instead."
    )
    costs = [offer.cost_usd for offer in refused.value.alternatives]
    assert costs == sorted(costs) and max(costs) <= 0.50


def test_when_no_single_change_fits_the_best_mix_is_offered() -> None:
    # Even four low-quality 2048x2048 images are above three cents; two of them are not.
    options = ImageOptions(quality="high", size="2048x2048", n=4)
    with pytest.raises(OverBudget) as refused:
        fits(options, budget="0.03/day")
    [offer] = refused.value.alternatives
    assert (offer.quality, offer.size, offer.n, offer.changed) == (
        "low",
        "2048x2048",
        2,
        ("quality", "n"),
    )
    assert refused.value.user_message.endswith(
        "Ask for quality low and 2 images (up to $0.03) instead."
    )


def test_a_budget_too_small_for_any_image_says_to_ask_the_operator() -> None:
    with pytest.raises(BudgetTooSmall) as refused:
        fits(ImageOptions(quality="low", size="1024x1024"), budget="0.004/day")
    assert refused.value.user_message == (
        "Your budget of $0.004 per day is too small for any image: even one low-quality "
        "1536x1024 image costs up to $0.01. Please ask the bot's operator to raise it."
    )
    assert "Try again" not in refused.value.user_message


def test_an_edit_too_big_for_the_budget_says_its_attachments_are_why() -> None:
    # A plain low-quality image fits two cents; three source images push the edit above it.
    with pytest.raises(BudgetTooSmall) as refused:
        fits(ImageOptions(quality="high", size="1024x1024"), budget="0.02/day", sources=3)
    assert refused.value.user_message == (
        "Your budget of $0.02 per day is too small for this edit: even one low-quality "
        "1536x1024 image made from 3 attached images costs up to $0.05. Attach fewer images, "
        "or ask the bot's operator to raise the budget."
    )


def test_requests_within_every_whole_rule_pass() -> None:
    fits(ImageOptions(n=3), limit="3/hour", budget="0.70/day")
    fits(ImageOptions(n=4))
