"""Cost accounting: settled from usage, estimated generously for reservations."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.app import build
from bot.config import Settings
from bot.errors import ConfigError
from bot.models import ImageOptions, Usage
from bot.pricing import (
    STANDARD_SIZES,
    cost_from_usage,
    estimate_cost,
    output_tokens_per_image,
    price_for,
)


@pytest.mark.parametrize(("quality", "tokens"), [("low", 196), ("medium", 1756), ("high", 7024)])
def test_gpt_image_2_output_tokens_match_the_published_calculator(
    quality: str, tokens: int
) -> None:
    assert output_tokens_per_image("gpt-image-2", "1024x1024", quality) == tokens


def test_gpt_image_1_uses_the_table() -> None:
    assert output_tokens_per_image("gpt-image-1", "1024x1536", "medium") == 1584
    assert output_tokens_per_image("gpt-image-1-mini", "1536x1024", "high") == 6208


def test_snapshot_names_price_like_their_model() -> None:
    assert price_for("gpt-image-2-2026-04-21") is price_for("gpt-image-2")
    assert price_for("gpt-image-1-mini") is not price_for("gpt-image-1")


def test_cost_from_usage_splits_text_image_and_cached_tokens() -> None:
    usage = Usage(
        input_tokens=1_100,
        output_tokens=1_000,
        total_tokens=2_100,
        input_text_tokens=100,
        input_image_tokens=1_000,
        cached_input_tokens=500,
        cached_image_tokens=500,
    )
    # 100 text * $5 + 500 image * $8 + 500 cached image * $2 + 1000 out * $30, per million.
    assert cost_from_usage("gpt-image-2", usage) == pytest.approx(0.0355)


def test_cost_without_details_bills_input_as_text() -> None:
    assert cost_from_usage("gpt-image-2", Usage(input_tokens=200, output_tokens=196)) == (
        pytest.approx((200 * 5 + 196 * 30) / 1e6)
    )


def test_estimate_reserves_at_least_the_real_cost_of_a_high_square() -> None:
    options = ImageOptions(size="1024x1024", quality="high", n=2)
    real = cost_from_usage("gpt-image-2", Usage(input_tokens=20, output_tokens=2 * 7024))
    assert estimate_cost(options, prompt_chars=60) >= real
    assert estimate_cost(ImageOptions(quality="auto", n=1)) >= estimate_cost(
        ImageOptions(quality="low", n=1)
    )


@pytest.mark.parametrize(
    ("model", "fresh", "cached"),
    [
        # text in + image in + image out; cached text in + cached image in ($ per million)
        ("gpt-image-2", 5 + 8 + 30, 1.25 + 2),
        ("gpt-image-1", 5 + 10 + 40, 1.25 + 2.50),
        ("gpt-image-1-mini", 2 + 2.50 + 8, 0.20 + 0.25),
    ],
)
def test_each_model_bills_at_its_published_prices(model: str, fresh: float, cached: float) -> None:
    million = 1_000_000
    uncached = Usage(
        input_tokens=2 * million,
        output_tokens=million,
        total_tokens=3 * million,
        input_text_tokens=million,
        input_image_tokens=million,
    )
    assert cost_from_usage(model, uncached) == pytest.approx(fresh)
    all_cached = Usage(
        input_tokens=2 * million,
        total_tokens=2 * million,
        input_text_tokens=million,
        input_image_tokens=million,
        cached_input_tokens=2 * million,
        cached_image_tokens=million,
    )
    assert cost_from_usage(model, all_cached) == pytest.approx(cached)


@pytest.mark.parametrize("model", ["gpt-image-2", "gpt-image-1", "gpt-image-1-mini"])
@pytest.mark.parametrize("quality", ["low", "medium", "high", "auto"])
def test_auto_size_reserves_at_least_any_standard_size_it_may_pick(
    model: str, quality: str
) -> None:
    # The bill is settled from real usage, so a reservation below it could overrun a budget.
    reserved = output_tokens_per_image(model, "auto", quality)
    assert all(reserved >= output_tokens_per_image(model, s, quality) for s in STANDARD_SIZES)


@pytest.mark.parametrize(
    ("model", "refused"),
    [("dall-e-3", True), ("gpt-image-1-2025-04-15", False), ("gpt-image-2", False)],
)
async def test_a_model_without_known_prices_is_refused_at_start(
    model: str, refused: bool, tmp_path: Path
) -> None:
    # Budgets and the usage report would otherwise count another model's prices.
    values = {"openai_api_key": "sk-test", "imagine_model": model, "imagine_data_dir": tmp_path}
    if refused:
        with pytest.raises(ConfigError, match=rf"^IMAGINE_MODEL: no price is known for '{model}'"):
            Settings(_env_file=None, **values)  # type: ignore[call-arg, arg-type]
        return
    app = await build(Settings(_env_file=None, **values))  # type: ignore[call-arg, arg-type]
    await app.aclose()
