"""The spend-concurrency plan, and a process that fires its share of it at a shared store.

Run as ``python -m tests.core.spend_child DB CASE SHARE SHARES START_FILE`` from the repository
root: it opens the store, prints ``ready``, waits for START_FILE to appear, fires every
SHARE-th admission of the plan at once and prints the outcomes as one JSON line.
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from bot.config import parse_rules
from bot.errors import BudgetExceeded, LimitExceeded
from bot.models import ImageOptions, ImageRequest, JobRecord, Requester
from bot.policy import Counted, Rules
from bot.store import Store

T0 = 1_750_000_000.0
PLATFORM = "discord"
TEAM = "g1"
CHANNELS = ("c1", "c2", "c3")
USERS = 40
REQUESTS = 200
# A job of another server, already charged: the total counts it, the team does not.
PRIOR_COST = 1.0


def rules(limit: str | None = None, budget: str | None = None) -> Rules:
    """Rules from the settings' notation: ``"5/day"``, ``"$2/day"``."""
    return Rules(parse_rules(limit, whole=True), parse_rules(budget, whole=False))


@dataclass(frozen=True)
class Case:
    """The rules at each scope; ``tight`` is the one meant to run out first."""

    tight: str
    user: Rules
    channel: Rules
    team: Rules
    total: Rules


_LOOSE_USER = rules("50/day", "$100/day")
_LOOSE_CHANNEL = rules("500/day", "$200/day")
_LOOSE_TEAM = rules("1000/day", "$500/day")
_LOOSE_TOTAL = rules("1000/day", "$1000/day")

CASES: dict[str, Case] = {
    "user": Case("user", rules("2/day", "$100/day"), _LOOSE_CHANNEL, _LOOSE_TEAM, _LOOSE_TOTAL),
    "channel": Case("channel", _LOOSE_USER, rules("500/day", "$2/day"), _LOOSE_TEAM, _LOOSE_TOTAL),
    "team": Case("team", _LOOSE_USER, _LOOSE_CHANNEL, rules("1000/day", "$5/day"), _LOOSE_TOTAL),
    # $1.00 of the total is already spent by the other server's job: $4.00 is left.
    "total": Case("total", _LOOSE_USER, _LOOSE_CHANNEL, _LOOSE_TEAM, rules("1000/day", "$5/day")),
}


@dataclass(frozen=True)
class Ask:
    """One planned request: who asks, where, and what it is estimated to cost."""

    index: int
    requester: Requester
    cost: float

    def request(self) -> ImageRequest:
        """The request itself."""
        return ImageRequest(self.requester, f"a lighthouse, take {self.index}", ImageOptions())


def plan(seed: int = 20_260_612) -> list[Ask]:
    """200 requests from 40 users in 3 channels of one server, each costing $0.02 to $0.25."""
    rng = random.Random(seed)
    asks = []
    for i in range(REQUESTS):
        user = str(1000 + i % USERS)
        channel = rng.choice(CHANNELS)
        requester = Requester(PLATFORM, user, TEAM, channel, f"user {user}")
        asks.append(Ask(i, requester, round(rng.uniform(0.02, 0.25), 4)))
    return asks


def scopes(case: Case, requester: Requester) -> list[Counted]:
    """The four counted scopes of one request, as ``Policy.standing`` would give them."""
    return [
        Counted("user", requester.key, case.user),
        Counted("channel", f"{PLATFORM}:{requester.channel_id}", case.channel),
        Counted("team", f"{PLATFORM}:{requester.team_id}", case.team),
        Counted("total", "", case.total),
    ]


async def admit(store: Store, case: Case, ask: Ask) -> JobRecord:
    """Admit one planned request under every scope, at the plan's fixed time."""
    return await store.admit(
        ask.request(), estimated_cost=ask.cost, scopes=scopes(case, ask.requester), now=T0
    )


async def add_prior(store: Store) -> None:
    """The other server's charged job, an hour before the plan's requests."""
    other = Requester(PLATFORM, "9", "g2", "c9", "elsewhere")
    request = ImageRequest(other, "a harbour", ImageOptions())
    await store.admit(request, estimated_cost=PRIOR_COST, scopes=(), now=T0 - 3600)


def outcome(ask: Ask, result: object) -> dict[str, object]:
    """What became of one admission, in a form that crosses processes as JSON."""
    if isinstance(result, JobRecord):
        return {"index": ask.index, "job": result.id, "kind": "admitted"}
    if isinstance(result, LimitExceeded | BudgetExceeded):
        return {
            "index": ask.index,
            "job": None,
            "kind": type(result).__name__,
            "scope": result.scope,
            "whose": result.whose,
            "message": result.user_message,
        }
    return {"index": ask.index, "job": None, "kind": "unexpected", "error": repr(result)}


async def fire(store: Store, case: Case, asks: Sequence[Ask]) -> list[dict[str, object]]:
    """Every ask at once; their outcomes in order."""
    results = await asyncio.gather(*(admit(store, case, a) for a in asks), return_exceptions=True)
    return [outcome(ask, result) for ask, result in zip(asks, results, strict=True)]


def _wait_for(start: Path) -> None:
    while not start.exists():
        time.sleep(0.0005)


async def _main(
    db: Path, case: Case, share: int, shares: int, start: Path, url: str | None
) -> None:
    store = await Store.open(db, database_url=url)
    try:
        asks = plan()[share::shares]
        print("ready", flush=True)
        await asyncio.to_thread(_wait_for, start)
        outcomes = await fire(store, case, asks)
    finally:
        await store.close()
    print(json.dumps(outcomes), flush=True)


if __name__ == "__main__":
    db, name, share, shares, start = sys.argv[1:6]
    url = sys.argv[6] if len(sys.argv) > 6 and sys.argv[6] else None  # PostgreSQL, or the file
    asyncio.run(_main(Path(db), CASES[name], int(share), int(shares), Path(start), url))
