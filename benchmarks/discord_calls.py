"""Discord REST calls per job for a burst of /imagine in one channel.

Run: ``python benchmarks/discord_calls.py [--jobs 100] [--latency 2]`` (repository root, project
virtualenv). The real discord.py talks to the fake Discord (which keeps Discord's per-route
buckets and answers 429 when one is exceeded) and the fake OpenAI images API, both on 127.0.0.1.
Prints ``name: value`` lines: calls per job by kind, how many 429s Discord had to send, and how
long the burst took.

Target: about 3 calls per job (acknowledge, a few progress edits shared by the channel, the
result), whatever the burst size; no 429s.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from discord.gateway import DiscordWebSocket
from discord.http import Route

from adapters.discord.bot import ImagineDiscordBot
from bot.app import build
from tests.fakes.app_fixtures import fast_provider, test_settings
from tests.fakes.discord_server import Call, FakeDiscord
from tests.fakes.openai_server import FakeOpenAI


def kind_of(call: Call) -> str:
    """What a request was for, as the operator would count it."""
    if call.path.endswith("/callback"):
        return "acknowledge"
    if call.method == "PATCH" and (call.json or {}).get("embeds"):
        return "result"
    if call.method == "PATCH":
        return "progress edit"
    return f"other {call.method}"


async def burst(jobs: int, latency: float, partials: int, concurrency: int) -> None:
    discord_fake, openai_fake = FakeDiscord(), FakeOpenAI()
    openai_fake.latency = latency
    await discord_fake.start()
    await openai_fake.start()
    saved = (Route.BASE, DiscordWebSocket.DEFAULT_GATEWAY)
    with tempfile.TemporaryDirectory() as tmp:
        settings = test_settings(
            openai_fake,
            Path(tmp),
            discord_token=discord_fake.token,
            discord_api_base_url=discord_fake.api_url,
            discord_gateway_url=discord_fake.gateway_url,
            imagine_partial_images=partials,
            imagine_progress_interval=1.0,
            imagine_max_concurrency=concurrency,
            imagine_user_limit=f"{jobs * 2}/day",
            imagine_user_queue=jobs,  # a few users send the whole burst
        )
        app = await build(settings, provider=fast_provider(settings))
        bot = ImagineDiscordBot(app, guild_ready_timeout=0.05)
        try:
            await bot.start_bot(timeout=10)
            await discord_fake.wait_connected()
            await bot.wait_recovered()
            first_call = len(discord_fake.calls)
            began = time.perf_counter()
            alice = discord_fake.alice
            interactions = await asyncio.gather(
                *(discord_fake.slash(alice, prompt=f"picture {i}") for i in range(jobs))
            )

            def all_shown() -> bool:
                shown = (discord_fake.messages.get(it.original_id or "") for it in interactions)
                return all(m is not None and m["embeds"] for m in shown)

            await discord_fake.wait_until(all_shown, timeout=900)
            took = time.perf_counter() - began
        finally:
            await bot.close()
            await app.aclose()
            Route.BASE, DiscordWebSocket.DEFAULT_GATEWAY = saved
            await discord_fake.close()
            await openai_fake.close()
    calls = discord_fake.calls[first_call:]
    kinds = Counter(kind_of(c) for c in calls)
    print(f"jobs in one channel: {jobs}")
    print(f"provider latency s: {latency}")
    print(f"REST calls per job: {len(calls) / jobs:.2f}")
    for kind, count in sorted(kinds.items()):
        print(f"  {kind} per job: {count / jobs:.2f}")
    print(f"429 answers: {sum(1 for c in calls if c.status == 429)}")
    print(f"burst took s: {took:.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=100)
    parser.add_argument("--latency", type=float, default=2.0, help="seconds per image")
    parser.add_argument("--partials", type=int, default=2, help="previews per image")
    parser.add_argument("--concurrency", type=int, default=4)
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    asyncio.run(burst(args.jobs, args.latency, args.partials, args.concurrency))


if __name__ == "__main__":
    main()
