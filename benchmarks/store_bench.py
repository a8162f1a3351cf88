"""Measure Store.admit throughput for generation requests; prints ``admissions_per_s: N``.

Run: ``.venv/bin/python benchmarks/store_bench.py [--jobs 10000] [--users 500]``
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

from bot.config import parse_rules
from bot.models import ImageOptions, ImageRequest, Requester
from bot.store import Store


async def _run(jobs: int, users: int, concurrency: int) -> float:
    limits = parse_rules("1000/minute,100000/day", whole=True)
    budgets = parse_rules("$1000/day", whole=False)
    requests = [
        ImageRequest(Requester("discord", str(u), "guild", "chan", f"user {u}"), "a lighthouse")
        for u in range(users)
    ]
    options = ImageOptions(n=1)
    with tempfile.TemporaryDirectory() as tmp:
        store = await Store.open(Path(tmp) / "imagine.sqlite3")
        try:

            async def worker(start: int, count: int) -> None:
                for i in range(start, start + count):
                    base = requests[i % users]
                    request = ImageRequest(base.requester, base.prompt, options)
                    await store.admit(
                        request, limits=limits, budgets=budgets, estimated_cost=0.04, exempt=False
                    )

            # Warm-up: a table with history, as a running bot has.
            await worker(0, jobs // 5)
            per_worker = jobs // concurrency
            started = time.perf_counter()
            await asyncio.gather(*(worker(w * per_worker, per_worker) for w in range(concurrency)))
            elapsed = time.perf_counter() - started
        finally:
            await store.close()
    return per_worker * concurrency / elapsed


def main() -> None:
    """Parse arguments, run the benchmark, print the figure."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--users", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=50)
    args = parser.parse_args()
    rate = asyncio.run(_run(args.jobs, args.users, args.concurrency))
    print(f"admissions_per_s: {rate:.0f}")


if __name__ == "__main__":
    main()
