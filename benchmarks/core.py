"""Core benchmark: the service against the fake OpenAI server with a set provider latency.

Run: ``python benchmarks/core.py`` (from the repository root, in the project's virtualenv).
Prints ``name: value`` lines. The fake server runs in a child process so its image encoding
does not share the bot's event loop.

Targets: overhead p99 <= 20 ms, loop lag p99 <= 10 ms, makespan <= 1.05 x ideal,
>= 2,000 admissions/s with none over the limit.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import math
import multiprocessing
import statistics
import sys
import tempfile
import time
from collections import Counter
from multiprocessing.connection import Connection
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from PIL import Image

from bot import images
from bot.app import App, build
from bot.commands import Overrides
from bot.config import Settings, WindowRule
from bot.errors import LimitExceeded
from bot.models import (
    ImageRequest,
    PartialCallback,
    PartialImage,
    ProgressEvent,
    ProviderResult,
    Requester,
    SourceImage,
)
from bot.provider import OpenAIImages


def _serve_fake(latency: float, conn: Connection) -> None:
    from tests.fakes.openai_server import FakeOpenAI

    async def main() -> None:
        fake = FakeOpenAI()
        fake.latency = latency
        await fake.start()
        conn.send(fake.base_url)
        await asyncio.get_running_loop().run_in_executor(None, conn.recv)
        await fake.close()

    asyncio.run(main())


class TimedProvider:
    """Wraps the real provider and records how long each call spent with the API."""

    def __init__(self, inner: OpenAIImages) -> None:
        self.inner = inner
        self.spent: dict[str, float] = {}

    async def create_images(
        self, request: ImageRequest, *, on_partial: PartialCallback | None = None
    ) -> ProviderResult:
        start = time.perf_counter()
        try:
            return await self.inner.create_images(request, on_partial=on_partial)
        finally:
            self.spent[request.prompt] = time.perf_counter() - start

    async def aclose(self) -> None:
        await self.inner.aclose()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)]


async def make_app(base_url: str, data_dir: Path, **overrides: object) -> tuple[App, TimedProvider]:
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None,
        openai_api_key="sk-test",
        openai_base_url=base_url,
        imagine_data_dir=data_dir,
        imagine_user_queue=100_000,  # one user sends every burst
        **overrides,
    )
    provider = TimedProvider(
        OpenAIImages(api_key="sk-test", base_url=base_url, max_retries=0, timeout=60)
    )
    return await build(settings, provider=provider), provider


def source_png() -> bytes:
    buffer = io.BytesIO()
    Image.effect_mandelbrot((1024, 1024), (-2, -1.5, 1, 1.5), 60).convert("RGB").save(buffer, "PNG")
    return buffer.getvalue()


class LagMonitor:
    """Measures how late a 5 ms sleep wakes up: the event loop's responsiveness."""

    def __init__(self) -> None:
        self.lags: list[float] = []
        self._task: asyncio.Task[None] | None = None

    async def _tick(self) -> None:
        while True:
            start = time.perf_counter()
            await asyncio.sleep(0.005)
            self.lags.append(time.perf_counter() - start - 0.005)

    def __enter__(self) -> LagMonitor:
        self._task = asyncio.create_task(self._tick())
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()


async def overhead_and_lag(
    base_url: str, data_dir: Path, jobs: int, latency: float
) -> dict[str, float]:
    """``jobs`` started within one provider latency, so all are in flight together.

    Overhead = a job's whole time minus its time inside the API call (which includes the
    previews the progress callback shrinks). Odd jobs are edits of a 1024x1024 PNG, so their
    overhead includes checking that attachment; it is reported apart.
    """
    app, provider = await make_app(
        base_url, data_dir, imagine_max_concurrency=jobs, imagine_partial_images=1
    )
    source = source_png()

    spacing = latency / jobs
    # Warm up: the first request pays one-off costs (lazy imports, the first connection).
    await app.service.run(
        ImageRequest(
            Requester("bench", "warm"), "warm up", app.service.options(Overrides(quality="low"))
        )
    )

    async def one(i: int) -> tuple[bool, float]:
        await asyncio.sleep(i * spacing)
        prompt = f"benchmark job {i}"
        sources = (SourceImage(source, "in.png", ""),) if i % 2 else ()
        request = ImageRequest(
            requester=Requester("bench", f"u{i}"),
            prompt=prompt,
            options=app.service.options(Overrides(size="1024x1024", quality="low")),
            sources=sources,
        )

        async def progress(event: ProgressEvent) -> None:
            # What an adapter does with a preview: shrink it off the loop.
            if isinstance(event, PartialImage):
                await asyncio.to_thread(images.preview_jpeg, event.data)

        start = time.perf_counter()
        result = await app.service.run(request, progress)
        data = await asyncio.to_thread(result.images[0].read_bytes)
        await asyncio.to_thread(images.fit_for_upload, data, "out.png", 10 * 1024 * 1024)
        return bool(sources), time.perf_counter() - start - provider.spent[prompt]

    with LagMonitor() as monitor:
        measured = await asyncio.gather(*(one(i) for i in range(jobs)))
    await app.aclose()
    generations = [overhead for edit, overhead in measured if not edit]
    edits = [overhead for edit, overhead in measured if edit]
    return {
        "overhead_p50_ms": statistics.median(generations) * 1000,
        "overhead_p99_ms": percentile(generations, 0.99) * 1000,
        "edit_overhead_p50_ms": statistics.median(edits) * 1000,
        "edit_overhead_p99_ms": percentile(edits, 0.99) * 1000,
        "loop_lag_p99_ms": percentile(monitor.lags, 0.99) * 1000,
        "loop_lag_max_ms": max(monitor.lags) * 1000,
    }


