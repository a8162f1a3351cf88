"""The service refuses what can never fit before admitting it, with what would fit instead."""

from __future__ import annotations

import pytest

from bot.commands import Overrides
from bot.errors import OverBudget, TooManyImages
from bot.models import ImageRequest, Requester
from tests.fakes.app_fixtures import AppFactory
from tests.fakes.openai_server import FakeOpenAI

ALICE = Requester(platform="discord", user_id="111", team_id="g1", channel_id="c1")


async def test_an_auto_request_above_the_whole_budget_is_offered_what_fits(
    make_app: AppFactory, openai_fake: FakeOpenAI
) -> None:
    app = await make_app(imagine_user_budget="0.20/day")
    options = app.service.options(Overrides(quality="auto", size="auto"))
    request = ImageRequest(ALICE, "a red fox", options)
    with pytest.raises(OverBudget) as refused:
        await app.service.run(request)
    assert refused.value.user_message == (
        "This request would cost up to $0.22 (auto quality is reserved at the high-quality "
        "price, auto size at the priciest size), more than your whole budget of $0.20 per day, "
        "so it can never fit. Ask for quality medium (up to $0.06) or size 1536x1024 "
        "(up to $0.17) instead."
    )
    assert openai_fake.requests == []
    assert all(row.images_today == 0 for row in await app.store.usage_summary(ALICE.key))
    # What it offered does fit.
    medium = app.service.options(Overrides(quality="medium"))
    await app.service.run(ImageRequest(ALICE, "a red fox", medium))


async def test_more_images_than_the_limit_allows_is_refused_before_admission(
    make_app: AppFactory, openai_fake: FakeOpenAI
) -> None:
    app = await make_app(imagine_user_limit="3/hour")
    with pytest.raises(TooManyImages) as refused:
        await app.service.run(ImageRequest(ALICE, "a red fox", app.service.options(Overrides(n=4))))
    assert refused.value.user_message == (
        "You asked for 4 images, but your limit allows at most 3 images per hour, "
        "so this can never fit; ask for 3 or fewer."
    )
    assert openai_fake.requests == []


async def test_admins_are_not_held_to_whole_limits_or_budgets(make_app: AppFactory) -> None:
    app = await make_app(
        imagine_user_limit="1/hour",
        imagine_user_budget="0.01/day",
        imagine_admin_users=["discord:111"],
    )
    two = app.service.options(Overrides(n=2))
    result = await app.service.run(ImageRequest(ALICE, "a red fox", two))
    assert len(result.images) == 2
