"""The process-wide decode budget: concurrent inputs, from one request or many, wait their turn."""

from __future__ import annotations

import asyncio
import io
import random
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from bot.config import Settings
from bot.image_budget import MIB, decode_budget, default_capacity
from bot.images import normalise_source
from bot.models import ImageRequest, Requester, SourceImage
from bot.service import ImageService

LIMITS = {"max_bytes": 25 * MIB, "max_pixels": 40_000_000}
SIDE = 200
# Pillow keeps an RGB pixel in four bytes: what a kept-as-is PNG of SIDE × SIDE needs decoded.
ONE_PNG = 4 * SIDE * SIDE


def png(seed: int) -> bytes:
    im = Image.frombytes("RGB", (SIDE, SIDE), random.Random(seed).randbytes(SIDE * SIDE * 3))
    buf = io.BytesIO()
    im.save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture
def budget() -> Iterator[list[tuple[int, int]]]:
    """The shared budget with its hook recording (bytes in use, holders) at each reservation."""
    capacity = decode_budget.capacity
    seen: list[tuple[int, int]] = []
    yield seen
    decode_budget.on_reserve = None
    decode_budget.configure(capacity)


def hold_until_all_arrived(seen: list[tuple[int, int]], total: int) -> None:
    """Keep each decode going until every call has either started or queued for the budget.

    Without the budget all calls would be decoding together by then; with it, the rest wait.
    """

    def hook(in_use: int, holders: int) -> None:
        seen.append((in_use, holders))
        deadline = time.monotonic() + 30  # a safety net against a hang, not an assertion
        while len(seen) + decode_budget.waiting < total and time.monotonic() < deadline:
            time.sleep(0.001)

    decode_budget.on_reserve = hook


async def normalise_all(datas: list[bytes]) -> list[bytes]:
    calls = (
        asyncio.to_thread(normalise_source, data, f"{i}.png", **LIMITS)
        for i, data in enumerate(datas)
    )
    return [source.data for source in await asyncio.gather(*calls)]


async def test_concurrent_requests_never_decode_more_than_the_budget_at_once(
    budget: list[tuple[int, int]],
) -> None:
    decode_budget.configure(2 * ONE_PNG + ONE_PNG // 2)  # room for two decodes, not three
    datas = [png(seed) for seed in range(4)]
    hold_until_all_arrived(budget, total=4)
    # Two requests of two images each, at once: the budget is the process's, not a request's.
    first, second = await asyncio.gather(normalise_all(datas[:2]), normalise_all(datas[2:]))
    assert first + second == datas  # clean PNGs still go out byte for byte
    assert len(budget) == 4
    assert max(holders for _, holders in budget) == 2
    assert max(in_use for in_use, _ in budget) <= decode_budget.capacity
    assert decode_budget.peak_in_use <= decode_budget.capacity


async def test_an_image_larger_than_the_budget_is_decoded_alone(
    budget: list[tuple[int, int]],
) -> None:
    decode_budget.configure(ONE_PNG // 10)
    datas = [png(seed) for seed in range(4)]
    hold_until_all_arrived(budget, total=4)
    assert await normalise_all(datas) == datas
    assert [holders for _, holders in budget] == [1, 1, 1, 1]
    assert decode_budget.peak_holders == 1


def test_the_budget_follows_the_memory_it_may_use() -> None:
    assert default_capacity(1024 * MIB) == 128 * MIB  # an eighth
    assert default_capacity(256 * MIB) == 64 * MIB  # never below 64 MiB
    assert default_capacity(64 * 1024 * MIB) == 384 * MIB  # never above 384 MiB


async def test_decodes_waiting_for_the_budget_leave_the_default_threads_free(
    budget: list[tuple[int, int]], tmp_path: Path
) -> None:
    # Two 16-image edits at once, with room for one decode: 31 calls wait for the budget.
    decode_budget.configure(ONE_PNG)
    release, holding = threading.Event(), asyncio.Event()
    loop = asyncio.get_running_loop()

    def hold(in_use: int, holders: int) -> None:
        budget.append((in_use, holders))
        loop.call_soon_threadsafe(holding.set)
        release.wait(30)  # a safety net against a hang, not an assertion

    decode_budget.on_reserve = hold
    settings = Settings(_env_file=None, openai_api_key="sk-test", imagine_data_dir=tmp_path)
    service = ImageService(settings, None, None)  # type: ignore[arg-type]  # validate only
    requester = Requester(platform="cli", user_id="budget")
    sources = tuple(SourceImage(png(seed), f"{seed}.png", "") for seed in range(16))
    request = ImageRequest(requester, "edit them", service.options(), sources)
    edits = asyncio.gather(service.validate(request), service.validate(request))
    try:
        await asyncio.wait_for(holding.wait(), 10)
        # File writes, owner checks and previews run on the default threads meanwhile.
        assert await asyncio.wait_for(asyncio.to_thread(lambda: "free"), 10) == "free"
    finally:
        release.set()
    first, second = await edits
    assert [s.data for s in first.sources] == [s.data for s in sources]
    assert len(second.sources) == 16
