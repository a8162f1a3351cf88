"""The composition root: wires settings, store, provider and service together."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from bot.config import Settings
from bot.pricing import is_priced
from bot.provider import ImageProvider, OpenAIImages
from bot.service import ImageService
from bot.store import Store

logger = logging.getLogger("bot.app")


@dataclass
class App:
    """Everything an adapter or the CLI needs, built once per process."""

    settings: Settings
    store: Store
    provider: ImageProvider
    service: ImageService
    closed: bool = False

    async def aclose(self) -> None:
        """Close the provider's connections and the database (once)."""
        if self.closed:
            return
        self.closed = True
        try:
            await self.provider.aclose()
        finally:
            await self.store.close()


async def build(settings: Settings, *, provider: ImageProvider | None = None) -> App:
    """Open the store and connect the real parts (or the given provider)."""
    if provider is None:
        settings.require_openai_key()
    if not is_priced(settings.imagine_model):
        # Budgets and the usage report would silently use another model's prices.
        logger.warning(
            "IMAGINE_MODEL=%s has no known prices; costs and budgets are counted at "
            "gpt-image-2's prices",
            settings.imagine_model,
        )
    store = await Store.open(settings.database_path)
    try:
        chosen = provider if provider is not None else OpenAIImages.from_settings(settings)
    except BaseException:
        await store.close()
        raise
    return App(
        settings=settings,
        store=store,
        provider=chosen,
        service=ImageService(settings, store, chosen),
    )
