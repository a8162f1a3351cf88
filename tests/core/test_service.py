"""The service end to end against the fake OpenAI server: admission, queue, progress, refunds."""

from __future__ import annotations

import asyncio
import io
from collections.abc import Sequence
from typing import Any

import pytest
from PIL import Image

from bot.commands import Overrides
from bot.errors import (
    BudgetExceeded,
    ContentBlocked,
    InternalError,
    InvalidRequest,
    JobNotFound,
    LimitExceeded,
    ProviderUnavailable,
)
from bot.fair_queue import FairQueue
from bot.models import (
    Finished,
    ImageRequest,
    PartialImage,
    ProgressEvent,
    ProviderResult,
    Queued,
    Requester,
    SourceImage,
    Started,
)
from bot.pricing import cost_from_usage, estimate_cost
from bot.service import ImageService
from tests.core.service_kit import Recorder
from tests.fakes.app_fixtures import AppFactory
from tests.fakes.openai_server import FakeOpenAI

ALICE = Requester(platform="discord", user_id="111", team_id="g1", channel_id="c1")
BOB = Requester(platform="slack", user_id="U222", team_id="T1", channel_id="C1")


def png(width: int = 64, height: int = 64, colour: str = "red") -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), colour).save(buffer, "PNG")
    return buffer.getvalue()


def request(
    service: ImageService, prompt: str = "a red fox", who: Requester = ALICE, **options: Any
) -> ImageRequest:
    return ImageRequest(requester=who, prompt=prompt, options=service.options(Overrides(**options)))


async def test_generation_delivers_real_images_and_records_the_job(
    make_app: AppFactory, openai_fake: FakeOpenAI
) -> None:
    app = await make_app()
    result = await app.service.run(request(app.service, size="1536x1024", quality="low", n=2))

    assert len(result.images) == 2
    for stored in result.images:
        with Image.open(stored.path) as image:
            assert image.size == (1536, 1024)
            assert image.format == "PNG"
    # billed from the usage the API returned (not the estimate), at the model's prices
    assert result.usage is not None and result.usage.output_tokens > 0
    assert result.cost_usd == pytest.approx(cost_from_usage("gpt-image-2", result.usage))
    assert result.cost_usd != pytest.approx(estimate_cost(result.request.options))
    job = await app.store.get_job(result.job_id)
    assert job is not None
    assert job.status == "succeeded"
    assert job.charged_images == 2
    assert job.cost_usd == pytest.approx(result.cost_usd)
    sent = openai_fake.requests[-1]
    assert sent.path == "/v1/images/generations"
    assert sent.json is not None
    assert sent.json["model"] == "gpt-image-2"
    assert sent.json["n"] == 2
    assert sent.json["user"] == ALICE.hashed_id
    assert "response_format" not in sent.json


async def test_progress_reports_queue_start_partials_and_finish(make_app: AppFactory) -> None:
    app = await make_app(imagine_partial_images=2)
    recorder = Recorder()
    await app.service.run(request(app.service, size="1024x1024"), recorder)

    kinds = recorder.kinds()
    assert kinds[0] == "Queued"
    assert kinds[1] == "Started"
    assert kinds.count("PartialImage") == 2
    assert kinds[-1] == "Finished"
    partials = [event for event in recorder.events if isinstance(event, PartialImage)]
    assert [p.index for p in partials] == [0, 1]
    Image.open(io.BytesIO(partials[0].data)).verify()
    finished = recorder.events[-1]
    assert isinstance(finished, Finished)
    assert finished.status == "succeeded"


async def test_queue_positions_are_first_come_first_served(
    make_app: AppFactory, openai_fake: FakeOpenAI
) -> None:
    app = await make_app(imagine_max_concurrency=1)
    openai_fake.answer_gate = asyncio.Event()  # the first job holds the only slot until released
    recorders = [Recorder() for _ in range(3)]
    tasks = []
    for place, recorder in enumerate(recorders):
        prompt = f"job {place}"
        tasks.append(asyncio.create_task(app.service.run(request(app.service, prompt), recorder)))
        # each one has taken its place in line before the next one asks
        await asyncio.wait_for(recorder.heard(Queued), timeout=5)
    openai_fake.answer_gate.set()
    await asyncio.wait_for(asyncio.gather(*tasks), timeout=10)

    def positions(recorder: Recorder) -> list[int]:
        return [e.position for e in recorder.events if isinstance(e, Queued)]

    assert positions(recorders[0]) == [0]
    assert positions(recorders[1]) == [1]
    assert positions(recorders[2]) == [2, 1]
    assert [r.json["prompt"] for r in openai_fake.requests if r.json] == ["job 0", "job 1", "job 2"]


