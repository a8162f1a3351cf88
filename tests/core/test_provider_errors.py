"""OpenAIImages when things go wrong: faults, retries like the official SDK, error mapping, logs."""

from __future__ import annotations

import asyncio
import email.utils
import logging
import re
import time

import pytest

from bot.errors import (
    ContentBlocked,
    InvalidRequest,
    ProviderMisconfigured,
    ProviderUnavailable,
    QuotaExhausted,
)
from bot.openai_errors import RetryableError, UnreadableAnswer, map_error, retry_after_seconds
from bot.provider import OpenAIImages
from tests.fakes.openai_client import Factory, Partials, Sleeps, request
from tests.fakes.openai_server import FakeOpenAI

# --- broken streams ------------------------------------------------------------------------


async def test_a_cut_stream_after_a_preview_is_not_retried(
    openai_fake: FakeOpenAI, provider: OpenAIImages
) -> None:
    openai_fake.fail_next("stream_cut")
    partials = Partials()
    with pytest.raises(ProviderUnavailable):
        await provider.create_images(request(partial_images=2), on_partial=partials)
    assert len(openai_fake.requests) == 1
    assert len(partials.got) == 1


async def test_a_stream_cut_before_any_preview_is_not_retried(
    openai_fake: FakeOpenAI, provider: OpenAIImages
) -> None:
    # the stream had already answered 200: another attempt could bill a second generation
    openai_fake.fail_next("stream_cut", after=0)
    partials = Partials()
    with pytest.raises(UnreadableAnswer) as caught:
        await provider.create_images(request(partial_images=2), on_partial=partials)
    assert len(openai_fake.requests) == 1 and partials.got == []
    assert "broke off" in caught.value.user_message


@pytest.mark.parametrize("shape", ["both", "typed", "bare"])
async def test_an_error_frame_in_the_stream(
    openai_fake: FakeOpenAI, provider: OpenAIImages, shape: str
) -> None:
    openai_fake.fail_next("stream_error", shape=shape)
    with pytest.raises(ProviderUnavailable) as caught:
        await provider.create_images(request(partial_images=1), on_partial=Partials())
    assert len(openai_fake.requests) == 1
    assert "The server had an error" in caught.value.detail


@pytest.mark.parametrize("shape", ["both", "typed", "bare"])
async def test_a_safety_block_in_the_stream_names_its_category(
    openai_fake: FakeOpenAI, provider: OpenAIImages, shape: str
) -> None:
    openai_fake.fail_next("stream_error", shape=shape, code="moderation_blocked")
    with pytest.raises(ContentBlocked) as caught:
        await provider.create_images(request(partial_images=1), on_partial=Partials())
    assert caught.value.categories == ("violence",)
    assert len(openai_fake.requests) == 1


async def test_a_cut_json_answer_is_not_retried(
    openai_fake: FakeOpenAI, provider: OpenAIImages
) -> None:
    openai_fake.fail_next("stream_cut")
    with pytest.raises(UnreadableAnswer):
        await provider.create_images(request())
    assert len(openai_fake.requests) == 1


# --- faults and retries --------------------------------------------------------------------


async def test_two_server_errors_then_success(
    openai_fake: FakeOpenAI, provider: OpenAIImages, sleeps: Sleeps
) -> None:
    openai_fake.fail_next("server_error", times=2)
    result = await provider.create_images(request())
    assert len(openai_fake.requests) == 3 and len(result.images) == 1
    # the SDK's backoff: 0.5 s then 1 s, each shortened by up to a quarter
    assert 0.375 <= sleeps.waits[0] <= 0.5 and 0.75 <= sleeps.waits[1] <= 1.0


async def test_three_server_errors_give_up(openai_fake: FakeOpenAI, provider: OpenAIImages) -> None:
    openai_fake.fail_next("server_error", times=3)
    with pytest.raises(ProviderUnavailable) as caught:
        await provider.create_images(request())
    assert len(openai_fake.requests) == 3
    assert "Nothing was charged" in caught.value.user_message


async def test_backoff_doubles_up_to_eight_seconds(
    openai_fake: FakeOpenAI, make_provider: Factory, sleeps: Sleeps
) -> None:
    openai_fake.fail_next("server_error", times=6)
    await make_provider(max_retries=6).create_images(request())
    assert len(openai_fake.requests) == 7
    for wait, base in zip(sleeps.waits, [0.5, 1, 2, 4, 8, 8], strict=True):
        assert 0.75 * base <= wait <= base


