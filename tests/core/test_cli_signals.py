"""A real ``imagine-bot imagine`` process stopped by a real signal while the API call is open."""

from __future__ import annotations

import asyncio
import re
import signal
import sqlite3
from pathlib import Path

import pytest

from tests.fakes.cli_process import start_cli
from tests.fakes.openai_server import FakeOpenAI

_STAMPED = re.compile(r"^\[\s*\d+\.\ds\] ")


def _jobs(data_dir: Path) -> list[tuple[str, str | None, int, float]]:
    with sqlite3.connect(data_dir / "imagine.sqlite3") as db:
        rows = db.execute("SELECT status, error, charged_images, charged_cost FROM jobs").fetchall()
    return [tuple(row) for row in rows]


async def _start_held(
    openai_fake: FakeOpenAI, tmp_path: Path, ignored: tuple[signal.Signals, ...] = ()
) -> asyncio.subprocess.Process:
    """An imagine run whose API call is open (the fake holds its answer) when this returns."""
    openai_fake.answer_gate = asyncio.Event()
    process = await start_cli(
        *("imagine", "a slow fox", "--user", "sig"),
        cwd=tmp_path,
        OPENAI_API_KEY=openai_fake.api_key,
        OPENAI_BASE_URL=openai_fake.base_url,
        IMAGINE_PARTIAL_IMAGES="0",
        ignored_signals=ignored,
    )
    await openai_fake.wait_for(timeout=30)
    return process


@pytest.mark.parametrize(
    ("signum", "code"),
    [(signal.SIGINT, 130), (signal.SIGTERM, 143), (signal.SIGHUP, 129)],
)
async def test_a_signal_mid_call_ends_the_job_refunded_with_one_line(
    signum: signal.Signals, code: int, openai_fake: FakeOpenAI, tmp_path: Path
) -> None:
    process = await _start_held(openai_fake, tmp_path)
    # What the bot would recover later must already be settled by the stopped process itself.
    [(status, _, images, cost)] = _jobs(tmp_path / "data")
    assert (status, images) == ("running", 1) and cost > 0
    process.send_signal(signum)
    out, err = await asyncio.wait_for(process.communicate(), timeout=60)

    assert process.returncode == code
    assert out == b""
    lines = err.decode().splitlines()
    assert lines[-1] == f"imagine-bot: stopped by {signum.name}; nothing was charged"
    # the only other lines are the progress lines from before the signal
    assert all(_STAMPED.match(line) for line in lines[:-1]), lines
    assert "Traceback" not in err.decode()
    # read before any other command opens the store: it is the stopped process that refunded
    assert _jobs(tmp_path / "data") == [("failed", "cancelled", 0, 0.0)]
    assert len(openai_fake.requests) == 1

    usage = await start_cli("usage", "--user", "sig", cwd=tmp_path)
    listed, _ = await asyncio.wait_for(usage.communicate(), timeout=60)
    assert listed.decode().splitlines()[1].split() == ["cli:sig", "0", "0.0000", "0", "0.0000"]


async def test_a_signal_started_ignored_stays_ignored(
    openai_fake: FakeOpenAI, tmp_path: Path
) -> None:
    # `nohup imagine-bot imagine ...` must survive the terminal closing, as nohup promises.
    process = await _start_held(openai_fake, tmp_path, ignored=(signal.SIGHUP,))
    process.send_signal(signal.SIGHUP)
    assert openai_fake.answer_gate is not None
    openai_fake.answer_gate.set()
    out, err = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode == 0, err.decode()
    [line] = out.decode().splitlines()
    assert (tmp_path / line).is_file()
    [(status, _, images, cost)] = _jobs(tmp_path / "data")
    assert (status, images) == ("succeeded", 1) and cost > 0
