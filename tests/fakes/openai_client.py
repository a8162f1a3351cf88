"""Helpers and fixtures for driving OpenAIImages against the fake OpenAI server."""

from __future__ import annotations

import contextlib
import io
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from PIL import Image

from bot.models import ImageOptions, ImageRequest, Requester, SourceImage
from bot.provider import OpenAIImages
from tests.fakes.openai_server import FakeOpenAI

__all__ = [
    "ALICE",
    "Factory",
    "Partials",
    "Sleeps",
    "make_provider",
    "opened",
    "png",
    "provider",
    "request",
    "sleeps",
    "source",
]

ALICE = Requester("discord", "1234", "guild", "chan", "Alice")
Factory = Callable[..., OpenAIImages]


def png(size: tuple[int, int], mode: str = "RGB") -> bytes:
    """A plain black PNG."""
    buf = io.BytesIO()
    Image.new(mode, size, 0).save(buf, "PNG")
    return buf.getvalue()


def source(name: str, size: tuple[int, int] = (512, 384), mode: str = "RGB") -> SourceImage:
    """An API-ready source image."""
    return SourceImage(png(size, mode), name, "image/png", *size)


def request(prompt: str = "a lighthouse in fog", **options: Any) -> ImageRequest:
    """A generation request from ALICE with these options."""
    return ImageRequest(ALICE, prompt, ImageOptions(**options))


def opened(data: bytes) -> Image.Image:
    """The decoded image."""
    img = Image.open(io.BytesIO(data))
    img.load()
    return img


class Sleeps:
    """Records the waits the provider asks for, without waiting."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


@pytest.fixture
def sleeps() -> Sleeps:
    """The sleep every provider from ``make_provider`` uses."""
    return Sleeps()


@pytest.fixture
async def make_provider(openai_fake: FakeOpenAI, sleeps: Sleeps) -> AsyncIterator[Factory]:
    """Providers pointed at the fake, recording their waits; all closed at the end."""
    async with contextlib.AsyncExitStack() as made:

        def factory(**overrides: Any) -> OpenAIImages:
            values: dict[str, Any] = {
                "api_key": openai_fake.api_key,
                "base_url": openai_fake.base_url,
                "timeout": 10.0,
                "sleep": sleeps,
            }
            provider = OpenAIImages(**(values | overrides))
            made.push_async_callback(provider.aclose)
            return provider

        yield factory


@pytest.fixture
def provider(make_provider: Factory) -> OpenAIImages:
    """One provider with the default settings."""
    return make_provider()


class Partials:
    """An on_partial callback that keeps what it got."""

    def __init__(self) -> None:
        self.got: list[tuple[int, bytes, str]] = []

    async def __call__(self, index: int, data: bytes, output_format: str) -> None:
        self.got.append((index, data, output_format))
