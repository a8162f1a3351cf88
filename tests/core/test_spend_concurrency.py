"""Spend control under load: 200 admissions at once, in one process and in two, never overspend
any scope; settling and refunds give room back to the shared scopes, across a restart."""

from __future__ import annotations

import asyncio
import json
import sys
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import pytest

from bot.commands import Overrides
from bot.errors import BudgetExceeded
from bot.models import ImageOptions, ImageRequest, JobRecord, Requester
from bot.policy import Counted
from bot.store import Store
from tests.core import spend_child
from tests.core.spend_child import CASES, PRIOR_COST, REQUESTS, T0, Ask, Case, plan, rules
from tests.core.store_kit import OpenStore, png, query, result
from tests.fakes.app_fixtures import AppFactory, ProviderGate

EPSILON = 1e-9
ROOT = Path(__file__).resolve().parents[2]
WHOSE = {"user": None, "channel": "this channel's", "team": "this server's", "total": "the bot's"}
REFUSAL = {
    "user": "You've reached your limit of 2 images per day",
    "channel": "This channel's daily budget of $2.00 is spent",
    "team": "This server's daily budget of $5.00 is spent",
    "total": "The bot's daily budget of $5.00 is spent",
}


async def _spent(store: Store) -> dict[tuple[str, str], tuple[int, float]]:
    """Charged images and dollars per scope and key, summed from the jobs table."""
    sums: dict[tuple[str, str], list[float]] = defaultdict(lambda: [0, 0.0])
    rows = await query(
        store,
        "SELECT platform, user_key, channel_id, team_id, charged_images, charged_cost FROM jobs",
    )
    for platform, user, channel, team, images, cost in rows:
        assert isinstance(images, int) and isinstance(cost, float)
        for key in (
            ("user", str(user)),
            ("channel", f"{platform}:{channel}"),
            ("team", f"{platform}:{team}"),
            ("total", ""),
        ):
            sums[key][0] += images
            sums[key][1] += cost
    spent: dict[tuple[str, str], tuple[int, float]] = defaultdict(lambda: (0, 0.0))
    spent.update({key: (int(images), cost) for key, (images, cost) in sums.items()})
    return spent


async def check_outcomes(
    case: Case, asks: Sequence[Ask], outcomes: Sequence[dict[str, object]], store: Store
) -> None:
    """No scope's budget or limit is exceeded, refusals name the tight scope, little is left."""
    assert sorted(int(str(o["index"])) for o in outcomes) == list(range(REQUESTS))
    unexpected = [o for o in outcomes if o["kind"] not in ("admitted", *_REFUSALS)]
    assert unexpected == []
    admitted = [o for o in outcomes if o["kind"] == "admitted"]
    refused = [o for o in outcomes if o["kind"] != "admitted"]
    assert refused, "the tight scope must run out"
    assert admitted

    # The database holds exactly the admitted jobs (and the other server's earlier one).
    ids = {str(row[0]) for row in await query(store, "SELECT id FROM jobs WHERE team_id = 'g1'")}
    assert ids == {str(o["job"]) for o in admitted}

    spent = await _spent(store)
    largest = max(a.cost for a in asks)
    for ask in asks:
        for counted in spend_child.scopes(case, ask.requester):
            images, dollars = spent[(counted.scope, counted.key)]
            for limit in counted.rules.limits:
                assert images <= limit.amount, (counted.scope, counted.key, images)
            for budget in counted.rules.budgets:
                overspend = max(0.0, dollars - budget.amount)
                # Reserve-then-settle leaves no room for even one reservation's overshoot.
                assert overspend <= EPSILON, (counted.scope, counted.key, dollars, budget.amount)
                assert overspend < largest

    # Every refusal is the tight scope's, and names it in plain words.
    tight = case.tight
    assert {(o["scope"], o["whose"]) for o in refused} == {(tight, WHOSE[tight])}
    expected = "LimitExceeded" if tight == "user" else "BudgetExceeded"
    assert {o["kind"] for o in refused} == {expected}
    assert all(REFUSAL[tight] in str(o["message"]) for o in refused)

    # Enough was admitted: each refusal found less room than it asked for, so what is left
    # of the tight scope is smaller than the cheapest request it refused.
    by_index = {a.index: a for a in asks}
    refused_by_key: dict[str, list[Ask]] = defaultdict(list)
    for o in refused:
        ask = by_index[int(str(o["index"]))]
        [counted] = [c for c in spend_child.scopes(case, ask.requester) if c.scope == tight]
        refused_by_key[counted.key].append(ask)
    for key, refused_asks in refused_by_key.items():
        images, dollars = spent[(tight, key)]
        rule_set = getattr(case, tight)
        if tight == "user":
            assert images == rule_set.limits[0].amount
            continue
        room = rule_set.budgets[0].amount - dollars
        if tight == "total":
            assert spent[("team", "discord:g2")][1] == pytest.approx(PRIOR_COST)
        assert room < min(a.cost for a in refused_asks), (key, room)
        assert room < largest


