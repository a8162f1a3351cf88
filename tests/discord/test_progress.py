"""What a Discord user reads while a job runs: the progress message, edit after edit."""

from __future__ import annotations

import asyncio
import re

from bot.app import App
from bot.models import ImageRequest, PartialCallback, ProviderResult
from tests.fakes.discord_server import BotFactory, FakeDiscord

GENERATING = re.compile(
    r"> a slow sunrise\n🎨 Working since <t:(\d+):T> \(<t:\1:R>\)(?:, preview (\d))?"
)


class OnePreviewAtATime:
    """The real provider, paused after each preview until the test lets the next one through."""

    def __init__(self, app: App) -> None:
        self.inner = app.service.provider
        self.next = asyncio.Semaphore(0)
        app.service.provider = self

    async def create_images(
        self, request: ImageRequest, *, on_partial: PartialCallback | None = None
    ) -> ProviderResult:
        async def paused(index: int, data: bytes, output_format: str) -> None:
            if on_partial is not None:
                await on_partial(index, data, output_format)
            await self.next.acquire()

        return await self.inner.create_images(request, on_partial=paused)

    async def aclose(self) -> None:
        await self.inner.aclose()


async def test_the_generating_line_relies_on_discords_ticking_timestamp(
    discord_fake: FakeDiscord, discord_bot: BotFactory
) -> None:
    app, _bot = await discord_bot(imagine_partial_images=3)
    provider = OnePreviewAtATime(app)
    it = await discord_fake.slash(discord_fake.alice, prompt="a slow sunrise")

    for preview in ("preview 1", "preview 2", "preview 3"):
        await discord_fake.wait_until(
            lambda p=preview: [e for e in discord_fake.webhook_edits(it) if p in str(e)]
        )
        provider.next.release()
    message = await discord_fake.result_of(it)

    shown = [str(e["content"]) for e in discord_fake.webhook_edits(it) if e.get("content")]
    generating = [GENERATING.fullmatch(text) for text in shown if "Working since" in text]
    assert len(generating) >= 3, shown  # several edits while it was being made
    assert all(generating), shown  # no counter of seconds that would freeze between edits
    # Each edit names the same start; Discord renders it as "started 12 seconds ago" and ticks.
    assert len({m[1] for m in generating if m}) == 1
    job = await app.store.job_for_message("discord", message["id"])
    assert job is not None and job.started_at is not None
    assert abs(int(generating[0][1]) - job.started_at) <= 1  # type: ignore[index]
