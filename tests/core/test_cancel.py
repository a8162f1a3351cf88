"""Cancel through the service against the fake OpenAI: who may, what it costs, where the slot goes,
and a crowd of jobs cancelled at random moments leaving every total and slot as it should be."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from typing import Any

import pytest

from bot import texts
from bot.admission import DAY_SPAN, bucket_key
from bot.app import App
from bot.commands import Generate
from bot.errors import ContentBlocked, JobCancelled, JobNotFound, NotAllowed, UserFacingError
from bot.models import JobRecord, JobResult, ProviderResult, Queued, Requester
from bot.policy import Counted, Rules
from bot.presenting import run_job
from bot.pricing import estimate_cost
from tests.core.presenter_kit import Recording
from tests.core.service_kit import Recorder, Stepped
from tests.core.store_kit import raw_rows
from tests.fakes.app_fixtures import AppFactory
from tests.fakes.openai_server import FakeOpenAI

ALICE = Requester("discord", "111", "g1", "c1", "Alice")
ANNA = Requester("discord", "112", "g1", "c1", "Anna")
MOD = Requester("discord", "113", "g1", "c1", "Mod")
BOB = Requester("slack", "U222", "T1", "C1", "Bob")
BEA = Requester("slack", "U223", "T1", "C2", "Bea")


async def stepped_app(make_app: AppFactory, **settings: Any) -> tuple[App, Stepped]:
    app = await make_app(**settings)
    provider = Stepped(app.service.provider)
    app.service.provider = provider
    return app, provider


class Asked:
    """One request running in the background, with what it heard."""

    def __init__(self, task: asyncio.Task[JobResult], heard: Recorder, job_id: str) -> None:
        self.task = task
        self.heard = heard
        self.job_id = job_id

    def places(self) -> list[int]:
        return [e.position for e in self.heard.events if isinstance(e, Queued)]


async def ask(app: App, who: Requester, prompt: str) -> Asked:
    """Start a request and wait until it has its place in line."""
    heard = Recorder()
    request = await app.service.prepare(Generate(who, prompt))
    task = asyncio.create_task(app.service.run(request, heard))
    queued = await heard.heard(Queued)
    return Asked(task, heard, queued.job_id)


async def job(app: App, job_id: str) -> JobRecord:
    found = await app.store.get_job(job_id)
    assert found is not None
    return found


async def until(condition: Callable[[], bool], what: str) -> None:
    """Let the loop run until ``condition`` holds (a safety net of 10 s, not a measurement)."""
    for _ in range(2000):
        await asyncio.sleep(0.005)  # always yield: the jobs move only while the test waits
        if condition():
            return
    raise AssertionError(f"never happened: {what}")


# --- the three moments ------------------------------------------------------------------------


async def test_a_job_cancelled_while_waiting_ends_refunded_and_the_line_moves_up(
    make_app: AppFactory,
) -> None:
    app, provider = await stepped_app(
        make_app,
        imagine_max_concurrency=1,
        imagine_user_limit="10/day",
        imagine_user_budget="5/day",
    )
    service = app.service
    running = await ask(app, ALICE, "one")
    await provider.calls(1)
    waiting = await ask(app, ALICE, "two")
    behind = await ask(app, ALICE, "three")
    assert behind.places() == [2]
    before = await job(app, waiting.job_id)
    assert (before.charged_images, before.charged_cost > 0) == (1, True)

    assert await service.cancel(waiting.job_id, ALICE) == ""
    with pytest.raises(JobCancelled) as cancelled:
        await waiting.task
    assert (cancelled.value.job_id, cancelled.value.by) == (waiting.job_id, "111")

    ended = await job(app, waiting.job_id)
    assert ended.status == "failed"
    assert ended.cancelled_by == "discord:111"
    assert (ended.charged_images, ended.charged_cost, ended.cost_usd) == (0, 0, 0)
    # Its place went at once: the one behind it is next, and told so.
    await until(lambda: behind.places() == [2, 1], "the next in line moved up")
    assert service.queue_length == 1

    provider.gates[0].set()
    await running.task
    await provider.calls(2)
    assert provider.prompts == ["one", "three"]
    provider.gates[1].set()
    await behind.task
    assert service.queue_length == 0
    assert (await job(app, running.job_id)).status == "succeeded"


async def test_a_job_cancelled_while_its_call_is_on_the_wire_keeps_the_estimate_in_the_ledger(
    make_app: AppFactory,
) -> None:
    app, provider = await stepped_app(
        make_app, imagine_max_concurrency=1, imagine_user_limit="10/day"
    )
    service = app.service
    calling = await ask(app, ALICE, "one")
    await provider.calls(1)
    waiting = await ask(app, ANNA, "two")
    charged = (await job(app, calling.job_id)).charged_cost
    request = await service.prepare(Generate(ALICE, "one"))
    assert charged == pytest.approx(estimate_cost(request.options, 0, len("one")))

    assert await service.cancel(calling.job_id, ALICE) == ""
    with pytest.raises(JobCancelled):
        await calling.task
    ended = await job(app, calling.job_id)
    assert (ended.status, ended.cancelled_by) == ("failed", "discord:111")
    assert (ended.charged_images, ended.charged_cost) == (0, 0)
    # The request was sent: OpenAI may bill it, so what it may cost stays on the books.
    assert ended.cost_usd == pytest.approx(charged)

    # The slot passed on at once, without the held call ever answering.
    await provider.calls(2)
    assert provider.prompts == ["one", "two"]
    assert not provider.gates[0].is_set()
    provider.gates[1].set()
    await waiting.task
    assert service.queue_length == 0


async def test_a_cancel_after_the_image_was_made_is_too_late_and_the_job_succeeds(
    make_app: AppFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    app, provider = await stepped_app(make_app)
    service = app.service
    saving = asyncio.Event()
    saved = asyncio.Event()
    finish = app.store.finish

    async def held_finish(job_id: str, result: ProviderResult, cost_usd: float) -> Any:
        saving.set()
        await saved.wait()
        return await finish(job_id, result, cost_usd)

    monkeypatch.setattr(app.store, "finish", held_finish)
    made = await ask(app, ALICE, "one")
    await provider.calls(1)
    provider.gates[0].set()
    await asyncio.wait_for(saving.wait(), timeout=10)

    # Made and billed, still being saved: the job is unfinished, but it can't be cancelled.
    assert (await job(app, made.job_id)).status == "running"
    answer = await service.cancel(made.job_id, ALICE)
    assert answer == texts.too_late_to_cancel("running")
    assert "already made" in answer
    saved.set()
    result = await made.task
    assert result.images

    assert await service.cancel(made.job_id, ALICE) == texts.too_late_to_cancel("succeeded")
    ended = await job(app, made.job_id)
    assert (ended.status, ended.cancelled_by, ended.charged_images) == ("succeeded", None, 1)


async def test_a_cancel_of_a_job_that_already_failed_says_it_has_finished(
    make_app: AppFactory, openai_fake: FakeOpenAI
) -> None:
    app = await make_app()
    openai_fake.fail_next("moderation_blocked")
    request = await app.service.prepare(Generate(ALICE, "something blocked"))
    with pytest.raises(ContentBlocked):
        await app.service.run(request)
    [(job_id,)] = raw_rows(app.store.path, "SELECT id FROM jobs")
    assert isinstance(job_id, str)
    answer = await app.service.cancel(job_id, ALICE)
    assert answer == "It has already finished, so there is nothing to cancel."
    assert (await job(app, job_id)).cancelled_by is None


# --- who may ----------------------------------------------------------------------------------


async def test_someone_else_may_not_cancel_and_nothing_changes(make_app: AppFactory) -> None:
    app, provider = await stepped_app(make_app, imagine_max_concurrency=1)
    service = app.service
    calling = await ask(app, ALICE, "one")
    await provider.calls(1)
    waiting = await ask(app, ALICE, "two")
    before = [await job(app, calling.job_id), await job(app, waiting.job_id)]

    for target in (calling, waiting):
        with pytest.raises(NotAllowed) as refused:
            await service.cancel(target.job_id, ANNA)
        assert refused.value.user_message == texts.ONLY_OWNER_CANCELS
        # Same user id on another platform is someone else too.
        with pytest.raises(NotAllowed):
            await service.cancel(target.job_id, Requester("slack", "111", "T1", "C1"))
    assert [await job(app, calling.job_id), await job(app, waiting.job_id)] == before
    assert service.queue_length == 1

    provider.gates[0].set()
    await provider.calls(2)
    provider.gates[1].set()
    for target in (calling, waiting):
        assert (await target.task).images
        assert (await job(app, target.job_id)).cancelled_by is None


async def test_an_admin_may_cancel_anyones_job(make_app: AppFactory) -> None:
    app, provider = await stepped_app(
        make_app, imagine_max_concurrency=1, imagine_admin_users=["discord:112"]
    )
    service = app.service
    calling = await ask(app, ALICE, "one")
    await provider.calls(1)
    waiting = await ask(app, BOB, "two")

    # Listed in IMAGINE_ADMIN_USERS.
    assert await service.cancel(waiting.job_id, ANNA) == ""
    with pytest.raises(JobCancelled) as by_listed:
        await waiting.task
    assert by_listed.value.by == "112"
    assert (await job(app, waiting.job_id)).cancelled_by == "discord:112"

    # The platform says so (a moderator's permission), though the settings don't list them.
    with pytest.raises(NotAllowed):
        await service.cancel(calling.job_id, MOD)
    assert await service.cancel(calling.job_id, MOD, admin=True) == ""
    with pytest.raises(JobCancelled) as by_mod:
        await calling.task
    assert by_mod.value.by == "113"
    ended = await job(app, calling.job_id)
    assert (ended.status, ended.cancelled_by, ended.charged_images) == ("failed", "discord:113", 0)


async def test_an_unknown_job_cannot_be_cancelled(make_app: AppFactory) -> None:
    app = await make_app()
    with pytest.raises(JobNotFound) as missing:
        await app.service.cancel("no-such-job", ALICE)
    assert missing.value.user_message == JobNotFound().user_message
    with pytest.raises(JobNotFound):
        await app.service.cancel("no-such-job", ALICE, admin=True)


# --- a shutdown is not a cancel ---------------------------------------------------------------


async def test_a_shutdown_still_interrupts_with_cancelled_error(make_app: AppFactory) -> None:
    app, provider = await stepped_app(make_app, imagine_max_concurrency=1)
    calling = await ask(app, ALICE, "one")
    await provider.calls(1)
    waiting = await ask(app, ALICE, "two")
    for target in (calling, waiting):
        target.task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await target.task
        ended = await job(app, target.job_id)
        assert (ended.status, ended.error, ended.cancelled_by) == ("failed", "cancelled", None)
        assert ended.charged_images == 0
    assert app.service.queue_length == 0


async def test_a_shutdown_arriving_with_a_cancel_is_still_a_shutdown(make_app: AppFactory) -> None:
    app, provider = await stepped_app(make_app)
    calling = await ask(app, ALICE, "one")
    await provider.calls(1)
    assert await app.service.cancel(calling.job_id, ALICE) == ""
    calling.task.cancel()  # the bot stops before the job saw its cancel
    with pytest.raises(asyncio.CancelledError):
        await calling.task
    ended = await job(app, calling.job_id)
    assert (ended.status, ended.charged_images) == ("failed", 0)


# --- what the requester sees ------------------------------------------------------------------


async def test_run_job_shows_the_cancel_on_the_jobs_own_message(make_app: AppFactory) -> None:
    app, provider = await stepped_app(make_app)
    presenter = Recording()
    task = asyncio.create_task(run_job(app.service, Generate(ALICE, "a red fox"), presenter))
    await provider.calls(1)
    job_id = presenter.views[0].job_id
    assert job_id is not None

    assert await app.service.cancel(job_id, ALICE) == ""
    assert await task is None
    [failure] = presenter.failures
    assert failure.kind == "cancelled"
    assert failure.in_place
    assert failure.message == "cancelled by @111 — nothing was charged"
    assert failure.state == failure.message
    assert failure.job_id == job_id
    assert isinstance(failure.error, JobCancelled)
    assert presenter.results == []
    assert presenter.calls[-1] == "failure"


async def test_run_job_names_the_admin_who_cancelled(make_app: AppFactory) -> None:
    app, provider = await stepped_app(make_app, imagine_max_concurrency=1)
    first = await ask(app, ALICE, "one")
    await provider.calls(1)
    presenter = Recording()
    task = asyncio.create_task(run_job(app.service, Generate(ALICE, "two"), presenter))
    await asyncio.wait_for(presenter.opened.wait(), timeout=10)
    job_id = presenter.views[0].job_id
    assert job_id is not None
    await until(lambda: app.service.queue_length == 1, "the second job waits")

    assert await app.service.cancel(job_id, MOD, admin=True) == ""
    assert await task is None
    [failure] = presenter.failures
    assert failure.kind == "cancelled"
    assert failure.message == "cancelled by @113 — nothing was charged"
    provider.gates[0].set()
    await first.task


# --- a cancel that lands while the job is already failing -------------------------------------


async def test_a_cancel_while_a_failure_is_being_recorded_still_ends_the_job_refunded(
    make_app: AppFactory, openai_fake: FakeOpenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = await make_app(imagine_user_limit="10/day")
    recording = asyncio.Event()
    go_on = asyncio.Event()
    fail = app.store.fail

    async def slow_fail(job_id: str, error: str, **kwargs: Any) -> None:
        # The ending waits its turn for the database, as it does when others are writing.
        recording.set()
        await go_on.wait()
        await fail(job_id, error, **kwargs)

    monkeypatch.setattr(app.store, "fail", slow_fail)
    openai_fake.fail_next("moderation_blocked")
    blocked = await ask(app, ALICE, "something blocked")
    await asyncio.wait_for(recording.wait(), timeout=10)
    await app.service.cancel(blocked.job_id, ALICE)
    go_on.set()
    outcome = await asyncio.gather(blocked.task, return_exceptions=True)
    ended = await job(app, blocked.job_id)
    assert (ended.status, ended.charged_images, ended.charged_cost) == ("failed", 0, 0)
    assert isinstance(outcome[0], UserFacingError), outcome


# --- under load -------------------------------------------------------------------------------


async def test_half_of_twenty_jobs_cancelled_at_random_moments_leave_exact_totals(
    make_app: AppFactory,
) -> None:
    app, provider = await stepped_app(
        make_app,
        imagine_max_concurrency=2,
        imagine_user_queue=50,
        imagine_user_limit="100/day",
        imagine_user_budget="50/day",
    )
    service = app.service
    rng = random.Random(20261202)
    people = [ALICE, ANNA, BOB, BEA]
    owners = [rng.choice(people) for _ in range(20)]
    asked = [await ask(app, owners[i], f"job {i}") for i in range(20)]
    doomed = set(rng.sample(range(20), 10))
    pending = sorted(doomed)

    def live() -> list[int]:
        return [i for i in range(20) if not asked[i].task.done()]

    def gate_of(i: int) -> asyncio.Event | None:
        prompt = f"job {i}"
        if prompt not in provider.prompts:
            return None
        return provider.gates[provider.prompts.index(prompt)]

    def held() -> list[int]:
        return [i for i in live() if (g := gate_of(i)) is not None and not g.is_set()]

    def quiet() -> bool:
        # Every job is done, held at the provider, or waiting with no slot free.
        running = live()
        released = [i for i in running if (g := gate_of(i)) is not None and g.is_set()]
        return not released and len(held()) == min(2, len(running))

    cancelled_in_line = cancelled_on_wire = 0
    while live():
        # Most moves wait for the queue to settle; some land while a slot is changing hands.
        if rng.random() < 0.75:
            await until(quiet, "the queue settles")
        releasable = [i for i in held() if i not in doomed]
        if pending and (not releasable or rng.random() < 0.5):
            target = pending.pop(rng.randrange(len(pending)))
            if target in held():
                cancelled_on_wire += 1
            elif gate_of(target) is None:
                cancelled_in_line += 1
            assert await service.cancel(asked[target].job_id, owners[target]) == ""
        elif releasable:
            gate = gate_of(rng.choice(releasable))
            assert gate is not None
            gate.set()
        else:
            # Only the ending of cancelled jobs is left to happen before a slot passes on.
            await until(
                lambda: any(i not in doomed for i in held()) or not live(),
                "a job that may finish reaches the provider",
            )
    assert cancelled_in_line and cancelled_on_wire

    outcomes = await asyncio.gather(*(a.task for a in asked), return_exceptions=True)
    succeeded = {i: o for i, o in enumerate(outcomes) if isinstance(o, JobResult)}
    cancelled = {i for i, o in enumerate(outcomes) if isinstance(o, JobCancelled)}
    assert set(succeeded) == set(range(20)) - doomed
    assert cancelled == doomed

    rows = {
        str(r[0]): r[1:]
        for r in raw_rows(
            app.store.path,
            "SELECT id, status, cancelled_by, charged_images, charged_cost, cost_usd FROM jobs",
        )
    }
    assert len(rows) == 20
    for i, a in enumerate(asked):
        status, by, images, cost, billed = rows[a.job_id]
        if i in doomed:
            assert (status, by, images, cost) == ("failed", owners[i].key, 0, 0)
            # On the wire it keeps what OpenAI may bill; still in line it cost nothing.
            reached = f"job {i}" in provider.prompts
            expected = (await job(app, a.job_id)).options
            estimate = estimate_cost(expected, 0, len(f"job {i}")) if reached else 0.0
            assert billed == pytest.approx(estimate)
        else:
            assert (status, by, images) == ("succeeded", None, 1)
            assert cost == pytest.approx(succeeded[i].cost_usd)
    total_images = sum(int(str(r[2])) for r in rows.values())
    total_cost = sum(float(str(r[3])) for r in rows.values())
    assert total_images == 10
    assert total_cost == pytest.approx(sum(r.cost_usd for r in succeeded.values()))

    # The running totals admission reads agree with the sums by hand, for each person and all.
    rules = Rules(app.settings.user_limits, app.settings.user_budgets)
    for who in people:
        mine = [i for i in succeeded if owners[i] is who]
        by_hand = (len(mine), sum(succeeded[i].cost_usd for i in mine))
        counted = Counted("user", who.key, rules)
        uses = await app.store.rule_uses([counted])
        assert [u.used for u in uses if not u.dollars] == [by_hand[0]]
        assert [u.used for u in uses if u.dollars] == [pytest.approx(by_hand[1])]
        [(images, cost)] = raw_rows(
            app.store.path,
            "SELECT COALESCE(SUM(images), 0), COALESCE(SUM(cost), 0) FROM usage_buckets "
            "WHERE scope = ? AND span = ?",
            (bucket_key(counted), DAY_SPAN),
        )
        assert (images, cost) == (by_hand[0], pytest.approx(by_hand[1]))
    everyone = await app.store.rule_uses([Counted("total", "", rules)])
    assert [u.used for u in everyone] == [10, pytest.approx(total_cost)]

    # No slot leaked: two new jobs both reach the provider without anyone finishing.
    assert service.queue_length == 0
    after = [await ask(app, ALICE, "after 1"), await ask(app, BOB, "after 2")]
    await until(lambda: {"after 1", "after 2"} <= set(provider.prompts), "both new jobs start")
    assert [a.places() for a in after] == [[0], [0]]
    for name in ("after 1", "after 2"):
        provider.gates[provider.prompts.index(name)].set()
    for a in after:
        await a.task