async def test_max_retries_zero_tries_once(openai_fake: FakeOpenAI, make_provider: Factory) -> None:
    openai_fake.fail_next("server_error")
    with pytest.raises(ProviderUnavailable):
        await make_provider(max_retries=0).create_images(request())
    assert len(openai_fake.requests) == 1


async def test_backoff_scale_shortens_the_waits(
    openai_fake: FakeOpenAI, make_provider: Factory
) -> None:
    openai_fake.fail_next("server_error", times=2)
    waits = Sleeps()
    await make_provider(sleep=waits, backoff_scale=0.01).create_images(request())
    assert len(waits.waits) == 2 and all(w <= 0.01 for w in waits.waits)


async def test_rate_limit_waits_as_told(
    openai_fake: FakeOpenAI, provider: OpenAIImages, sleeps: Sleeps
) -> None:
    openai_fake.fail_next("rate_limit", retry_after=2)
    openai_fake.fail_next("rate_limit", retry_after_ms=1500)
    await provider.create_images(request())
    assert len(openai_fake.requests) == 3
    assert sleeps.waits == [2.0, 1.5]


async def test_retry_after_as_an_http_date(
    openai_fake: FakeOpenAI, provider: OpenAIImages, sleeps: Sleeps
) -> None:
    soon = email.utils.formatdate(time.time() + 60, usegmt=True)
    openai_fake.fail_next("rate_limit", retry_after=soon)
    await provider.create_images(request())
    [wait] = sleeps.waits
    assert 55 <= wait <= 60  # the date has whole seconds
    later = email.utils.formatdate(time.time() + 600, usegmt=True)
    openai_fake.fail_next("rate_limit", retry_after=later)
    with pytest.raises(ProviderUnavailable):
        await provider.create_images(request())
    assert len(openai_fake.requests) == 3 and len(sleeps.waits) == 1


async def test_a_tiny_real_retry_after(openai_fake: FakeOpenAI, make_provider: Factory) -> None:
    openai_fake.fail_next("rate_limit", retry_after_ms=5)
    result = await make_provider(sleep=asyncio.sleep).create_images(request())
    assert len(openai_fake.requests) == 2 and len(result.images) == 1


async def test_a_long_retry_after_is_not_retried(
    openai_fake: FakeOpenAI, provider: OpenAIImages, sleeps: Sleeps
) -> None:
    openai_fake.fail_next("rate_limit", retry_after=300)
    with pytest.raises(ProviderUnavailable) as caught:
        await provider.create_images(request())
    assert len(openai_fake.requests) == 1 and sleeps.waits == []
    assert caught.value.retry_after == 300
    assert "5 minutes" in caught.value.user_message


async def test_insufficient_quota_is_final(openai_fake: FakeOpenAI, provider: OpenAIImages) -> None:
    openai_fake.fail_next("insufficient_quota")
    with pytest.raises(QuotaExhausted):
        await provider.create_images(request())
    assert len(openai_fake.requests) == 1


async def test_moderation_block_names_the_categories(
    openai_fake: FakeOpenAI, provider: OpenAIImages
) -> None:
    openai_fake.fail_next("moderation_blocked", categories=["violence", "self-harm"])
    with pytest.raises(ContentBlocked) as caught:
        await provider.create_images(request())
    assert caught.value.categories == ("violence", "self-harm")
    assert "violence" in caught.value.user_message
    assert len(openai_fake.requests) == 1


async def test_invalid_value_becomes_invalid_request(
    openai_fake: FakeOpenAI, provider: OpenAIImages
) -> None:
    openai_fake.fail_next(
        "invalid_value", message="Width and height must both be divisible by 16.", param="size"
    )
    with pytest.raises(InvalidRequest) as caught:
        await provider.create_images(request())
    assert caught.value.param == "size"
    assert "divisible by 16" in caught.value.user_message
    assert len(openai_fake.requests) == 1


@pytest.mark.allow_error_logs
async def test_a_wrong_key_is_an_operator_problem(
    openai_fake: FakeOpenAI, make_provider: Factory, caplog: pytest.LogCaptureFixture
) -> None:
    with pytest.raises(ProviderMisconfigured) as caught:
        await make_provider(api_key="sk-wrong-secret-key").create_images(request())
    assert len(openai_fake.requests) == 1
    assert "OPENAI_API_KEY" in caught.value.detail
    assert "operator" in caught.value.user_message
    assert "sk-wrong-secret-key" not in caplog.text


