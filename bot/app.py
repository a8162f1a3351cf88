"""The composition root: wires settings, store, provider and service together."""

from __future__ import annotations

from dataclasses import dataclass, field

from bot import metrics
from bot.config import Settings
from bot.errors import ConfigError
from bot.pricing import Prices, unpriced_problem, use_prices
from bot.prompt_help import PromptHelper
from bot.prompt_help import is_enabled as prompt_help_enabled
from bot.provider import ImageProvider, OpenAIImages
from bot.service import ImageService
from bot.store import Store


@dataclass
class App:
    """Everything an adapter or the CLI needs, built once per process."""

    settings: Settings
    store: Store
    provider: ImageProvider
    service: ImageService
    prompt_help: PromptHelper | None = None
    # /readyz: the launcher checks the store; each adapter sets its platform's connection.
    readiness: metrics.Readiness = field(default_factory=metrics.Readiness)
    closed: bool = False

    async def aclose(self) -> None:
        """Close the provider's connections and the database (once)."""
        if self.closed:
            return
        self.closed = True
        try:
            await self.provider.aclose()
            if self.prompt_help is not None:
                await self.prompt_help.aclose()
        finally:
            await self.store.close()


async def build(
    settings: Settings,
    *,
    provider: ImageProvider | None = None,
    prompt_help: PromptHelper | None = None,
) -> App:
    """Open the store and connect the real parts (or the given provider and prompt help)."""
    if provider is None:
        settings.require_openai_key()
    prices = Prices.parse(settings.imagine_prices)
    # Settings refuse an unpriced model already; settings copied with a changed model are not
    # validated again, and budgets would then silently count another model's prices.
    problem = unpriced_problem(settings.imagine_model, prices)
    if problem is not None:
        raise ConfigError("IMAGINE_MODEL", problem)
    use_prices(prices)
    store = await Store.open_settings(settings)
    try:
        chosen = provider if provider is not None else OpenAIImages.from_settings(settings)
        if prompt_help is None and prompt_help_enabled(settings):
            prompt_help = PromptHelper.from_settings(settings)
    except BaseException:
        await store.close()
        raise
    return App(
        settings=settings,
        store=store,
        provider=chosen,
        service=ImageService(settings, store, chosen, prompt_help=prompt_help),
        prompt_help=prompt_help,
    )
