"""The metrics endpoints over real HTTP, after jobs run through the service and the fake OpenAI."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from bot import metrics
from bot.errors import JobCancelled, LimitExceeded, ProviderUnavailable
from bot.models import ImageRequest, JobRecord, Requester, SourceImage
from bot.pricing import estimate_cost
from tests.core.test_service import png, request
from tests.fakes.app_fixtures import AppFactory, ProviderGate
from tests.fakes.cli_process import start_cli
from tests.fakes.discord_server import FakeDiscord
from tests.fakes.openai_server import FakeOpenAI

ALICE = Requester(platform="discord", user_id="111", team_id="g1", channel_id="c1")
BOB = Requester(platform="slack", user_id="U222", team_id="T1", channel_id="C1")

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@pytest.fixture
def ready_flags() -> metrics.Readiness:
    return metrics.Readiness()


@pytest.fixture
def server(ready_flags: metrics.Readiness) -> Iterator[metrics.MetricsServer]:
    served = metrics.serve(0, ready_flags, host="127.0.0.1")
    try:
        yield served
    finally:
        served.close()


@pytest.fixture
async def http(server: metrics.MetricsServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}") as client:
        yield client


async def scrape(http: httpx.AsyncClient) -> Samples:
    answer = await http.get("/metrics")
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(answer.text)
        for sample in family.samples
    }


def moved(before: Samples, after: Samples, name: str, **labels: str) -> float:
    key = (name, frozenset(labels.items()))
    return after.get(key, 0.0) - before.get(key, 0.0)


async def test_scraped_counters_move_by_exactly_the_jobs_run(
    make_app: AppFactory, http: httpx.AsyncClient
) -> None:
    app = await make_app(imagine_user_limit="2/hour")
    before = await scrape(http)

    first = await app.service.run(request(app.service, size="1024x1024", quality="low"))
    second = await app.service.run(request(app.service, size="1024x1024", quality="low"))
    with pytest.raises(LimitExceeded):
        await app.service.run(request(app.service))
    after = await scrape(http)

    generate = {"platform": "discord", "kind": "generate"}
    assert moved(before, after, "imagine_jobs_started_total", **generate) == 2
    assert moved(before, after, "imagine_jobs_finished_total", **generate, outcome="succeeded") == 2
    assert moved(before, after, "imagine_jobs_finished_total", **generate, outcome="refused") == 1
    assert moved(before, after, "imagine_jobs_finished_total", **generate, outcome="failed") == 0
    assert moved(before, after, "imagine_job_duration_seconds_count", **generate) == 2
    assert moved(before, after, "imagine_provider_latency_seconds_count") == 2
    spent = moved(before, after, "imagine_spent_dollars_total", platform="discord", team="g1")
    assert first.cost_usd > 0
    assert spent == pytest.approx(first.cost_usd + second.cost_usd)
    assert after[("imagine_provider_calls_in_flight", frozenset())] == 0
    assert after[("imagine_queue_depth", frozenset())] == 0


async def test_an_edit_is_counted_as_an_edit_on_its_platform(
    make_app: AppFactory, http: httpx.AsyncClient
) -> None:
    app = await make_app()
    before = await scrape(http)
    source = SourceImage(data=png(), filename="in.png", mime="image/png")
    ask = ImageRequest(BOB, "make it blue", app.service.options(), sources=(source,))
    await app.service.run(ask)
    after = await scrape(http)

    edit = {"platform": "slack", "kind": "edit"}
    assert moved(before, after, "imagine_jobs_started_total", **edit) == 1
    assert moved(before, after, "imagine_jobs_finished_total", **edit, outcome="succeeded") == 1
    generate = {"platform": "slack", "kind": "generate"}
    assert moved(before, after, "imagine_jobs_started_total", **generate) == 0


async def test_provider_errors_are_counted_by_class_and_the_job_as_failed(
    make_app: AppFactory, openai_fake: FakeOpenAI, http: httpx.AsyncClient
) -> None:
    app = await make_app()
    before = await scrape(http)
    openai_fake.fail_next("moderation_blocked")
    with pytest.raises(Exception, match="safety system"):
        await app.service.run(request(app.service))
    after = await scrape(http)

    assert moved(before, after, "imagine_provider_errors_total", error="ContentBlocked") == 1
    generate = {"platform": "discord", "kind": "generate"}
    assert moved(before, after, "imagine_jobs_finished_total", **generate, outcome="failed") == 1
    assert moved(before, after, "imagine_provider_latency_seconds_count") == 1


def test_an_error_with_a_status_or_code_carries_it_in_its_label() -> None:
    class Answered(Exception):
        status_code = 503

    class Coded(Exception):
        code = "rate_limit_exceeded"

    assert metrics.error_label(Answered()) == "Answered:503"
    assert metrics.error_label(Coded()) == "Coded:rate_limit_exceeded"
    assert metrics.error_label(ProviderUnavailable()) == "ProviderUnavailable"


async def _on_the_wire(task: asyncio.Task[object]) -> None:
    """Until the held call is in flight (the gate is reached), or the job ended early."""
    for _ in range(10_000):
        if (metrics.REGISTRY.get_sample_value("imagine_provider_calls_in_flight") or 0) >= 1:
            return
        if task.done():
            return
        await asyncio.sleep(0.001)
    raise AssertionError("the call never went out")


async def test_cancelled_and_interrupted_jobs_have_their_own_outcomes(
    make_app: AppFactory, http: httpx.AsyncClient
) -> None:
    app = await make_app()
    ProviderGate.hold(app)
    admitted: list[JobRecord] = []

    async def note(job: JobRecord, place: int) -> None:
        admitted.append(job)

    before = await scrape(http)
    ask = request(app.service, size="1024x1024", quality="low")
    cancelled = asyncio.create_task(app.service.run(ask, on_admitted=note))
    await _on_the_wire(cancelled)
    assert await app.service.cancel(admitted[0].id, ALICE) == ""
    with pytest.raises(JobCancelled):
        await cancelled
    stopped = asyncio.create_task(app.service.run(ask, on_admitted=note))
    await _on_the_wire(stopped)
    stopped.cancel()
    with pytest.raises(asyncio.CancelledError):
        await stopped
    after = await scrape(http)

    generate = {"platform": "discord", "kind": "generate"}
    finished = "imagine_jobs_finished_total"
    assert moved(before, after, "imagine_jobs_started_total", **generate) == 2
    assert moved(before, after, finished, **generate, outcome="cancelled") == 1
    assert moved(before, after, finished, **generate, outcome="interrupted") == 1
    assert moved(before, after, finished, **generate, outcome="succeeded") == 0
    # The cancelled call was on the wire: what it may cost is counted as spent.
    spent = moved(before, after, "imagine_spent_dollars_total", platform="discord", team="g1")
    assert spent == pytest.approx(estimate_cost(ask.options, 0, len(ask.prompt)))
    assert after[("imagine_provider_calls_in_flight", frozenset())] == 0


async def test_healthz_answers_ok_while_the_process_runs(http: httpx.AsyncClient) -> None:
    answer = await http.get("/healthz")
    assert (answer.status_code, answer.text) == (200, "ok\n")
    assert (await http.get("/nothing-here")).status_code == 404


async def test_readyz_names_the_failing_checks_until_the_store_answers(
    http: httpx.AsyncClient, ready_flags: metrics.Readiness
) -> None:
    ready_flags.set("discord", True)
    answer = await http.get("/readyz")
    assert answer.status_code == 503
    assert answer.json()["failing"] == ["store"]

    ready_flags.store_ok(True)
    answer = await http.get("/readyz")
    assert answer.status_code == 200
    checks = {"store": True, "discord": True}
    assert answer.json() == {"ready": True, "failing": [], "checks": checks}

    ready_flags.set("discord", False)
    answer = await http.get("/readyz")
    assert (answer.status_code, answer.json()["failing"]) == (503, ["discord"])


def test_a_store_read_too_long_ago_is_not_ready() -> None:
    now = [100.0]
    flags = metrics.Readiness(stale_s=15.0, clock=lambda: now[0])
    flags.store_ok(True)
    assert flags() == {"store": True}
    now[0] += 16.0
    assert flags() == {"store": False}
    flags.store_ok(True)
    flags.store_ok(False)
    assert flags() == {"store": False}


async def test_watching_the_real_store_makes_it_ready_and_a_closed_one_not(
    make_app: AppFactory,
) -> None:
    app = await make_app()
    flags = metrics.Readiness()
    watcher = asyncio.create_task(
        metrics.watch_store(lambda: app.store.get_job(""), flags, every_s=0.01)
    )
    try:
        for _ in range(10_000):
            if flags()["store"]:
                break
            await asyncio.sleep(0.001)
        assert flags()["store"]
        await app.store.close()
        for _ in range(10_000):
            if not flags()["store"]:
                break
            await asyncio.sleep(0.001)
        assert not flags()["store"]
    finally:
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_run_serves_metrics_and_health_while_it_runs_and_logs_json(
    openai_fake: FakeOpenAI, discord_fake: FakeDiscord, tmp_path: Path
) -> None:
    port = _free_port()
    process = await start_cli(
        "run",
        "discord",
        cwd=tmp_path,
        OPENAI_API_KEY=openai_fake.api_key,
        OPENAI_BASE_URL=openai_fake.base_url,
        IMAGINE_PARTIAL_IMAGES="0",
        IMAGINE_LOG_FORMAT="json",
        IMAGINE_METRICS_PORT=str(port),
        DISCORD_TOKEN=discord_fake.token,
        DISCORD_API_BASE_URL=discord_fake.api_url,
        DISCORD_GATEWAY_URL=discord_fake.gateway_url,
    )
    try:
        await discord_fake.wait_until(lambda: discord_fake.connected, timeout=30)
        interaction = await discord_fake.slash(discord_fake.alice, prompt="a kite")
        assert (await discord_fake.result_of(interaction))["attachments"]
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            assert (await http.get("/healthz")).status_code == 200
            ready = await http.get("/readyz")
            for _ in range(300):
                if ready.status_code == 200:
                    break
                await asyncio.sleep(0.1)
                ready = await http.get("/readyz")
            assert ready.status_code == 200, ready.text
            assert ready.json()["checks"]["store"] is True
            samples = await scrape(http)
        generate = {"platform": "discord", "kind": "generate"}
        assert moved({}, samples, "imagine_jobs_started_total", **generate) == 1
        succeeded = {**generate, "outcome": "succeeded"}
        assert moved({}, samples, "imagine_jobs_finished_total", **succeeded) == 1
        process.send_signal(signal.SIGTERM)
        _, err = await asyncio.wait_for(process.communicate(), timeout=30)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    log = err.decode()
    assert process.returncode == 0, log[-2000:]
    entries = [json.loads(line) for line in log.splitlines()]
    assert any(entry["message"] == "starting: discord" for entry in entries)
    assert any(entry["message"].startswith(f"metrics on port {port}") for entry in entries)
    for secret in (openai_fake.api_key, discord_fake.token):
        assert secret not in log
