"""Real ``imagine-bot`` processes on one data folder: no stolen jobs, a kill gives charges back."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

from tests.fakes.cli_process import start_cli
from tests.fakes.discord_server import FakeDiscord
from tests.fakes.openai_server import FakeOpenAI


def settings(fake: FakeOpenAI, **extra: str) -> dict[str, str]:
    return {
        "OPENAI_API_KEY": fake.api_key,
        "OPENAI_BASE_URL": fake.base_url,
        "IMAGINE_PARTIAL_IMAGES": "0",
        "IMAGINE_USER_LIMIT": "2/hour",
        **extra,
    }


async def finished(process: asyncio.subprocess.Process) -> tuple[int, str, str]:
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def usage_of(tmp_path: Path, user: str) -> tuple[int, str]:
    """Images charged to ``user`` today, as `imagine-bot usage` prints them, and its stderr."""
    code, out, err = await finished(await start_cli("usage", "--user", user, cwd=tmp_path))
    assert code == 0, err
    [row] = [line for line in out.splitlines() if line.startswith(f"cli:{user}")]
    return int(row.split()[1]), err


def jobs(tmp_path: Path) -> list[tuple[str, str, int]]:
    db = sqlite3.connect(tmp_path / "data" / "imagine.sqlite3")
    try:
        rows = db.execute("SELECT id, status, charged_images FROM jobs ORDER BY created_at")
        return [(str(r[0]), str(r[1]), int(r[2])) for r in rows]
    finally:
        db.close()


async def wait_for_line(process: asyncio.subprocess.Process, text: str) -> str:
    assert process.stderr is not None
    seen = []
    while line := (await asyncio.wait_for(process.stderr.readline(), 60)).decode():
        if text in line:
            return "".join(seen)
        seen.append(line)
    raise AssertionError(f"the process ended without logging {text!r}:\n{''.join(seen)}")


async def test_starting_the_bot_never_steals_a_shell_job_in_flight(
    openai_fake: FakeOpenAI, discord_fake: FakeDiscord, tmp_path: Path
) -> None:
    openai_fake.answer_gate = asyncio.Event()
    first = await start_cli(
        "imagine", "a kite", "-n", "2", "--user", "ann", cwd=tmp_path, **settings(openai_fake)
    )
    bot = None
    try:
        await openai_fake.wait_for(count=1, timeout=30)
        bot = await start_cli(
            "run",
            "discord",
            cwd=tmp_path,
            **settings(
                openai_fake,
                IMAGINE_LOG_LEVEL="INFO",
                DISCORD_TOKEN=discord_fake.token,
                DISCORD_API_BASE_URL=discord_fake.api_url,
                DISCORD_GATEWAY_URL=discord_fake.gateway_url,
            ),
        )
        # Start-up recovery has run once the bot says it is starting.
        await wait_for_line(bot, "starting: discord")
        await discord_fake.wait_until(lambda: discord_fake.connected, timeout=30)
        assert [status for _, status, _ in jobs(tmp_path)] == ["running"]
        assert (await usage_of(tmp_path, "ann"))[0] == 2

        # The first job still holds both images of ann's 2/hour: a third is refused.
        third = await start_cli(
            "imagine", "one more", "--user", "ann", cwd=tmp_path, **settings(openai_fake)
        )
        ended = asyncio.ensure_future(finished(third))
        called = asyncio.ensure_future(openai_fake.wait_for(count=2, timeout=60))
        await asyncio.wait({ended, called}, return_when=asyncio.FIRST_COMPLETED)
        openai_fake.answer_gate.set()
        code, out, err = await ended
        called.cancel()
        assert code == 1 and out == "", err
        assert err.startswith("imagine-bot: You've reached your limit of 2 images per hour")

        code, out, err = await finished(first)
        assert code == 0, err
        assert len(out.splitlines()) == 2
    finally:
        openai_fake.answer_gate.set()
        for process in (first, bot):
            if process is not None and process.returncode is None:
                process.kill()
                await process.wait()
    assert len(openai_fake.requests) == 1
    assert (await usage_of(tmp_path, "ann"))[0] == 2


async def test_a_killed_shell_job_is_refunded_by_the_next_command(
    openai_fake: FakeOpenAI, tmp_path: Path
) -> None:
    openai_fake.answer_gate = asyncio.Event()
    first = await start_cli(
        "imagine", "a kite", "-n", "2", "--user", "ann", cwd=tmp_path, **settings(openai_fake)
    )
    try:
        await openai_fake.wait_for(count=1, timeout=30)
        # Another command opening the store meanwhile leaves the live job alone.
        images, _ = await usage_of(tmp_path, "ann")
        assert images == 2
        [(job_id, status, charged)] = jobs(tmp_path)
        assert (status, charged) == ("running", 2)
        # What a kill in the middle of saving leaves behind.
        folder = tmp_path / "data" / "images" / job_id
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "out_0.png.part").write_bytes(b"\0" * 1_000_000)
        first.kill()
        await first.wait()
    finally:
        openai_fake.answer_gate.set()
        if first.returncode is None:
            first.kill()
            await first.wait()

    images, err = await usage_of(tmp_path, "ann")

    assert images == 0
    assert jobs(tmp_path) == [(job_id, "interrupted", 0)]
    assert not folder.exists()
    assert "Traceback" not in err
    # The charge is back: ann may make two images again.
    code, out, err = await finished(
        await start_cli(
            "imagine", "again", "-n", "2", "--user", "ann", cwd=tmp_path, **settings(openai_fake)
        )
    )
    assert code == 0, err
    assert len(out.splitlines()) == 2
