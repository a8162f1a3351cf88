"""Vary through the service and run_job against the fake OpenAI: an edit of a result's first
image with its prompt and options, counted against whoever asks for it."""

from __future__ import annotations

from typing import Any

import pytest

from bot import texts
from bot.app import App
from bot.commands import Generate, Overrides, Vary
from bot.errors import ContentBlocked, JobNotFound, LimitExceeded
from bot.models import JobRecord, JobResult, Requester
from bot.policy import Scope, parse_entry
from bot.presenting import run_job
from tests.core.presenter_kit import PlainMarkup, Recording
from tests.core.store_kit import raw_rows
from tests.fakes.app_fixtures import AppFactory
from tests.fakes.openai_checks import RecordedRequest
from tests.fakes.openai_server import FakeOpenAI

ALICE = Requester("discord", "111", "g1", "c1", "Alice")
ANNA = Requester("discord", "112", "g1", "c2", "Anna")
BOB = Requester("discord", "222", "g1", "c1", "Bob")


async def generate(app: App, who: Requester, prompt: str = "a red fox", **flags: Any) -> JobResult:
    request = await app.service.prepare(Generate(who, prompt, Overrides(**flags)))
    return await app.service.run(request)


async def job(app: App, job_id: str) -> JobRecord:
    found = await app.store.get_job(job_id)
    assert found is not None
    return found


async def set_rule(app: App, scope: Scope, target: str, name: str, value: str) -> None:
    await app.store.set_policy(parse_entry(scope, target, name, value), "cli:local")


def image_parts(sent: RecordedRequest) -> list[bytes]:
    return [f.data for f in sent.files if f.field in ("image", "image[]")]


def job_count(app: App) -> int:
    [(count,)] = raw_rows(app.store.path, "SELECT COUNT(*) FROM jobs")
    assert isinstance(count, int)
    return count


async def test_vary_edits_the_first_image_with_the_jobs_prompt_and_options(
    make_app: AppFactory, openai_fake: FakeOpenAI
) -> None:
    app = await make_app()
    original = await generate(
        app, ALICE, size="1024x1536", quality="low", output_format="webp", n=2
    )
    first, second = (await app.store.job_images(original.job_id))[:2]
    assert first.read_bytes() != second.read_bytes()

    presenter = Recording()
    varied_id = await run_job(app.service, Vary(BOB, original.job_id), presenter)
    assert varied_id is not None
    assert presenter.failures == []
    assert [r.job_id for r in presenter.results] == [varied_id]

    sent = openai_fake.requests[-1]
    assert sent.path == "/v1/images/edits"
    assert sent.problems == []
    assert image_parts(sent) == [first.read_bytes()]
    prompt = sent.form["prompt"]
    assert prompt == texts.variation("a red fox")
    assert prompt.startswith(texts.VARIATION) and "a red fox" in prompt
    assert (sent.form["size"], sent.form["quality"], sent.form["output_format"]) == (
        "1024x1536",
        "low",
        "webp",
    )
    assert sent.form["n"] == "2"
    assert len(presenter.results[0].images) == 2

    varied = await job(app, varied_id)
    assert varied.parent_job_id == original.job_id
    assert varied.is_edit and varied.source_count == 1
    assert varied.requester.key == BOB.key
    kept = varied.options
    assert (kept.size, kept.quality, kept.output_format, kept.n) == ("1024x1536", "low", "webp", 2)
    assert (varied.status, varied.charged_images) == ("succeeded", 2)


async def test_vary_is_counted_against_whoever_asks(
    make_app: AppFactory, openai_fake: FakeOpenAI
) -> None:
    app = await make_app(imagine_user_limit="2/day")
    original = await generate(app, ALICE, n=2)

    # Alice's images are used up, Bob's aren't: his Vary of her job is his.
    varied = await app.service.run(await app.service.prepare(Vary(BOB, original.job_id)))
    assert varied.request.requester == BOB
    rows = raw_rows(app.store.path, "SELECT user_key, charged_images FROM jobs ORDER BY created_at")
    assert rows == [("discord:111", 2), ("discord:222", 2)]

    with pytest.raises(LimitExceeded):
        await app.service.run(await app.service.prepare(Vary(ALICE, original.job_id)))
    with pytest.raises(LimitExceeded):
        await app.service.run(await app.service.prepare(Vary(BOB, varied.job_id)))
    assert len(openai_fake.requests) == 2


async def test_vary_of_a_job_without_images_or_unknown_is_not_found(
    make_app: AppFactory, openai_fake: FakeOpenAI
) -> None:
    app = await make_app()
    openai_fake.fail_next("moderation_blocked")
    with pytest.raises(ContentBlocked):
        await generate(app, ALICE, "something blocked")
    [(failed_id,)] = raw_rows(app.store.path, "SELECT id FROM jobs")
    assert isinstance(failed_id, str)
    made = await generate(app, ALICE)
    for stored in await app.store.job_images(made.job_id):
        stored.path.unlink()  # pruned from disk since
    sent, rows = len(openai_fake.requests), job_count(app)

    for missing in (failed_id, made.job_id, "no-such-job"):
        with pytest.raises(JobNotFound) as not_found:
            await app.service.prepare(Vary(BOB, missing))
        assert not_found.value.user_message == JobNotFound().user_message

    presenter = Recording()
    assert await run_job(app.service, Vary(BOB, "no-such-job"), presenter) is None
    [failure] = presenter.failures
    assert failure.kind == "refused"
    assert isinstance(failure.error, JobNotFound)
    assert failure.message == texts.refusal(failure.error, PlainMarkup())
    assert "can't find that image" in failure.message
    assert presenter.calls == ["failure"]  # refused before any message opened
    assert (len(openai_fake.requests), job_count(app)) == (sent, rows)


async def test_vary_takes_the_channels_model_and_moderation_but_keeps_the_jobs_look(
    make_app: AppFactory, openai_fake: FakeOpenAI
) -> None:
    app = await make_app()
    original = await generate(app, ALICE, size="1024x1024", quality="low")
    for name, value in (
        ("model", "gpt-image-1"),
        ("moderation", "low"),
        ("size", "1536x1024"),
        ("quality", "high"),
        ("format", "jpg"),
    ):
        await set_rule(app, "channel", "discord:c2", name, value)

    there = await app.service.prepare(Vary(ANNA, original.job_id))
    options = there.options
    assert (options.model, options.moderation) == ("gpt-image-1", "low")
    assert (options.size, options.quality, options.output_format) == ("1024x1024", "low", "png")
    await app.service.run(there)
    sent = openai_fake.requests[-1]
    assert sent.path == "/v1/images/edits"
    assert (sent.form["model"], sent.form["size"], sent.form["quality"]) == (
        "gpt-image-1",
        "1024x1024",
        "low",
    )
    assert "moderation" not in sent.form  # the edit form has no such field

    # Where the channel sets nothing the job's own model and moderation stay.
    here = await app.service.prepare(Vary(BOB, original.job_id))
    assert (here.options.model, here.options.moderation) == ("gpt-image-2", "auto")
    assert (here.options.size, here.options.quality) == ("1024x1024", "low")


def test_a_variation_of_a_variation_says_vary_once() -> None:
    once = texts.variation("a red fox")
    assert texts.variation(once) == once
    assert once.count(texts.VARIATION) == 1 and once.endswith("a red fox")
