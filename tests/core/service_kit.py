"""What the service tests share: a progress recorder and a provider whose calls a test holds."""

from __future__ import annotations

import asyncio

from bot.models import ImageRequest, PartialCallback, ProgressEvent, ProviderResult
from bot.provider import ImageProvider


class Recorder:
    """A progress callback that keeps what it heard."""

    def __init__(self) -> None:
        self.events: list[ProgressEvent] = []
        self._changed = asyncio.Event()

    async def __call__(self, event: ProgressEvent) -> None:
        self.events.append(event)
        self._changed.set()

    async def heard(self, kind: type[ProgressEvent]) -> ProgressEvent:
        """Wait (up to 10 s) for the first event of ``kind``."""
        while True:
            found = [event for event in self.events if isinstance(event, kind)]
            if found:
                return found[0]
            self._changed.clear()
            await asyncio.wait_for(self._changed.wait(), timeout=10)

    def kinds(self) -> list[str]:
        """The names of the events heard, in order."""
        return [type(event).__name__ for event in self.events]


class Stepped:
    """The real provider, each call held until the test lets that one call through."""

    def __init__(self, inner: ImageProvider) -> None:
        self.inner = inner
        self.gates: list[asyncio.Event] = []
        self.prompts: list[str] = []
        self._changed = asyncio.Event()

    async def create_images(
        self, request: ImageRequest, *, on_partial: PartialCallback | None = None
    ) -> ProviderResult:
        gate = asyncio.Event()
        self.gates.append(gate)
        self.prompts.append(request.prompt)
        self._changed.set()
        await gate.wait()
        return await self.inner.create_images(request, on_partial=on_partial)

    async def calls(self, count: int) -> None:
        while len(self.gates) < count:
            self._changed.clear()
            await asyncio.wait_for(self._changed.wait(), timeout=10)

    async def aclose(self) -> None:
        await self.inner.aclose()
