"""``make_app``: a whole core (store, service, real provider) pointed at the fake OpenAI server."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from bot.app import App, build
from bot.config import Settings
from bot.provider import OpenAIImages
from tests.fakes.openai_server import FakeOpenAI

AppFactory = Callable[..., Awaitable[App]]


def test_settings(openai_fake: FakeOpenAI, data_dir: Path, **overrides: object) -> Settings:
    """Settings that never read the developer's own .env or environment secrets."""
    values: dict[str, object] = {
        "openai_api_key": openai_fake.api_key,
        "openai_base_url": openai_fake.base_url,
        "imagine_data_dir": data_dir,
        "imagine_partial_images": 0,
        "imagine_progress_interval": 0.05,
        "openai_timeout": 10.0,
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg, arg-type]


def fast_provider(settings: Settings) -> OpenAIImages:
    """The real provider with retries that back off in milliseconds instead of seconds."""
    return OpenAIImages.from_settings(settings, backoff_scale=0.01)


@pytest.fixture
async def make_app(openai_fake: FakeOpenAI, tmp_path: Path) -> AsyncIterator[AppFactory]:
    """Build apps on one data dir; building again after ``aclose()`` is a restart."""
    data_dir = tmp_path / "data"
    async with contextlib.AsyncExitStack() as made:

        async def factory(**overrides: object) -> App:
            settings = test_settings(openai_fake, data_dir, **overrides)
            app = await build(settings, provider=fast_provider(settings))
            made.push_async_callback(app.aclose)
            return app

        yield factory