_REFUSALS = ("BudgetExceeded", "LimitExceeded")


@pytest.mark.parametrize("name", sorted(CASES))
async def test_200_admissions_at_once_never_overspend_any_scope(
    store: Store, db_path: Path, name: str
) -> None:
    case, asks = CASES[name], plan()
    await spend_child.add_prior(store)

    outcomes = await spend_child.fire(store, case, asks)

    await check_outcomes(case, asks, outcomes, store)


async def _start_child(
    db_path: Path, name: str, share: int, start: Path, database_url: str | None
) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.core.spend_child",
        str(db_path),
        name,
        str(share),
        "2",
        str(start),
        database_url or "",
        stdout=asyncio.subprocess.PIPE,
        cwd=ROOT,
    )


@pytest.mark.parametrize("name", ["team", "total"])
async def test_two_processes_firing_at_once_never_overspend_any_scope(
    store: Store, db_path: Path, tmp_path: Path, name: str, database_url: str | None
) -> None:
    case, asks = CASES[name], plan()
    await spend_child.add_prior(store)
    start = tmp_path / "go"
    children = [await _start_child(db_path, name, share, start, database_url) for share in (0, 1)]
    try:
        for child in children:
            assert child.stdout is not None
            assert await asyncio.wait_for(child.stdout.readline(), 60) == b"ready\n"
        # Both are waiting on the same file: they fire within a millisecond of each other.
        start.touch()
        outs = await asyncio.wait_for(
            asyncio.gather(*(child.communicate() for child in children)), 120
        )
    finally:
        for child in children:
            if child.returncode is None:
                child.kill()
                await child.wait()
    assert [child.returncode for child in children] == [0, 0]
    shares = [json.loads(out.decode().strip().splitlines()[-1]) for out, _ in outs]
    assert all(share for share in shares), "each process made its own admissions"

    await check_outcomes(case, asks, [o for share in shares for o in share], store)


def _request(user: str, team: str, channel: str = "c1") -> ImageRequest:
    return ImageRequest(Requester("discord", user, team, channel), "a harbour", ImageOptions())


