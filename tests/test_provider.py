"""OpenAIImages against the fake OpenAI server over real loopback HTTP."""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import io
import logging
import re
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from PIL import Image

from bot.errors import (
    ContentBlocked,
    InvalidRequest,
    InvalidSize,
    ProviderMisconfigured,
    ProviderUnavailable,
    QuotaExhausted,
)
from bot.models import ImageOptions, ImageRequest, Requester, SourceImage, Usage
from bot.openai_errors import RetryableError, map_error, retry_after_seconds
from bot.provider import OpenAIImages, check_options, check_size
from bot.sse import parse_usage
from tests.fakes.openai_server import FakeOpenAI

ALICE = Requester("discord", "1234", "guild", "chan", "Alice")
Factory = Callable[..., OpenAIImages]


def png(size: tuple[int, int], mode: str = "RGB") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, 0).save(buf, "PNG")
    return buf.getvalue()


def source(name: str, size: tuple[int, int] = (512, 384), mode: str = "RGB") -> SourceImage:
    return SourceImage(png(size, mode), name, "image/png", *size)


def request(prompt: str = "a lighthouse in fog", **options: Any) -> ImageRequest:
    return ImageRequest(ALICE, prompt, ImageOptions(**options))


def opened(data: bytes) -> Image.Image:
    img = Image.open(io.BytesIO(data))
    img.load()
    return img


