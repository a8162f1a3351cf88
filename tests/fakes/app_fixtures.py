"""``make_app``: a whole core (store, service, real provider) pointed at the fake OpenAI server."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from bot.app import App, build
from bot.config import Settings
from bot.models import ImageRequest, PartialCallback, ProviderResult
from bot.prompt_help import PromptHelper
from bot.prompt_help import is_enabled as prompt_help_enabled
from bot.provider import ImageProvider, OpenAIImages
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
            helper = None
            if prompt_help_enabled(settings):
                helper = PromptHelper.from_settings(settings, backoff_scale=0.01)
            app = await build(settings, provider=fast_provider(settings), prompt_help=helper)
            made.push_async_callback(app.aclose)
            return app

        yield factory


class ProviderGate:
    """The real provider, held until ``release`` is set (``after_preview``: once a preview is out).

    The fake OpenAI answers at once; this makes "the job is still running" a state a test controls.
    """

    def __init__(self, inner: ImageProvider, *, after_preview: bool = False) -> None:
        self.inner = inner
        self.after_preview = after_preview
        self.release = asyncio.Event()

    @classmethod
    def hold(cls, app: App, *, after_preview: bool = False) -> ProviderGate:
        """Put a gate in front of the app's provider; returns it."""
        gate = cls(app.service.provider, after_preview=after_preview)
        app.service.provider = gate
        return gate

    async def create_images(
        self, request: ImageRequest, *, on_partial: PartialCallback | None = None
    ) -> ProviderResult:
        if not self.after_preview:
            await self.release.wait()
            return await self.inner.create_images(request, on_partial=on_partial)

        async def held(index: int, data: bytes, output_format: str) -> None:
            if on_partial is not None:
                await on_partial(index, data, output_format)
            await self.release.wait()

        return await self.inner.create_images(request, on_partial=held if on_partial else None)

    async def aclose(self) -> None:
        await self.inner.aclose()
