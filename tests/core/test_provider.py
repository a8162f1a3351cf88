"""OpenAIImages against the fake OpenAI server: what the API receives, previews, usage."""

from __future__ import annotations

import asyncio

from bot.models import ImageOptions, ImageRequest, Requester, Usage
from bot.provider import OpenAIImages
from bot.sse import parse_usage
from tests.fakes.openai_client import ALICE, Factory, Partials, opened, request, source
from tests.fakes.openai_server import FakeOpenAI

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
