"""Slack Web API calls per job under a burst of ``/imagine`` in one channel.

Run: ``python benchmarks/slack_calls.py [--jobs 100,1000] [--scale 0.01]`` (from the repository
root, in the project's virtualenv). The real bot (slack-bolt over Socket Mode) talks to the fake
Slack, which enforces Slack's rate tiers with every window shrunk by ``--scale`` (one Slack
minute lasts 0.6 s at 0.01); the fake OpenAI answers at once, in a child process. Default
settings otherwise (2 previews per image, 4 jobs at a time).

Prints, per burst size: calls per job by method, calls per job in total, 429 answers, and
whether every placeholder ended with its result. Goal: at most 6 calls per job, whatever the
burst size.

Results (2 shared cores, --scale 0.01; before: 100 jobs made 1,346 chat.update calls alone and
101 auth.test, and placeholders refused their final edit stayed "starting…"):

  jobs  postMessage  getUploadURL  completeUpload  update  delete  auth.test  per job  429s
     1         1.00          1.00            1.00    1.00    0.00       1      5.00      0
   100         1.04          1.00            1.00    1.00    0.00       1      4.05      4
  1000         1.03          1.01            1.01    1.03    0.01       1      4.09     31

Every placeholder ended with its result. The few 429s (each counted above) are chat.postMessage
calls whose 30 ms per-channel window the event loop's lag overran; they were waited out.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import sys
import tempfile
import time
from collections import Counter
from multiprocessing.connection import Connection
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from adapters.slack.bot import SlackBot
from bot.app import build
from tests.fakes.app_fixtures import fast_provider, test_settings
from tests.fakes.slack_server import APP_TOKEN, BOT_TOKEN, BOT_USER_ID, SIGNING_SECRET, FakeSlack

CHANNEL = "C0GENERAL"


def _serve_openai(conn: Connection) -> None:
    from tests.fakes.openai_server import FakeOpenAI

    async def main() -> None:
        fake = FakeOpenAI()
        await fake.start()
        conn.send((fake.base_url, fake.api_key))
        await asyncio.get_running_loop().run_in_executor(None, conn.recv)
        await fake.close()

    asyncio.run(main())


def _placeholders(fake: FakeSlack) -> list[dict[str, object]]:
    return [
        m
        for m in fake.messages.get(CHANNEL, [])
        if m.get("user") == BOT_USER_ID and "thread_ts" not in m and m.get("subtype") is None
    ]


async def burst(jobs: int, scale: float, openai: SimpleNamespace, data_dir: Path) -> None:
    """One burst of ``jobs`` commands; prints its figures."""
    slack = FakeSlack()
    slack.rate_scale = scale
    await slack.start()
    settings = test_settings(
        openai,  # type: ignore[arg-type]
        data_dir,
        imagine_partial_images=2,
        imagine_progress_interval=1.0,
        imagine_user_queue=max(jobs, 1),  # a few users send the whole burst
        slack_bot_token=BOT_TOKEN,
        slack_app_token=APP_TOKEN,
        slack_signing_secret=SIGNING_SECRET,
        slack_api_url=slack.api_url,
    )
    app = await build(settings, provider=fast_provider(settings))
    bot = SlackBot(app, rate_scale=scale)
    started = time.perf_counter()
    try:
        await bot.start_socket_mode()
        await slack.wait_connected()
        await asyncio.gather(
            *(slack.send_command(slack.command_payload(f"picture {i}")) for i in range(jobs))
        )

        def finished() -> bool:
            shown = _placeholders(slack)
            return len(shown) == jobs and all("done in" in str(m["text"]) for m in shown)

        await slack.wait_until(finished, timeout=max(120.0, jobs * 0.5))
    finally:
        elapsed = time.perf_counter() - started
        await bot.stop()
        await app.aclose()
        await slack.stop()
    calls = [c for c in slack.calls if c.method != "apps.connections.open"]
    by_method = Counter(c.method for c in calls)
    stuck = [m for m in _placeholders(slack) if "done in" not in str(m["text"])]
    print(f"jobs: {jobs}")
    for method, count in sorted(by_method.items(), key=lambda kv: -kv[1]):
        print(f"  {method}: {count} ({count / jobs:.2f} per job)")
    print(f"calls per job: {len(calls) / jobs:.2f} (goal <= 6)")
    print(f"429 answers: {len(slack.rate_limited())}")
    print(f"placeholders not finished: {len(stuck)}")
    print(f"wall time: {elapsed:.1f} s (Slack minute = {60 * scale:.2f} s)")


async def main(sizes: list[int], scale: float) -> None:
    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe()
    server = ctx.Process(target=_serve_openai, args=(child,), daemon=True)
    server.start()
    base_url, api_key = parent.recv()
    openai = SimpleNamespace(base_url=base_url, api_key=api_key)
    try:
        for jobs in sizes:
            with tempfile.TemporaryDirectory() as tmp:
                await burst(jobs, scale, openai, Path(tmp) / "data")
    finally:
        parent.send("stop")
        server.join(10)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", default="100,1000", help="burst sizes, comma-separated")
    parser.add_argument("--scale", type=float, default=0.01, help="Slack's clock speed-up")
    options = parser.parse_args()
    asyncio.run(main([int(n) for n in options.jobs.split(",")], options.scale))
