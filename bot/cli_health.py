"""``imagine-bot health``: ask the running bot's /healthz (or /readyz), for a container check."""

from __future__ import annotations

import httpx

from bot.config import Settings
from bot.errors import ConfigError

EXIT_UNHEALTHY = 1


async def health(settings: Settings, *, ready: bool, timeout_s: float = 3.0) -> int:
    """0 when the bot on IMAGINE_METRICS_PORT answers 200; 1 (with the reason) otherwise."""
    port = settings.imagine_metrics_port
    if port is None:
        raise ConfigError(
            "IMAGINE_METRICS_PORT",
            "not set; the health check asks the running bot on that port, so set it for both",
        )
    path = "/readyz" if ready else "/healthz"
    url = f"http://127.0.0.1:{port}{path}"
    try:
        async with httpx.AsyncClient(timeout=timeout_s) as client:
            response = await client.get(url)
    except httpx.HTTPError as exc:
        print(f"imagine-bot: no answer from {url} ({type(exc).__name__}); is the bot running?")
        return EXIT_UNHEALTHY
    body = response.text.strip().replace("\n", " ")[:300]
    if response.status_code != 200:
        print(f"imagine-bot: {path} answered {response.status_code}: {body}")
        return EXIT_UNHEALTHY
    print(f"{path}: {body or 'ok'}")
    return 0