async def test_fair_queue_never_runs_more_than_its_size() -> None:
    slots = FairQueue(3)
    running = 0
    peak = 0

    async def report(position: int) -> None:
        return None

    async def job() -> None:
        nonlocal running, peak
        await slots.acquire(f"cli:{id(asyncio.current_task())}", report)
        try:
            running += 1
            peak = max(peak, running)
            await asyncio.sleep(0)
            await asyncio.sleep(0)
        finally:
            running -= 1
            slots.release()

    await asyncio.gather(*(job() for _ in range(50)))
    assert peak == 3


async def test_limit_counts_images_and_refunds_failures(
    make_app: AppFactory, openai_fake: FakeOpenAI
) -> None:
    app = await make_app(imagine_user_limit="3/hour")
    await app.service.run(request(app.service, n=2))

    with pytest.raises(LimitExceeded) as refused:
        await app.service.run(request(app.service, n=2))
    assert refused.value.limit == 3
    assert refused.value.retry_after > 3500
    assert "3 images per hour" in refused.value.user_message

    openai_fake.fail_next("moderation_blocked", categories=["violence"])
    with pytest.raises(ContentBlocked) as blocked:
        await app.service.run(request(app.service, "something nasty", n=1))
    assert blocked.value.categories == ("violence",)
    assert "violence" in blocked.value.user_message

    # The blocked request gave its image back: one is still left.
    result = await app.service.run(request(app.service, n=1))
    assert len(result.images) == 1
    # Other users have their own limit.
    await app.service.run(request(app.service, who=BOB, n=3))


async def test_admins_are_exempt(make_app: AppFactory) -> None:
    app = await make_app(imagine_user_limit="1/day", imagine_admin_users=["discord:111"])
    for _ in range(3):
        await app.service.run(request(app.service))
    await app.service.run(request(app.service, who=BOB))
    with pytest.raises(LimitExceeded):
        await app.service.run(request(app.service, who=BOB))


async def test_budget_refuses_once_the_dollars_are_spent(make_app: AppFactory) -> None:
    # One low-quality 1024x1024 image costs well under a cent; a high one reserves ~$0.21.
    app = await make_app(imagine_user_budget="0.25/day")
    await app.service.run(request(app.service, size="1024x1024", quality="high"))
    with pytest.raises(BudgetExceeded) as refused:
        await app.service.run(request(app.service, size="1024x1024", quality="high"))
    assert "$0.25 per day" in refused.value.user_message
    # A cheap one still fits: the first job's reservation was settled to its real cost.
    await app.service.run(request(app.service, size="1024x1024", quality="low"))


