"""A 200 answer whose body breaks or can't be read fails once: another attempt may bill again."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from bot.errors import ProviderUnavailable
from bot.openai_errors import UnreadableAnswer
from bot.provider import OpenAIImages
from tests.fakes.cli_process import start_cli
from tests.fakes.openai_client import Factory, Partials, Sleeps, request
from tests.fakes.openai_server import FakeOpenAI

PLAIN = (
    "The image service's answer broke off or could not be read, so no image came back. "
    "Nothing was charged; try again in a minute or two."
)


@pytest.mark.parametrize(
    ("fault", "previews", "after"),
    [
        ("malformed_json", 0, 0),  # cut-off JSON, complete HTTP body
        ("bad_image", 0, 0),  # well-formed JSON, an image that is not base64
        ("stream_cut", 0, 0),  # the connection drops halfway through the JSON body
        ("stream_cut", 2, 0),  # an event stream that ends before anything arrived
        ("stream_cut", 2, 1),
        ("stream_garbled", 2, 0),  # an event that is not JSON
        ("stream_garbled", 2, 2),
    ],
)
async def test_a_broken_200_is_tried_once_and_said_plainly(
    fault: str,
    previews: int,
    after: int,
    openai_fake: FakeOpenAI,
    provider: OpenAIImages,
    sleeps: Sleeps,
) -> None:
    openai_fake.fail_next(fault, times=3, after=after)
    partials = Partials()
    with pytest.raises(UnreadableAnswer) as caught:
        await provider.create_images(
            request(partial_images=previews), on_partial=partials if previews else None
        )
    assert len(openai_fake.requests) == 1
    assert [r.status for r in openai_fake.requests] == [200]
    assert sleeps.waits == []
    assert caught.value.user_message == PLAIN
    assert str(caught.value) == PLAIN
    assert len(partials.got) == (after if previews else 0)


async def test_an_error_frame_before_any_preview_is_final(
    openai_fake: FakeOpenAI, provider: OpenAIImages, sleeps: Sleeps
) -> None:
    # the stream said 200 first; the service's own failure inside it is not retried either
    openai_fake.fail_next("stream_error", times=3, after=0)
    with pytest.raises(ProviderUnavailable) as caught:
        await provider.create_images(request(partial_images=2), on_partial=Partials())
    assert len(openai_fake.requests) == 1 and sleeps.waits == []
    assert "The server had an error" in caught.value.detail
    assert not isinstance(caught.value, UnreadableAnswer)


async def test_a_stream_that_stalls_after_its_200_times_out_once(
    openai_fake: FakeOpenAI, make_provider: Factory, sleeps: Sleeps
) -> None:
    openai_fake.completion_gate = asyncio.Event()  # previews arrive, the image never does
    partials = Partials()
    with pytest.raises(UnreadableAnswer) as caught:
        await make_provider(timeout=0.5).create_images(
            request(partial_images=1), on_partial=partials
        )
    assert len(openai_fake.requests) == 1 and sleeps.waits == []
    assert len(partials.got) == 1
    assert "stopped within 0.5 s" in caught.value.detail


async def test_errors_before_a_200_are_still_retried(
    openai_fake: FakeOpenAI, provider: OpenAIImages
) -> None:
    openai_fake.fail_next("server_error")
    openai_fake.fail_next("malformed_json")
    with pytest.raises(UnreadableAnswer):
        await provider.create_images(request())
    assert [r.status for r in openai_fake.requests] == [500, 200]


async def test_the_command_line_fails_once_and_the_charge_comes_back(
    openai_fake: FakeOpenAI, tmp_path: Path
) -> None:
    settings = {
        "OPENAI_API_KEY": openai_fake.api_key,
        "OPENAI_BASE_URL": openai_fake.base_url,
        "IMAGINE_PARTIAL_IMAGES": "0",
        "IMAGINE_USER_LIMIT": "1/hour",
    }
    openai_fake.fail_next("malformed_json")
    process = await start_cli("imagine", "a red fox", cwd=tmp_path, **settings)
    out, err = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode == 1
    assert err.decode().strip().splitlines()[-1] == f"imagine-bot: {PLAIN}"
    assert "Traceback" not in err.decode() and out == b""
    assert len(openai_fake.requests) == 1
    # nothing was charged: the one image an hour is still there
    process = await start_cli("imagine", "a red fox", cwd=tmp_path, **settings)
    out, err = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode == 0, err.decode()
    assert len(out.decode().splitlines()) == 1
    assert len(openai_fake.requests) == 2
