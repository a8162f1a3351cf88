"""Dollar cost of a job: settled from the API's ``usage``, estimated only to reserve budget."""

from __future__ import annotations

import math
from dataclasses import dataclass

from bot.models import ImageOptions, Usage


@dataclass(frozen=True)
class Price:
    """US dollars per million tokens."""

    text_in: float
    text_in_cached: float
    image_in: float
    image_in_cached: float
    image_out: float


PRICES: dict[str, Price] = {
    "gpt-image-2": Price(5.0, 1.25, 8.0, 2.0, 30.0),
    "gpt-image-1-mini": Price(2.0, 0.20, 2.50, 0.25, 8.0),
    "gpt-image-1": Price(5.0, 1.25, 10.0, 2.50, 40.0),
}

# gpt-image-1 / -mini output tokens per image by quality for 1024², 1024x1536, 1536x1024.
_GPT_IMAGE_1_TOKENS = {
    "low": (272, 408, 400),
    "medium": (1056, 1584, 1568),
    "high": (4160, 6240, 6208),
}
_GPT_IMAGE_2_FACTOR = {"low": 16, "medium": 48, "high": 96}
QUALITIES = ("low", "medium", "high")  # cheapest first
STANDARD_SIZES = ("1024x1024", "1536x1024", "1024x1536")
_PARTIAL_IMAGE_TOKENS = 100
_SOURCE_IMAGE_TOKENS = 1_600  # a rough allowance per input image, only for reservations


def _priced_name(model: str) -> str | None:
    for name in sorted(PRICES, key=len, reverse=True):
        if model == name or model.startswith(name + "-"):
            return name
    return None


def is_priced(model: str) -> bool:
    """True when the model (or the model a snapshot belongs to) has a price row."""
    return _priced_name(model) is not None


def price_for(model: str) -> Price:
    """The price row for a model or one of its snapshots (unknown models bill as gpt-image-2)."""
    return PRICES[_priced_name(model) or "gpt-image-2"]


def cost_from_usage(model: str, usage: Usage) -> float:
    """What a call cost, from the ``usage`` the API returned."""
    price = price_for(model)
    image_in = usage.input_image_tokens
    text_in = usage.input_text_tokens
    if image_in + text_in == 0:
        text_in = usage.input_tokens
    image_cached = min(usage.cached_image_tokens, image_in)
    text_cached = min(max(0, usage.cached_input_tokens - image_cached), text_in)
    dollars = (
        (text_in - text_cached) * price.text_in
        + text_cached * price.text_in_cached
        + (image_in - image_cached) * price.image_in
        + image_cached * price.image_in_cached
        + usage.output_tokens * price.image_out
    )
    return round(dollars / 1_000_000, 6)


def reserved_quality(quality: str) -> str:
    """The quality a reservation prices: "auto" may turn out high, so it is priced as high."""
    return quality if quality in QUALITIES else "high"


def output_tokens_per_image(model: str, size: str, quality: str) -> int:
    """Estimated output tokens for one image ("auto" reserves the priciest outcome)."""
    quality = reserved_quality(quality)
    if "x" not in size:
        # "auto" may pick any standard size; for gpt-image-2 the square is the priciest.
        return max(output_tokens_per_image(model, s, quality) for s in STANDARD_SIZES)
    width_text, height_text = size.split("x", 1)
    width, height = int(width_text), int(height_text)
    if price_for(model) is PRICES["gpt-image-2"]:
        factor = _GPT_IMAGE_2_FACTOR[quality]
        short, long = sorted((width, height))
        steps = (2 * factor * short + long) // (2 * long)
        return math.ceil(factor * steps * (2_000_000 + width * height) / 4_000_000)
    square, portrait, landscape = _GPT_IMAGE_1_TOKENS[quality]
    if width == height:
        return square
    return portrait if height > width else landscape


def estimate_cost(options: ImageOptions, source_count: int = 0, prompt_chars: int = 0) -> float:
    """A generous guess of a call's cost, used to reserve budget before the call."""
    price = price_for(options.model)
    per_image = output_tokens_per_image(options.model, options.size, options.quality)
    out_tokens = options.n * (per_image + options.partial_images * _PARTIAL_IMAGE_TOKENS)
    text_tokens = prompt_chars // 3 + 50
    dollars = (
        out_tokens * price.image_out
        + text_tokens * price.text_in
        + source_count * _SOURCE_IMAGE_TOKENS * price.image_in
    )
    return round(dollars / 1_000_000, 6)