async def makespan(
    base_url: str, data_dir: Path, jobs: int, slots: int, latency: float
) -> dict[str, float]:
    """Jobs all at once through ``slots`` provider slots: how close to perfect packing."""
    app, _ = await make_app(
        base_url, data_dir, imagine_max_concurrency=slots, imagine_partial_images=0
    )

    async def one(i: int) -> None:
        request = ImageRequest(
            requester=Requester("bench", f"m{i}"),
            prompt=f"makespan job {i}",
            options=app.service.options(Overrides(size="1024x1024", quality="low")),
        )
        await app.service.run(request)

    start = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(jobs)))
    elapsed = time.perf_counter() - start
    await app.aclose()
    ideal = math.ceil(jobs / slots) * latency
    return {"makespan_s": elapsed, "makespan_ideal_s": ideal, "makespan_ratio": elapsed / ideal}


async def admissions(data_dir: Path, attempts: int, users: int, limit: int) -> dict[str, float]:
    """Admission throughput straight on the store, with every user pushing past their limit."""
    from bot.store import Store

    store = await Store.open(data_dir / "admissions.sqlite3")
    rules = (WindowRule(limit, 3600, "hour"),)
    admitted: Counter[str] = Counter()
    refused = 0

    async def one(i: int) -> None:
        nonlocal refused
        request = ImageRequest(requester=Requester("bench", f"a{i % users}"), prompt="x")
        try:
            await store.admit(request, limits=rules, budgets=(), estimated_cost=0.01, exempt=False)
            admitted[request.requester.key] += 1
        except LimitExceeded:
            refused += 1

    start = time.perf_counter()
    batch = 200
    for offset in range(0, attempts, batch):
        await asyncio.gather(*(one(i) for i in range(offset, min(attempts, offset + batch))))
    elapsed = time.perf_counter() - start
    await store.close()
    over = sum(max(0, count - limit) for count in admitted.values())
    return {
        "admissions_per_s": attempts / elapsed,
        "admitted": sum(admitted.values()),
        "refused": refused,
        "over_limit": over,
    }


async def main(args: argparse.Namespace) -> None:
    context = multiprocessing.get_context("spawn")
    parent, child = context.Pipe()
    server = context.Process(target=_serve_fake, args=(args.latency, child), daemon=True)
    server.start()
    parent_fast, child_fast = context.Pipe()
    fast_server = context.Process(
        target=_serve_fake, args=(args.makespan_latency, child_fast), daemon=True
    )
    fast_server.start()
    base_url = parent.recv()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            figures: dict[str, float] = {"provider_latency_s": args.latency}
            figures.update(await overhead_and_lag(base_url, root / "a", args.jobs, args.latency))
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            fast_url = parent_fast.recv()
            figures["makespan_latency_s"] = args.makespan_latency
            figures.update(
                await makespan(
                    fast_url, root / "b", args.makespan_jobs, args.slots, args.makespan_latency
                )
            )
            figures.update(await admissions(root / "c", args.attempts, users=50, limit=100))
    finally:
        parent.send("stop")
        parent_fast.send("stop")
        server.join(timeout=10)
        fast_server.join(timeout=10)
    for name, value in figures.items():
        shown = (
            f"{value:.2f}"
            if isinstance(value, float) and not value.is_integer()
            else f"{value:.0f}"
        )
        print(f"{name}: {shown}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--latency",
        type=float,
        default=10.0,
        help="provider latency for the overhead/lag run, seconds (real calls take 10-60 s)",
    )
    parser.add_argument("--makespan-latency", type=float, default=1.0)
    parser.add_argument("--jobs", type=int, default=100, help="concurrent jobs for overhead/lag")
    parser.add_argument("--makespan-jobs", type=int, default=200)
    parser.add_argument("--slots", type=int, default=4, help="IMAGINE_MAX_CONCURRENCY for makespan")
    parser.add_argument("--attempts", type=int, default=10_000, help="admission attempts")
    asyncio.run(main(parser.parse_args()))
