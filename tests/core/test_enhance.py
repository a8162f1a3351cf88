"""Prompt help in a job: Enhance, Enhance & retry, and Rephrase and retry after a safety block."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from bot.commands import Generate, Retry
from bot.errors import ContentBlocked, InvalidRequest, NotAllowed, ProviderUnavailable
from bot.models import ImageRequest, JobResult, ProgressEvent, PromptRewritten, Requester
from bot.pricing import cost_from_usage
from bot.service import ImageService
from tests.core.store_kit import raw_rows
from tests.fakes.app_fixtures import AppFactory
from tests.fakes.openai_server import FakeOpenAI, chat_reply

ALICE = Requester("discord", "111", "g1", "c1")
BOB = Requester("discord", "222", "g1", "c1")
HELP = {"imagine_prompt_model": "gpt-4.1-mini", "imagine_prompt_price": "0.40,1.60"}


def image_prompts(fake: FakeOpenAI) -> list[str]:
    return [str((r.json or r.form).get("prompt")) for r in fake.requests]


async def run(service: ImageService, command: Any, events: list[ProgressEvent]) -> JobResult:
    request: ImageRequest = await service.prepare(command)

    async def heard(event: ProgressEvent) -> None:
        events.append(event)

    return await service.run(request, heard)


def rows(app: Any, sql: str, *params: object) -> list[tuple[object, ...]]:
    return raw_rows(app.store.path, sql, params)


async def test_enhance_rewrites_the_prompt_first_and_bills_the_rewrite_with_the_image(
    make_app: AppFactory, openai_fake: FakeOpenAI
) -> None:
    app = await make_app(**HELP)
    events: list[ProgressEvent] = []
    result = await run(app.service, Generate(ALICE, "a fox", enhance=True), events)

    assert len(openai_fake.chat_requests) == 1
    chat = openai_fake.chat_requests[0].json or {}
    assert chat["model"] == "gpt-4.1-mini"
    assert chat["messages"][-1] == {"role": "user", "content": "a fox"}
    assert image_prompts(openai_fake) == [chat_reply("a fox")]
    assert result.request.prompt == chat_reply("a fox")
    assert result.original_prompt == "a fox"
    assert any(isinstance(e, PromptRewritten) for e in events)

    answer = openai_fake.chat_requests[0].answer or {}
    usage = answer["usage"]
    rewrite = (usage["prompt_tokens"] * 0.40 + usage["completion_tokens"] * 1.60) / 1e6
    assert result.usage is not None
    image = cost_from_usage("gpt-image-2", result.usage)
    assert result.cost_usd == pytest.approx(image + rewrite)
    [(prompt, cost, charged)] = rows(
        app, "SELECT prompt, cost_usd, charged_cost FROM jobs WHERE id = ?", result.job_id
    )
    assert prompt == chat_reply("a fox")  # Regenerate repeats the rewrite
    assert cost == pytest.approx(image + rewrite) and charged == pytest.approx(cost)


async def test_enhance_without_prompt_help_is_refused_and_nothing_is_made(
    make_app: AppFactory, openai_fake: FakeOpenAI
) -> None:
    app = await make_app()
    with pytest.raises(InvalidRequest) as refused:
        await run(app.service, Generate(ALICE, "a fox", enhance=True), [])
    assert "Prompt help is off" in refused.value.user_message
    assert openai_fake.requests == [] and rows(app, "SELECT id FROM jobs") == []


async def test_a_failed_rewrite_ends_the_job_refunded_and_no_image_is_asked_for(
    make_app: AppFactory, openai_fake: FakeOpenAI
) -> None:
    app = await make_app(**HELP, openai_max_retries=1)
    openai_fake.fail_next_chat("server_error", times=2)
    with pytest.raises(ProviderUnavailable):
        await run(app.service, Generate(ALICE, "a fox", enhance=True), [])
    assert openai_fake.requests == []
    assert rows(app, "SELECT status, charged_images, charged_cost FROM jobs") == [("failed", 0, 0)]


async def test_enhance_and_retry_rewrites_a_stored_jobs_prompt_with_its_options(
    make_app: AppFactory, openai_fake: FakeOpenAI
) -> None:
    app = await make_app(**HELP)
    first = await run(app.service, Generate(ALICE, "a red boat"), [])
    assert openai_fake.chat_requests == []
    again = await run(app.service, Retry(BOB, first.job_id, enhance=True), [])
    assert image_prompts(openai_fake) == ["a red boat", chat_reply("a red boat")]
    assert again.request.options == first.request.options
    assert again.request.requester == BOB


async def test_after_a_block_the_rewrite_is_only_a_suggestion_until_it_is_confirmed(
    make_app: AppFactory, openai_fake: FakeOpenAI
) -> None:
    app = await make_app(**HELP)
    openai_fake.fail_next("moderation_blocked")
    with pytest.raises(ContentBlocked):
        await run(app.service, Generate(ALICE, "a spooky castle"), [])
    [(blocked,)] = rows(app, "SELECT id FROM jobs")
    assert isinstance(blocked, str)

    with pytest.raises(NotAllowed):
        await app.service.rephrase(blocked, BOB)
    suggestion = await app.service.rephrase(blocked, ALICE)
    assert suggestion.prompt == chat_reply("a spooky castle")
    assert suggestion.parent_job_id == blocked
    system = (openai_fake.chat_requests[-1].json or {})["messages"][0]["content"]
    assert "safety" in system.lower()
    # Nothing was sent again yet; the suggestion is charged what the rewrite cost, no image.
    assert len(openai_fake.requests) == 1
    [(status, images, cost)] = rows(
        app,
        "SELECT status, charged_images, charged_cost FROM jobs WHERE id = ?",
        suggestion.id,
    )
    assert (status, images) == ("succeeded", 0) and float(str(cost)) > 0

    with pytest.raises(NotAllowed):  # only the one it was shown to can send it
        await app.service.prepare(Retry(BOB, blocked, suggestion_id=suggestion.id))
    retried = await run(app.service, Retry(ALICE, blocked, suggestion_id=suggestion.id), [])
    assert image_prompts(openai_fake)[-1] == chat_reply("a spooky castle")
    assert retried.request.options.model == "gpt-image-2"
    # A suggestion of another job can't be used to retry this one.
    with pytest.raises(Exception, match="can't find"):
        await app.service.prepare(Retry(ALICE, retried.job_id, suggestion_id=suggestion.id))


async def test_a_prompt_being_rewritten_holds_no_slot_meanwhile(
    make_app: AppFactory, openai_fake: FakeOpenAI
) -> None:
    app = await make_app(**HELP, imagine_max_concurrency=1)
    openai_fake.chat_gate = asyncio.Event()  # the rewrite takes its time
    slow = asyncio.create_task(run(app.service, Generate(ALICE, "a fox", enhance=True), []))
    await openai_fake.wait_for(lambda r: True, chat=True)
    # The only slot is free for Bob while Alice's prompt is still being rewritten.
    quick = await asyncio.wait_for(run(app.service, Generate(BOB, "a boat"), []), timeout=10)
    assert image_prompts(openai_fake) == ["a boat"]
    openai_fake.chat_gate.set()
    await slow
    assert image_prompts(openai_fake) == ["a boat", chat_reply("a fox")]
    assert quick.request.requester == BOB