class Sleeps:
    """Records the waits the provider asks for, without waiting."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


@pytest.fixture
async def make_provider(openai_fake: FakeOpenAI, sleeps: Sleeps) -> AsyncIterator[Factory]:
    async with contextlib.AsyncExitStack() as made:

        def factory(**overrides: Any) -> OpenAIImages:
            values: dict[str, Any] = {
                "api_key": openai_fake.api_key,
                "base_url": openai_fake.base_url,
                "timeout": 10.0,
                "sleep": sleeps,
            }
            provider = OpenAIImages(**(values | overrides))
            made.push_async_callback(provider.aclose)
            return provider

        yield factory


@pytest.fixture
def provider(make_provider: Factory) -> OpenAIImages:
    return make_provider()


class Partials:
    """An on_partial callback that keeps what it got."""

    def __init__(self) -> None:
        self.got: list[tuple[int, bytes, str]] = []

    async def __call__(self, index: int, data: bytes, output_format: str) -> None:
        self.got.append((index, data, output_format))


# --- what the API receives -----------------------------------------------------------------


async def test_generation_sends_the_contract_fields(
    openai_fake: FakeOpenAI, provider: OpenAIImages
) -> None:
    result = await provider.create_images(request(size="1536x1024", quality="low"))
    [sent] = openai_fake.requests
    assert sent.path == "/v1/images/generations"
    assert sent.json is not None
    assert sent.json["model"] == "gpt-image-2"
    assert "response_format" not in sent.json
    assert "output_compression" not in sent.json  # png
    assert "stream" not in sent.json
    assert sent.json["user"] == ALICE.hashed_id != ALICE.user_id
    # stable: the same person always sends the same id, another person another one
    assert sent.json["user"] == Requester("discord", "1234").hashed_id
    assert sent.json["user"] != Requester("slack", "1234").hashed_id
    assert sent.json["prompt"] == "a lighthouse in fog"
    assert sent.headers["authorization"] == "Bearer sk-test"
    [image] = result.images
    assert opened(image.data).size == (1536, 1024)
    assert image.mime == "image/png"
    assert result.size == "1536x1024" and result.quality == "low"
    assert result.request_id and result.request_id.startswith("req_")


async def test_compression_is_sent_for_jpeg_only(
    openai_fake: FakeOpenAI, provider: OpenAIImages
) -> None:
    result = await provider.create_images(request(output_format="jpeg", output_compression=60, n=2))
    assert openai_fake.requests[0].json is not None
    assert openai_fake.requests[0].json["output_compression"] == 60
    assert [opened(i.data).format for i in result.images] == ["JPEG", "JPEG"]
    assert result.output_format == "jpeg"


async def test_organization_and_project_headers(
    openai_fake: FakeOpenAI, make_provider: Factory
) -> None:
    provider = make_provider(organization="org-1", project="proj_2")
    await provider.create_images(request())
    headers = openai_fake.requests[0].headers
    assert headers["openai-organization"] == "org-1"
    assert headers["openai-project"] == "proj_2"


async def test_edit_with_one_source_uses_an_image_part(
    openai_fake: FakeOpenAI, provider: OpenAIImages
) -> None:
    req = ImageRequest(ALICE, "make it night", ImageOptions(size="auto"), (source("cat.png"),))
    result = await provider.create_images(req)
    [sent] = openai_fake.requests
    assert sent.path == "/v1/images/edits"
    assert [(f.field, f.filename) for f in sent.files] == [("image", "cat.png")]
    assert sent.form["model"] == "gpt-image-2"
    assert sent.form["user"] == ALICE.hashed_id
    assert "moderation" not in sent.form and "input_fidelity" not in sent.form
    assert "response_format" not in sent.form
    width, height = opened(result.images[0].data).size
    assert width > height  # auto keeps the source's landscape shape


async def test_edit_with_two_sources_and_a_mask(
    openai_fake: FakeOpenAI, provider: OpenAIImages
) -> None:
    sources = (source("a.png", (512, 512)), source("b.png", (256, 256)))
    mask = source("mask.png", (512, 512), "RGBA")
    req = ImageRequest(ALICE, "combine", ImageOptions(size="1024x1024"), sources, mask)
    await provider.create_images(req)
    [sent] = openai_fake.requests
    assert [(f.field, f.filename) for f in sent.files] == [
        ("image[]", "a.png"),
        ("image[]", "b.png"),
        ("mask", "mask.png"),
    ]
    assert sent.files[2].data == mask.data


# --- streaming -----------------------------------------------------------------------------


async def test_previews_arrive_in_order_then_the_image(
    openai_fake: FakeOpenAI, provider: OpenAIImages
) -> None:
    partials = Partials()
    result = await provider.create_images(
        request(partial_images=2, output_format="webp"), on_partial=partials
    )
    assert openai_fake.requests[0].json is not None
    assert openai_fake.requests[0].json["stream"] is True
    assert openai_fake.requests[0].json["partial_images"] == 2
    assert [(i, fmt) for i, _, fmt in partials.got] == [(0, "webp"), (1, "webp")]
    assert all(opened(data).format == "WEBP" for _, data, _ in partials.got)
    [image] = result.images
    assert opened(image.data).size == (1024, 1024)
    assert result.usage is not None and result.usage.output_tokens > 0


async def test_previews_reach_the_callback_while_the_answer_is_still_open(
    openai_fake: FakeOpenAI, provider: OpenAIImages
) -> None:
    openai_fake.completion_gate = asyncio.Event()
    partials = Partials()
    both_previews = asyncio.Event()

    async def on_partial(index: int, data: bytes, output_format: str) -> None:
        await partials(index, data, output_format)
        if len(partials.got) == 2:
            both_previews.set()

    task = asyncio.create_task(
        provider.create_images(request(partial_images=2), on_partial=on_partial)
    )
    # the fake holds the completed event back: a client that read the whole body first
    # would see no preview here
    await asyncio.wait_for(both_previews.wait(), timeout=5)
    assert not task.done()
    openai_fake.completion_gate.set()
    result = await task
    assert [i for i, _, _ in partials.got] == [0, 1] and len(result.images) == 1


async def test_streamed_edit_with_several_images_sums_usage(
    openai_fake: FakeOpenAI, provider: OpenAIImages
) -> None:
    partials = Partials()
    req = ImageRequest(
        ALICE, "x", ImageOptions(n=2, partial_images=1, size="1024x1024"), (source("a.png"),)
    )
    streamed = await provider.create_images(req, on_partial=partials)
    plain = await provider.create_images(
        ImageRequest(
            ALICE, "x", ImageOptions(n=2, partial_images=1, size="1024x1024"), (source("a.png"),)
        )
    )
    assert openai_fake.requests[0].form["stream"] == "true"
    assert "stream" not in openai_fake.requests[1].form  # no callback, no stream
    assert len(streamed.images) == 2 and len(partials.got) == 2
    assert streamed.usage is not None and plain.usage is not None
    assert streamed.usage.input_tokens == plain.usage.input_tokens
    assert streamed.usage.input_image_tokens == plain.usage.input_image_tokens > 0


async def test_a_done_marker_ends_the_stream(
    openai_fake: FakeOpenAI, provider: OpenAIImages
) -> None:
    openai_fake.send_done = True
    result = await provider.create_images(request(partial_images=1), on_partial=Partials())
    assert len(result.images) == 1


async def test_a_cut_stream_after_a_preview_is_not_retried(
    openai_fake: FakeOpenAI, provider: OpenAIImages
) -> None:
    openai_fake.fail_next("stream_cut")
    partials = Partials()
    with pytest.raises(ProviderUnavailable):
        await provider.create_images(request(partial_images=2), on_partial=partials)
    assert len(openai_fake.requests) == 1
    assert len(partials.got) == 1


async def test_a_stream_cut_before_any_preview_is_retried(
    openai_fake: FakeOpenAI, provider: OpenAIImages
) -> None:
    openai_fake.fail_next("stream_cut", after=0)
    partials = Partials()
    result = await provider.create_images(request(partial_images=2), on_partial=partials)
    assert len(openai_fake.requests) == 2 and len(result.images) == 1
    assert [i for i, _, _ in partials.got] == [0, 1]


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


async def test_a_cut_json_answer_is_retried(
    openai_fake: FakeOpenAI, provider: OpenAIImages
) -> None:
    openai_fake.fail_next("stream_cut")
    result = await provider.create_images(request())
    assert len(openai_fake.requests) == 2 and len(result.images) == 1


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


async def test_malformed_json_is_retried_then_given_up(
    openai_fake: FakeOpenAI, provider: OpenAIImages
) -> None:
    openai_fake.fail_next("malformed_json")
    assert len((await provider.create_images(request())).images) == 1
    openai_fake.fail_next("malformed_json", times=3)
    with pytest.raises(ProviderUnavailable):
        await provider.create_images(request())
    assert len(openai_fake.requests) == 5


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


def test_usage_with_details_and_cache() -> None:
    raw = {
        "input_tokens": 500,
        "output_tokens": 1756,
        "total_tokens": 2256,
        "input_tokens_details": {
            "text_tokens": 100,
            "image_tokens": 400,
            "cached_tokens": 300,
            "cached_tokens_details": {"image_tokens": 250},
        },
    }
    assert parse_usage(raw) == Usage(500, 1756, 2256, 100, 400, 300, 250)
    assert parse_usage({"input_tokens": 3}) == Usage(input_tokens=3)
    assert parse_usage(None) is None


async def test_usage_from_the_api(provider: OpenAIImages) -> None:
    result = await provider.create_images(request(size="1024x1024", quality="medium"))
    assert result.usage is not None
    assert result.usage.output_tokens == 1756
    assert result.usage.input_text_tokens == result.usage.input_tokens > 0
    assert result.usage.total_tokens == result.usage.input_tokens + 1756


# --- checks before the call ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "words", "suggestion"),
    [
        ("1000x1000", "divisible by 16", "992x992"),
        ("3072x768", "3 times", None),
        ("4096x2304", "3840", None),
        ("640x640", "at least 655,360", None),
        ("3840x2560", "at most 8,294,400", None),
        ("big", "Can't read", None),
    ],
)
def test_custom_size_rules(size: str, words: str, suggestion: str | None) -> None:
    with pytest.raises(InvalidSize) as caught:
        check_size("gpt-image-2", size)
    message = caught.value.user_message
    assert words in message
    if size != "big":
        suggested = message.rsplit("Try ", 1)[1].rstrip(".")
        check_size("gpt-image-2", suggested)  # the suggestion itself must work
        if suggestion:
            assert suggested == suggestion


@pytest.mark.parametrize("size", ["auto", "1024x1024", "1536x1024", "2048x1152", "3840x2160"])
def test_sizes_that_work(size: str) -> None:
    check_size("gpt-image-2", size)


def test_older_models_only_take_the_standard_sizes() -> None:
    check_size("gpt-image-1", "1024x1536")
    with pytest.raises(InvalidSize, match="custom sizes need gpt-image-2"):
        check_size("gpt-image-1", "2048x1152")


@pytest.mark.parametrize(
    ("req", "param"),
    [
        (request("   "), "prompt"),
        (request("x" * 32001), "prompt"),
        (request(n=0), "n"),
        (request(n=11), "n"),
        (request(partial_images=4), "partial_images"),
        (request(background="transparent", output_format="jpeg"), "background"),
        (request(output_compression=50), "output_compression"),
        (request(output_format="webp", output_compression=101), "output_compression"),
        (request(quality="ultra"), "quality"),
        (request(size="1000x1000"), "size"),
        (
            ImageRequest(ALICE, "x", ImageOptions(), tuple(source(f"{i}.png") for i in range(17))),
            "image",
        ),
    ],
)
def test_check_options_refuses(req: ImageRequest, param: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        check_options(req)
    assert caught.value.param == param
    assert caught.value.user_message


def test_check_options_accepts_a_full_request() -> None:
    check_options(
        request(
            n=10,
            partial_images=3,
            output_format="webp",
            output_compression=0,
            background="transparent",
            size="2048x1152",
            prompt="x" * 32000,
        )
    )
