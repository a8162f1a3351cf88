"""Dollar cost of a job: settled from the API's ``usage``, estimated only to reserve budget."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from bot.models import ImageOptions, Usage


@dataclass(frozen=True)
class Price:
    """US dollars per million tokens."""

    text_in: float
    text_in_cached: float
    image_in: float
    image_in_cached: float
    image_out: float


PRICES: Mapping[str, Price] = MappingProxyType(
    {
        "gpt-image-2": Price(5.0, 1.25, 8.0, 2.0, 30.0),
        "gpt-image-1-mini": Price(2.0, 0.20, 2.50, 0.25, 8.0),
        "gpt-image-1": Price(5.0, 1.25, 10.0, 2.50, 40.0),
    }
)

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
_CACHED_SHARE = 0.25  # what a configured model's cached input costs, as OpenAI bills its own

PRICES_EXAMPLE = "my-model=5,8,30"
_PRICES_FORMAT = (
    "write model=text_in,image_in,image_out in dollars per million tokens, several separated "
    f"by ';', like IMAGINE_PRICES={PRICES_EXAMPLE}"
)
# Printable ASCII without spaces, as IMAGINE_MODEL accepts.
_MODEL_NAME = re.compile(r"^[\x21-\x7e]+$")


def model_name(text: str) -> str:
    """A model name as IMAGINE_MODEL reads it: OpenAI's own names in lower case."""
    text = text.strip()
    return text.lower() if text.lower().startswith("gpt-image") else text


def parse_prices(text: str | None) -> dict[str, Price]:
    """Parse ``'my-model=5,8,30; other=1,2,3'`` (dollars per million tokens) into price rows."""
    rows: dict[str, Price] = {}
    for entry in (text or "").split(";"):
        if not entry.strip():
            continue  # a trailing or doubled ';'
        name_text, equals, numbers_text = entry.partition("=")
        name = model_name(name_text)
        if not equals or not _MODEL_NAME.match(name):
            raise ValueError(f"can't read {entry.strip()!r}; {_PRICES_FORMAT}")
        parts = [part.strip().removeprefix("$") for part in numbers_text.split(",")]
        try:
            numbers = [float(part) for part in parts]
        except ValueError:
            numbers = []
        if len(numbers) != 3 or not all(math.isfinite(number) for number in numbers):
            raise ValueError(
                f"can't read the prices of {name!r} ({numbers_text.strip()!r}); give three "
                "numbers, text_in,image_in,image_out in dollars per million tokens, like "
                f"IMAGINE_PRICES={PRICES_EXAMPLE}"
            )
        if min(numbers) < 0:
            raise ValueError(
                f"{name!r} has a price below zero; write it like IMAGINE_PRICES={PRICES_EXAMPLE}"
            )
        if name in rows:
            raise ValueError(
                f"{name!r} is priced twice; keep one entry, like IMAGINE_PRICES={PRICES_EXAMPLE}"
            )
        text_in, image_in, image_out = numbers
        rows[name] = Price(
            text_in, text_in * _CACHED_SHARE, image_in, image_in * _CACHED_SHARE, image_out
        )
    return rows


class Prices:
    """The price rows costs are counted with: the built-in ones and those of IMAGINE_PRICES."""

    def __init__(self, configured: Mapping[str, Price] | None = None) -> None:
        # A configured row replaces a built-in one of the same name.
        self._rows = {**PRICES, **(configured or {})}
        # The longest name first, so "gpt-image-1-mini" is not read as a gpt-image-1 snapshot.
        self._names = sorted(self._rows, key=len, reverse=True)

    @classmethod
    def parse(cls, text: str | None) -> Prices:
        """The built-in rows plus those written in IMAGINE_PRICES' syntax."""
        return cls(parse_prices(text))

    def find(self, model: str) -> Price | None:
        """The row of a model or of the model a snapshot (``name-2026-01-01``) belongs to."""
        for name in self._names:
            if model == name or model.startswith(name + "-"):
                return self._rows[name]
        return None

    def is_priced(self, model: str) -> bool:
        """True when the model or the model its snapshot belongs to has a row."""
        return self.find(model) is not None

    def price_for(self, model: str) -> Price:
        """The model's row (an unknown model bills as gpt-image-2)."""
        return self.find(model) or PRICES["gpt-image-2"]


# The costs of every job in the process are counted with one table, installed at start-up
# (by load_settings and build) before any job runs; the service and the fitting of offers look
# prices up by model name, so the table is not passed along with each request.
_active = Prices()


def use_prices(prices: Prices) -> None:
    """Count every cost from now on with ``prices``."""
    global _active
    _active = prices


def active_prices() -> Prices:
    """The table costs are counted with."""
    return _active


def unpriced_problem(model: str, prices: Prices) -> str | None:
    """Why ``model`` can't be counted (the fix included), or None when it has a price."""
    if prices.is_priced(model):
        return None
    return (
        f"no price is known for {model!r}; add it to IMAGINE_PRICES as "
        f"{model}=text_in,image_in,image_out (dollars per million tokens)"
    )


def is_priced(model: str) -> bool:
    """True when the model (or the model a snapshot belongs to) has a price row."""
    return _active.is_priced(model)


def price_for(model: str) -> Price:
    """The price row for a model or one of its snapshots (unknown models bill as gpt-image-2)."""
    return _active.price_for(model)


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


def _counts_like_gpt_image_1(model: str) -> bool:
    # gpt-image-1 and -mini (and their snapshots) publish a table; any other model, whatever its
    # price, is reserved with gpt-image-2's formula.
    return model == "gpt-image-1" or model.startswith("gpt-image-1-")


def output_tokens_per_image(model: str, size: str, quality: str) -> int:
    """Estimated output tokens for one image ("auto" reserves the priciest outcome)."""
    quality = reserved_quality(quality)
    if "x" not in size:
        # "auto" may pick any standard size; for gpt-image-2 the square is the priciest.
        return max(output_tokens_per_image(model, s, quality) for s in STANDARD_SIZES)
    width_text, height_text = size.split("x", 1)
    width, height = int(width_text), int(height_text)
    if not _counts_like_gpt_image_1(model):
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
