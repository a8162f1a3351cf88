"""Spend control under load: admissions per second with every scope counting, and what 200
requests at once (40 users, 3 channels, one server) spend against the shared budgets.

Run: ``.venv/bin/python benchmarks/spend_bench.py [--jobs 5000] [--prefill 20000]``

Part (a) resolves each request's rules (a user in two tiers, a channel, a server, the total)
and admits it, sequentially and 50 at a time, on a fresh file and on one holding a month of
jobs. Part (b) fires 200 admissions at once in one process, then split over two processes on
one file, and prints what was admitted, refused and spent.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sqlite3
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from bot.config import Settings, parse_rules
from bot.errors import BudgetExceeded, LimitExceeded
from bot.job_rows import INSERT_JOB, job_row
from bot.models import ImageOptions, ImageRequest, Requester
from bot.policy import Counted, Defaults, Entry, Policy, Rules
from bot.spending import PolicyBook
from bot.store import Store, new_job_id

NOW = 1_750_000_000.0
DAY = 86_400.0
MONTH = 30 * DAY


def _rules(limit: str | None, budget: str | None) -> Rules:
    return Rules(parse_rules(limit, whole=True), parse_rules(budget, whole=False))


# --- (a) throughput -------------------------------------------------------------------------

# Generous rules over day and month windows, so nothing is refused and every sum runs over
# the whole month of jobs.
_ENV = {
    "imagine_user_limit": "1000/day,100000/month",
    "imagine_user_budget": "$1000/month",
    "imagine_channel_limit": "100000/month",
    "imagine_channel_budget": "$100000/month",
    "imagine_team_limit": "1000000/month",
    "imagine_team_budget": "$1000000/month",
    "imagine_total_limit": "1000000/month",
    "imagine_total_budget": "$1000000/month",
}
_TIERS = [
    Entry("tier", "discord:artists", "limit", "5000/day,200000/month"),
    Entry("tier", "discord:artists", "budget", "$5000/month"),
    Entry("tier", "discord:regulars", "limit", "2000/day"),
]


# The same scopes with daily rules only: each sum reads a day of the month's jobs.
_ENV_DAY = {name: value.split(",")[0].replace("month", "day") for name, value in _ENV.items()}
_TIERS_DAY = [Entry(e.scope, e.target, e.name, e.value.split(",")[0]) for e in _TIERS]


def _settings(daily: bool = False) -> Settings:
    env = _ENV_DAY if daily else _ENV
    return Settings(_env_file=None, openai_api_key="sk-bench", **env)  # type: ignore[call-arg, arg-type]


def _requesters(users: int) -> list[Requester]:
    channels = [f"c{i}" for i in range(3)]
    return [
        Requester("discord", str(u), "g1", channels[u % 3], f"user {u}", ("artists", "regulars"))
        for u in range(users)
    ]


def _prefill(path: Path, owner: str, jobs: int, requesters: Sequence[Requester]) -> None:
    """``jobs`` charged jobs spread over the last month, written in one transaction."""
    rng = random.Random(1)
    options = ImageOptions()
    rows = []
    for i in range(jobs):
        created = NOW - 60 - rng.random() * (MONTH - 120)
        request = ImageRequest(requesters[i % len(requesters)], "an old one", options)
        rows.append(job_row(new_job_id(created), request, created, 0.04, owner))
    db = sqlite3.connect(path)
    try:
        with db:
            db.executemany(INSERT_JOB, rows)
    finally:
        db.close()


@dataclass
class Rate:
    label: str
    prefilled: int
    concurrency: int
    per_s: float


async def _throughput(
    jobs: int, users: int, concurrency: int, prefill: int, book: bool, daily: bool = False
) -> tuple[float, int]:
    settings = _settings(daily)
    requesters = _requesters(users)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "imagine.sqlite3"
        store = await Store.open(path)
        try:
            for entry in _TIERS_DAY if daily else _TIERS:
                await store.set_policy(entry, "bench")
            policy = Policy(Defaults.from_settings(settings), await store.policy_entries())
            spending = PolicyBook(settings, store)
            if prefill:
                await asyncio.to_thread(_prefill, path, store.owner.id, prefill, requesters)
            options = ImageOptions()
            scope_count = len(policy.standing(requesters[0]).counted)

            async def worker(start: int, count: int) -> None:
                for i in range(start, start + count):
                    who = requesters[i % users]
                    if book:
                        standing = await spending.standing(who)
                    else:
                        standing = policy.standing(who)
                    await store.admit(
                        ImageRequest(who, "a lighthouse", options),
                        estimated_cost=0.04,
                        scopes=standing.counted,
                        now=NOW + i * 1e-4,
                    )

            await worker(0, 200)  # warm-up: statement cache, first pages
            per = jobs // concurrency
            started = time.perf_counter()
            await asyncio.gather(*(worker(200 + w * per, per) for w in range(concurrency)))
            elapsed = time.perf_counter() - started
        finally:
            await store.close()
    return per * concurrency / elapsed, scope_count


# --- (b) 200 at once ------------------------------------------------------------------------

_PLAN_USERS, _PLAN_REQUESTS = 40, 200
_USER = _rules("5/day", "$1/day")
_CHANNEL = _rules("100/day", "$3/day")
_TEAM = _rules("1000/day", "$5/day")
_TOTAL = _rules("1000/day", "$6/day")
_PRIOR = 1.5  # another server's spend earlier today: the total has $4.50 left, the team $5


def _plan() -> list[tuple[Requester, float]]:
    rng = random.Random(20_260_612)
    asks = []
    for i in range(_PLAN_REQUESTS):
        user = str(1000 + i % _PLAN_USERS)
        requester = Requester("discord", user, "g1", rng.choice(("c1", "c2", "c3")))
        asks.append((requester, round(rng.uniform(0.02, 0.25), 4)))
    return asks


def _scopes(who: Requester) -> list[Counted]:
    return [
        Counted("user", who.key, _USER),
        Counted("channel", f"discord:{who.channel_id}", _CHANNEL),
        Counted("team", "discord:g1", _TEAM),
        Counted("total", "", _TOTAL),
    ]


async def _fire(store: Store, asks: Sequence[tuple[Requester, float]]) -> list[str]:
    async def one(who: Requester, cost: float) -> str:
        request = ImageRequest(who, "a lighthouse", ImageOptions())
        try:
            await store.admit(request, estimated_cost=cost, scopes=_scopes(who), now=NOW)
        except (BudgetExceeded, LimitExceeded) as exc:
            return f"refused:{exc.scope}"
        return "admitted"

    return list(await asyncio.gather(*(one(who, cost) for who, cost in asks)))


def _wait_for(start: Path) -> None:
    # Both processes spin on the same file, so they fire within a millisecond of each other.
    while not start.exists():
        time.sleep(0.0005)


async def _child(path: Path, share: int, start: Path) -> None:
    store = await Store.open(path)
    try:
        asks = _plan()[share::2]
        print("ready", flush=True)
        await asyncio.to_thread(_wait_for, start)
        outcomes = await _fire(store, asks)
    finally:
        await store.close()
    print(json.dumps(outcomes), flush=True)


@dataclass
class Burst:
    label: str
    outcomes: Counter[str]
    team_spent: float
    total_spent: float
    seconds: float


def _spent(path: Path) -> tuple[float, float]:
    db = sqlite3.connect(path)
    try:
        team = db.execute(
            "SELECT COALESCE(SUM(charged_cost), 0) FROM jobs WHERE team_id = 'g1'"
        ).fetchone()[0]
        total = db.execute("SELECT COALESCE(SUM(charged_cost), 0) FROM jobs").fetchone()[0]
    finally:
        db.close()
    return float(team), float(total)


async def _burst(processes: int) -> Burst:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "imagine.sqlite3"
        store = await Store.open(path)
        try:
            other = ImageRequest(Requester("discord", "9", "g2", "c9"), "a harbour")
            await store.admit(other, estimated_cost=_PRIOR, scopes=(), now=NOW - 3600)
            if processes == 1:
                started = time.perf_counter()
                outcomes = await _fire(store, _plan())
                seconds = time.perf_counter() - started
            else:
                outcomes, seconds = await _two_processes(path, Path(tmp) / "go")
        finally:
            await store.close()
        team, total = _spent(path)
    label = "one process" if processes == 1 else "two processes"
    return Burst(label, Counter(outcomes), team, total, seconds)


async def _two_processes(path: Path, start: Path) -> tuple[list[str], float]:
    children = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            __file__,
            "--child",
            str(path),
            str(share),
            str(start),
            stdout=asyncio.subprocess.PIPE,
        )
        for share in (0, 1)
    ]
    for child in children:
        assert child.stdout is not None
        if await child.stdout.readline() != b"ready\n":
            raise RuntimeError("a child process did not start")
    started = time.perf_counter()
    start.touch()
    outs = await asyncio.gather(*(child.communicate() for child in children))
    seconds = time.perf_counter() - started
    outcomes = [o for out, _ in outs for o in json.loads(out.decode().splitlines()[-1])]
    return outcomes, seconds


# --- report ---------------------------------------------------------------------------------


async def _main(args: argparse.Namespace) -> None:
    began = time.perf_counter()
    print("(a) admissions per second, every scope counting (user via two tiers, channel,")
    print("    server, total), summed from day and hour running totals")
    print(
        f"{'rules from':<22}{'windows':>8}{'jobs before':>12}{'admitted':>10}{'concurrency':>13}"
        f"{'scopes':>8}{'admits/s':>10}"
    )
    runs = [
        (False, False, 0, args.jobs, 1),
        (False, False, 0, args.jobs, 50),
        (True, False, 0, args.jobs // 2, 50),
        (False, False, args.prefill, args.prefilled_jobs, 1),
        (False, False, args.prefill, args.prefilled_jobs, 50),
        (True, False, args.prefill, args.prefilled_jobs, 50),
        (False, True, args.prefill, args.jobs // 5, 1),
        (False, True, args.prefill, args.jobs // 5, 50),
    ]
    for book, daily, prefill, jobs, concurrency in runs:
        rate, scopes = await _throughput(jobs, 500, concurrency, prefill, book, daily)
        label = "PolicyBook.standing" if book else "Policy.standing"
        windows = "day" if daily else "month"
        print(
            f"{label:<22}{windows:>8}{prefill:>12,}{jobs:>10,}{concurrency:>13}"
            f"{scopes:>8}{rate:>10,.0f}"
        )
    print()
    print("(b) 200 requests at once: 40 users, 3 channels of one server, $0.02-$0.25 each")
    print(
        f"    rules: user {_describe(_USER)}, channel {_describe(_CHANNEL)}, "
        f"team {_describe(_TEAM)}, total {_describe(_TOTAL)} (${_PRIOR:.2f} spent elsewhere)"
    )
    header = (
        f"{'':<15}{'admitted':>9}{'refused':>9}  {'refused by scope':<34}"
        f"{'team $':>8}{'total $':>9}{'overspend':>10}{'ms':>7}"
    )
    print(header)
    for processes in (1, 2):
        burst = await _burst(processes)
        refused = {k.split(":")[1]: v for k, v in burst.outcomes.items() if k != "admitted"}
        by_scope = ", ".join(f"{k} {v}" for k, v in sorted(refused.items()))
        team_budget, total_budget = _TEAM.budgets[0].amount, _TOTAL.budgets[0].amount
        over = max(0.0, burst.team_spent - team_budget, burst.total_spent - total_budget)
        print(
            f"{burst.label:<15}{burst.outcomes['admitted']:>9}{sum(refused.values()):>9}  "
            f"{by_scope:<34}{burst.team_spent:>5.2f}/{team_budget:<2.0f}"
            f"{burst.total_spent:>6.2f}/{total_budget:<2.0f}"
            f"{over:>10.4f}{burst.seconds * 1000:>7.0f}"
        )
    print(f"\ntotal runtime: {time.perf_counter() - began:.1f} s")


def _describe(rules: Rules) -> str:
    parts = [f"{r.amount:g}/{r.label}" for r in rules.limits]
    parts += [f"${r.amount:g}/{r.label}" for r in rules.budgets]
    return "+".join(parts)


def main() -> None:
    """Parse arguments, run both parts, print the tables."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=4_000)
    parser.add_argument("--prefill", type=int, default=20_000)
    parser.add_argument("--prefilled-jobs", type=int, default=3_000)
    parser.add_argument(
        "--child", nargs=3, metavar=("DB", "SHARE", "START"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.child:
        db, share, start = args.child
        asyncio.run(_child(Path(db), int(share), Path(start)))
        return
    asyncio.run(_main(args))


if __name__ == "__main__":
    main()