async def test_cancelling_the_caller_fails_and_refunds_the_job(
    make_app: AppFactory, openai_fake: FakeOpenAI
) -> None:
    app = await make_app(imagine_user_limit="1/hour")
    openai_fake.latency = 30
    recorder = Recorder()
    task = asyncio.create_task(app.service.run(request(app.service), recorder))
    await openai_fake.wait_for(count=1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    job_id = recorder.events[0].job_id
    job = await app.store.get_job(job_id)
    assert job is not None
    assert job.status == "failed"
    assert job.charged_images == 0
    openai_fake.latency = 0
    await app.service.run(request(app.service))  # the refunded image can be used


async def test_cancelling_a_job_waiting_in_line_refunds_it_and_frees_its_place(
    make_app: AppFactory, openai_fake: FakeOpenAI
) -> None:
    app = await make_app(imagine_max_concurrency=1, imagine_user_limit="2/hour")
    openai_fake.answer_gate = asyncio.Event()
    first = asyncio.create_task(app.service.run(request(app.service, "one")))
    await openai_fake.wait_for(count=1)
    waiting = Recorder()
    second = asyncio.create_task(app.service.run(request(app.service, "two"), waiting))
    queued = await asyncio.wait_for(waiting.heard(Queued), timeout=5)
    assert isinstance(queued, Queued) and queued.position == 1
    second.cancel()
    with pytest.raises(asyncio.CancelledError):
        await second
    job = await app.store.get_job(waiting.events[0].job_id)
    assert job is not None
    assert (job.status, job.charged_images) == ("failed", 0)
    assert waiting.kinds() == ["Queued", "Finished"]

    openai_fake.answer_gate.set()
    await asyncio.wait_for(first, timeout=10)
    # the cancelled job gave back both its image and its place: a third one fits and starts at once
    third = Recorder()
    await asyncio.wait_for(app.service.run(request(app.service, "three"), third), timeout=10)
    assert [e.position for e in third.events if isinstance(e, Queued)] == [0]
    assert [r.json["prompt"] for r in openai_fake.requests if r.json] == ["one", "three"]


async def test_options_are_checked_before_anything_is_charged(make_app: AppFactory) -> None:
    app = await make_app(imagine_user_limit="1/hour")
    with pytest.raises(InvalidRequest, match=r"^You can ask for 1 to 4 images at once\.$"):
        await app.service.run(request(app.service, n=5))
    with pytest.raises(InvalidRequest, match=r"^You can ask for 1 to 4 images at once\.$"):
        await app.service.run(request(app.service, n=0))
    with pytest.raises(InvalidRequest, match="divisible by 16"):
        await app.service.run(request(app.service, size="1000x1000"))
    with pytest.raises(InvalidRequest, match="describe the image"):
        await app.service.run(request(app.service, prompt="   "))
    await app.service.run(request(app.service))


async def test_bad_attachment_is_named_and_nothing_is_charged(
    make_app: AppFactory, openai_fake: FakeOpenAI
) -> None:
    app = await make_app(imagine_user_limit="1/hour")
    broken = ImageRequest(
        requester=ALICE,
        prompt="make it blue",
        options=app.service.options(),
        sources=(
            SourceImage(png(), "cat.png", ""),
            SourceImage(b"%PDF-1.7 not an image", "notes.pdf", ""),
        ),
    )
    with pytest.raises(Exception) as refused:
        await app.service.run(broken)
    assert "notes.pdf" in str(refused.value)
    assert openai_fake.requests == []
    await app.service.run(request(app.service))


class ExplodingProvider:
    """A provider port whose call breaks in a way nobody planned for."""

    async def create_images(
        self, request: ImageRequest, *, on_partial: object = None
    ) -> ProviderResult:
        raise RuntimeError("boom")

    async def aclose(self) -> None:
        return None


@pytest.mark.allow_error_logs
async def test_unexpected_failure_is_logged_with_the_job_id_and_refunded(
    make_app: AppFactory, caplog: pytest.LogCaptureFixture
) -> None:
    app = await make_app(imagine_user_limit="1/hour")
    app.service.provider = ExplodingProvider()
    with pytest.raises(InternalError) as failed:
        await app.service.run(request(app.service))
    job_id = failed.value.job_id
    assert job_id in failed.value.user_message
    assert "boom" not in failed.value.user_message
    assert any(job_id in record.getMessage() for record in caplog.records)
    job = await app.store.get_job(job_id)
    assert job is not None
    assert job.status == "failed"
    assert job.charged_images == 0


async def test_edit_chain_uses_each_result_as_the_next_input(
    make_app: AppFactory, openai_fake: FakeOpenAI
) -> None:
    app = await make_app()
    first = await app.service.run(request(app.service, size="1024x1024"))
    job_id = first.job_id
    for step in ("make it night", "add stars", "add a moon"):
        edit = await app.service.edit_request(job_id, BOB, step)
        result = await app.service.run(edit)
        sent = openai_fake.requests[-1]
        assert sent.path == "/v1/images/edits"
        assert sent.form["prompt"] == step
        [image_part] = [f for f in sent.files if f.field in ("image", "image[]")]
        previous = (await app.store.job_images(job_id))[0].read_bytes()
        assert image_part.data == previous
        job = await app.store.get_job(result.job_id)
        assert job is not None
        assert job.parent_job_id == job_id
        job_id = result.job_id


async def test_regenerate_after_restart_reads_the_job_from_the_store(
    make_app: AppFactory, openai_fake: FakeOpenAI
) -> None:
    app = await make_app()
    source = SourceImage(png(128, 128, "blue"), "blue.png", "")
    original = await app.service.run(
        ImageRequest(
            ALICE, "paint it gold", app.service.options(Overrides(quality="low")), sources=(source,)
        )
    )
    await app.aclose()

    restarted = await make_app()
    again = await restarted.service.regenerate_request(original.job_id, BOB)
    assert again.prompt == "paint it gold"
    assert again.options.quality == "low"
    assert again.requester == BOB
    assert [s.data for s in again.sources] == [source.data]
    await restarted.service.run(again)
    assert openai_fake.requests[-1].files[0].data == source.data

    with pytest.raises(JobNotFound):
        await restarted.service.regenerate_request("nope", BOB)


async def test_interrupted_jobs_are_recovered_once_per_process(make_app: AppFactory) -> None:
    app = await make_app(imagine_user_limit="1/hour")
    job = await app.store.admit(
        request(app.service),
        limits=app.settings.user_limits,
        budgets=(),
        estimated_cost=0.01,
        exempt=False,
    )
    await app.store.mark_running(job.id)
    await app.aclose()

    restarted = await make_app(imagine_user_limit="1/hour")
    first: Sequence[object] = await restarted.service.recover_interrupted()
    second = await restarted.service.recover_interrupted()
    assert [j.id for j in first] == [job.id] == [j.id for j in second]  # type: ignore[attr-defined]
    stored = await restarted.store.get_job(job.id)
    assert stored is not None
    assert stored.status == "interrupted"
    await restarted.service.run(request(restarted.service))  # refunded


async def test_a_broken_progress_display_does_not_fail_the_job(make_app: AppFactory) -> None:
    app = await make_app()

    async def broken(event: ProgressEvent) -> None:
        if isinstance(event, Started):
            raise ConnectionError("chat platform down")

    result = await app.service.run(request(app.service), broken)
    assert len(result.images) == 1


class EmptyProvider:
    """A provider port whose answer holds no image (an odd proxy, a broken compatible API)."""

    async def create_images(
        self, request: ImageRequest, *, on_partial: object = None
    ) -> ProviderResult:
        return ProviderResult(images=())

    async def aclose(self) -> None:
        return None


async def test_an_answer_without_images_is_unavailable_and_refunded(make_app: AppFactory) -> None:
    app = await make_app(imagine_user_limit="1/hour")
    app.service.provider = EmptyProvider()
    with pytest.raises(ProviderUnavailable, match="unavailable"):
        await app.service.run(request(app.service))
    app.service.provider = app.provider
    await app.service.run(request(app.service))  # the refunded image can be used


async def test_every_finished_job_logs_one_audit_line(
    make_app: AppFactory, openai_fake: FakeOpenAI, caplog: pytest.LogCaptureFixture
) -> None:
    app = await make_app()
    caplog.set_level("INFO", logger="bot.service")
    done = await app.service.run(
        request(app.service, "a secret birthday plan", size="1024x1024", quality="low")
    )
    openai_fake.fail_next("moderation_blocked")
    with pytest.raises(ContentBlocked):
        await app.service.run(request(app.service, "something blocked", who=BOB, quality="high"))
    openai_fake.latency = 30
    source = SourceImage(png(), "cat.png", "")
    task = asyncio.create_task(
        app.service.run(
            ImageRequest(ALICE, "paint it", app.service.options(Overrides(n=2)), sources=(source,))
        )
    )
    await openai_fake.wait_for(count=3)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("job finished")]
    assert all(r.levelname == "INFO" for r in caplog.records if "job finished" in r.getMessage())
    fields = [dict(part.split("=", 1) for part in line.split()[2:]) for line in lines]
    assert [(f["outcome"], f["platform"], f["kind"]) for f in fields] == [
        ("succeeded", "discord", "generate"),
        ("failed", "slack", "generate"),
        ("cancelled", "discord", "edit"),
    ]
    ok, blocked, cancelled = fields
    assert ok["job"] == done.job_id
    assert (ok["team"], ok["channel"], ok["user"]) == ("g1", "c1", "111")
    assert (ok["size"], ok["quality"], ok["n"], ok["images"]) == ("1024x1024", "low", "1", "1")
    assert float(ok["cost"]) == pytest.approx(done.cost_usd, abs=1e-4) and done.cost_usd > 0
    assert ok["duration"].endswith("s")
    assert (blocked["user"], blocked["quality"], blocked["reason"]) == (
        "U222",
        "high",
        "ContentBlocked",
    )
    assert (blocked["images"], float(blocked["cost"])) == ("0", 0.0)
    assert (cancelled["n"], cancelled["images"]) == ("2", "0")
    text = "\n".join(lines)
    for private in ("secret birthday", "something blocked", "paint it", openai_fake.api_key):
        assert private not in text