async def test_settling_and_refunds_give_room_back_to_team_and_total_after_a_restart(
    open_store: OpenStore, db_path: Path
) -> None:
    team_rules, total_rules = rules(budget="$1/day"), rules(budget="$1.50/day")

    def scopes(team: str) -> list[Counted]:
        return [Counted("team", f"discord:{team}", team_rules), Counted("total", "", total_rules)]

    async def admit(store: Store, team: str, cost: float, now: float) -> JobRecord:
        return await store.admit(
            _request("7", team), estimated_cost=cost, scopes=scopes(team), now=now
        )

    store = await open_store(db_path)
    elsewhere = await admit(store, "g2", 0.4, T0)
    jobs = [await admit(store, "g1", 0.2, T0 + i) for i in range(1, 6)]
    with pytest.raises(BudgetExceeded) as team_full:
        await admit(store, "g1", 0.05, T0 + 10)
    assert (team_full.value.scope, team_full.value.whose) == ("team", "this server's")
    with pytest.raises(BudgetExceeded) as total_full:
        await admit(store, "g2", 0.2, T0 + 10)
    assert (total_full.value.scope, total_full.value.whose) == ("total", "the bot's")

    await store.finish(jobs[0].id, result(png(b"a")), 0.05, now=T0 + 20)  # $0.15 back
    await store.fail(jobs[1].id, "the provider refused", now=T0 + 21)  # $0.20 back
    # The rest end at their estimate: a closed store's unfinished jobs would be refunded.
    for job, cost in [(elsewhere, 0.4)] + [(job, 0.2) for job in jobs[2:]]:
        await store.finish(job.id, result(png(b"b")), cost, now=T0 + 22)
    await store.close()

    reopened = await open_store(db_path)
    spent = await _spent(reopened)
    assert spent[("team", "discord:g1")][1] == pytest.approx(0.65)
    assert spent[("total", "")][1] == pytest.approx(1.05)
    # Exactly the room given back fits again, at each scope, and no more.
    await admit(reopened, "g1", 0.35, T0 + 30)
    with pytest.raises(BudgetExceeded) as team_again:
        await admit(reopened, "g1", 0.01, T0 + 31)
    assert team_again.value.scope == "team"
    await admit(reopened, "g2", 0.1, T0 + 32)
    with pytest.raises(BudgetExceeded) as total_again:
        await admit(reopened, "g2", 0.01, T0 + 33)
    assert total_again.value.scope == "total"
    spent = await _spent(reopened)
    assert spent[("team", "discord:g1")][1] == pytest.approx(1.0)
    assert spent[("total", "")][1] == pytest.approx(1.5)


async def test_the_service_names_the_server_and_the_bot_when_their_budgets_are_spent(
    make_app: AppFactory,
) -> None:
    app = await make_app(imagine_team_budget="0.30/day", imagine_total_budget="0.50/day")
    service = app.service
    gate = ProviderGate.hold(app)  # running jobs keep their reservation

    def ask(who: Requester) -> ImageRequest:
        options = service.options(Overrides(size="1024x1024", quality="high"))
        return ImageRequest(requester=who, prompt="a lighthouse", options=options)

    async def started(who: Requester) -> asyncio.Task[object]:
        event = asyncio.Event()

        async def on_admitted(job: JobRecord, position: int) -> None:
            event.set()

        task: asyncio.Task[object] = asyncio.create_task(
            service.run(ask(who), on_admitted=on_admitted)
        )
        await asyncio.wait_for(event.wait(), 10)
        return task

    async def refused(request: ImageRequest) -> None:
        # An admitted job would wait on the gate: bound it, so a missing check fails, not hangs.
        await asyncio.wait_for(service.run(request), 10)

    alice = Requester("discord", "111", "g1", "c1")
    carol = Requester("discord", "333", "g1", "c2")
    bob = Requester("slack", "U222", "T1", "C1")
    dave = Requester("slack", "U444", "T2", "C2")  # his workspace has spent nothing
    running = [await started(alice)]
    try:
        with pytest.raises(BudgetExceeded) as server:
            await refused(ask(carol))
        assert server.value.scope == "team"
        assert "This server's daily budget of $0.30 is spent" in server.value.user_message
        running.append(await started(bob))
        with pytest.raises(BudgetExceeded) as bot:
            await refused(ask(dave))
        assert bot.value.scope == "total"
        assert "The bot's daily budget of $0.50 is spent" in bot.value.user_message
    finally:
        gate.release.set()
        await asyncio.gather(*running)