@pytest.mark.allow_error_logs
async def test_no_log_line_carries_the_api_key(
    openai_fake: FakeOpenAI, make_provider: Factory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)  # every logger, httpx and httpcore included
    good = "sk-proj-Zq81goodsecret0123456789abcd"
    wrong = "sk-proj-Wr0ngsecret9876543210wxyz"
    openai_fake.api_key = good
    openai_fake.fail_next("server_error")
    await make_provider(api_key=good).create_images(request())  # one retry, then success
    with pytest.raises(ProviderMisconfigured):
        await make_provider(api_key=wrong).create_images(request())
    [refusal] = [r for r in openai_fake.requests if r.status == 401]
    assert refusal.headers["authorization"] == f"Bearer {wrong}"
    logged = caplog.text + "".join(str(r.args) for r in caplog.records)
    for key in (good, wrong):
        assert key not in logged
        assert key[8:-4] not in logged
    # the API echoes the bad key's last four characters: those are hidden too
    assert "wxyz" not in logged
    assert "OPENAI_API_KEY" in logged
    assert re.search(r"answered 401 \(request req_[0-9a-f]{16}\)", caplog.text)


@pytest.mark.allow_error_logs
async def test_forbidden_is_an_operator_problem(
    openai_fake: FakeOpenAI, provider: OpenAIImages
) -> None:
    openai_fake.fail_next("permission_denied")
    with pytest.raises(ProviderMisconfigured) as caught:
        await provider.create_images(request())
    assert "OPENAI_PROJECT_ID" in caught.value.detail
    assert len(openai_fake.requests) == 1


async def test_malformed_json_is_not_retried(
    openai_fake: FakeOpenAI, provider: OpenAIImages
) -> None:
    openai_fake.fail_next("malformed_json")
    with pytest.raises(UnreadableAnswer) as caught:
        await provider.create_images(request())
    assert len(openai_fake.requests) == 1
    assert "not valid JSON" in caught.value.detail
    # the next request is answered normally
    assert len((await provider.create_images(request())).images) == 1


async def test_a_timeout_is_retried(openai_fake: FakeOpenAI, make_provider: Factory) -> None:
    openai_fake.fail_next("timeout", seconds=30)
    result = await make_provider(timeout=0.3).create_images(request())
    assert len(openai_fake.requests) == 2 and len(result.images) == 1


async def test_connection_refused_is_retried_then_unavailable(
    openai_fake: FakeOpenAI, make_provider: Factory
) -> None:
    provider = make_provider()
    await openai_fake.close()
    with pytest.raises(ProviderUnavailable) as caught:
        await provider.create_images(request())
    assert "connection" in caught.value.detail


async def test_success_logs_the_request_id(
    provider: OpenAIImages, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", logger="bot.provider")
    result = await provider.create_images(request())
    assert result.request_id is not None and result.request_id in caplog.text


# --- error mapping details -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "code", "headers", "expected"),
    [
        (408, None, {}, RetryableError),
        (409, None, {}, RetryableError),
        (429, "rate_limit_exceeded", {}, RetryableError),
        (500, None, {}, RetryableError),
        (503, None, {}, RetryableError),
        (429, "rate_limit_exceeded", {"retry-after": "120"}, RetryableError),
        (429, "rate_limit_exceeded", {"retry-after": "121"}, ProviderUnavailable),
        (429, "insufficient_quota", {}, QuotaExhausted),
        (400, "invalid_value", {}, InvalidRequest),
        (404, None, {}, InvalidRequest),
        # x-should-retry overrides the status either way
        (400, None, {"x-should-retry": "true"}, RetryableError),
        (503, None, {"x-should-retry": "false"}, ProviderUnavailable),
    ],
)
def test_which_answers_are_retried(
    status: int, code: str | None, headers: dict[str, str], expected: type[Exception]
) -> None:
    body = {"error": {"message": "busy", "type": "x", "code": code, "param": None}}
    assert type(map_error(status, body, headers)) is expected


def test_retry_after_forms() -> None:
    assert retry_after_seconds({"retry-after-ms": "250", "retry-after": "9"}) == 0.25
    assert retry_after_seconds({"retry-after": "3"}) == 3.0
    date = "Wed, 21 Oct 2015 07:28:00 GMT"
    assert retry_after_seconds({"retry-after": date}, now=1445412480 - 30) == 30.0
    assert retry_after_seconds({"retry-after": "soon"}) is None
