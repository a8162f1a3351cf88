"""What ``imagine-bot imagine`` shows as it works: plain lines in a pipe, a live line on a tty."""

from __future__ import annotations

import asyncio
import contextlib
import os
import pty
import re
import termios
from pathlib import Path

from PIL import Image

from bot.cli_progress import PreviewCounter
from tests.core.test_cli import imagine_bot
from tests.fakes.cli_process import start_cli
from tests.fakes.openai_server import FakeOpenAI

_STAMPED = re.compile(r"^\[\s*\d+\.\ds\] ")
_ELAPSED = re.compile(rb"\d+:\d\d:\d\d")  # rich's elapsed-time column, H:MM:SS


async def test_previews_are_kept_and_say_which_image_they_belong_to(
    openai_fake: FakeOpenAI, tmp_path: Path
) -> None:
    ran = await imagine_bot(
        *("imagine", "two foxes", "-n", "2", "--partials", "2", "--previews", "peek"),
        cwd=tmp_path,
        fake=openai_fake,
    )
    assert ran.code == 0, ran.err
    job_id = Path(ran.out.splitlines()[0]).name.split("_")[0]
    kept = sorted(p.name for p in (tmp_path / "peek").iterdir())
    assert kept == [f"{job_id}_{image}_preview_{p}.png" for image in (0, 1) for p in (0, 1)]
    for name in kept:
        with Image.open(tmp_path / "peek" / name) as preview:
            assert preview.format == "PNG"
    said = [line for line in ran.err.splitlines() if "preview" in line]
    assert [re.sub(r"^\[.*?\] | \([1-9]\d* (KB|bytes)\)", "", line) for line in said] == [
        f"preview {p + 1} of image {image + 1} received, kept as "
        f"peek/{job_id}_{image}_preview_{p}.png"
        for image in (0, 1)
        for p in (0, 1)
    ]
    # not a terminal: plain lines only, each stamped, no cursor movement or colour
    assert "\x1b" not in ran.err
    assert all(_STAMPED.match(line) for line in ran.err.splitlines()), ran.err


async def test_previews_without_partials_are_refused_before_any_call(
    openai_fake: FakeOpenAI, tmp_path: Path
) -> None:
    ran = await imagine_bot(
        "imagine", "a fox", "--previews", "peek", cwd=tmp_path, fake=openai_fake
    )
    assert ran.code == 1
    assert ran.err.startswith("imagine-bot: --previews keeps partial previews, but none are")
    assert "--partials" in ran.err and "Nothing was charged" in ran.err
    assert len(ran.err.strip().splitlines()) == 1
    assert openai_fake.requests == []


async def test_on_a_terminal_a_live_line_counts_the_seconds(
    openai_fake: FakeOpenAI, tmp_path: Path
) -> None:
    openai_fake.answer_gate = asyncio.Event()
    leader, follower = pty.openpty()
    termios.tcsetwinsize(follower, (24, 100))
    try:
        process = await start_cli(
            "imagine",
            "a fox",
            cwd=tmp_path,
            stderr=follower,
            OPENAI_API_KEY=openai_fake.api_key,
            OPENAI_BASE_URL=openai_fake.base_url,
            IMAGINE_PARTIAL_IMAGES="0",
            TERM="xterm-256color",
        )
    finally:
        os.close(follower)
    screen = bytearray()
    grew = asyncio.Event()

    async def read_all() -> None:
        # Read all along: a full terminal buffer would block the command's writes.
        while True:
            try:
                chunk = await asyncio.to_thread(os.read, leader, 4096)
            except OSError:  # EIO: every writer closed the terminal
                return
            if not chunk:
                return
            screen.extend(chunk)
            grew.set()

    async def shown(pattern: re.Pattern[bytes]) -> None:
        while not pattern.search(screen):
            grew.clear()
            await grew.wait()

    reader = asyncio.create_task(read_all())
    try:
        await openai_fake.wait_for(timeout=30)
        # The line redraws while the call is open: it shows 0:00:00, then a later second.
        await asyncio.wait_for(shown(re.compile(rb"generating.*0:00:0[1-9]")), 30)
        assert openai_fake.answer_gate is not None
        openai_fake.answer_gate.set()
        out, _ = await asyncio.wait_for(process.communicate(), timeout=60)
        await asyncio.wait_for(reader, 60)
    finally:
        if process.returncode is None:  # a failed wait: ending it also ends the reader's read
            process.kill()
            await process.wait()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(reader, 10)
        with contextlib.suppress(OSError):
            os.close(leader)
    assert process.returncode == 0
    assert (tmp_path / out.decode().strip()).is_file()
    text = screen.decode(errors="replace")
    assert len(set(_ELAPSED.findall(bytes(screen)))) >= 2, text
    assert "generating (job " in text  # the lines that stay are still printed above it
    assert "done in " in text


def test_previews_are_placed_by_their_order_whichever_way_the_index_counts() -> None:
    restarting = PreviewCounter(per_image=2)
    assert [restarting.place(i) for i in (0, 1, 0, 1)] == [(0, 0), (0, 1), (1, 0), (1, 1)]
    continuing = PreviewCounter(per_image=2)
    assert [continuing.place(i) for i in (0, 1, 2, 3)] == [(0, 0), (0, 1), (1, 0), (1, 1)]
    fewer = PreviewCounter(per_image=3)  # the API may send fewer previews than asked
    assert [fewer.place(i) for i in (0, 1, 0)] == [(0, 0), (0, 1), (1, 0)]
