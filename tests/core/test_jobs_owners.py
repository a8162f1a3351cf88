"""Job owners: recovery ends the jobs of stores and processes that are gone, never a live one."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from bot.job_owners import LEASE_S, process_start, this_host
from bot.models import ImageOptions, ImageRequest, Requester
from bot.store import Store
from tests.fakes.app_fixtures import AppFactory

T0 = 1_750_000_000.0
Child = Callable[..., Awaitable[tuple[asyncio.subprocess.Process, str]]]

# A store in another process: admits one running job, prints its id, then waits to be killed.
_CHILD = """
import asyncio, sys
from pathlib import Path
from bot.models import ImageOptions, ImageRequest, Requester
from bot.store import Store

async def main():
    store = await Store.open(Path(sys.argv[1]))
    requester = Requester(sys.argv[2], "U1", "T1", "C1")
    job = await store.admit(ImageRequest(requester, "a kite", ImageOptions(n=2)), limits=(),
                            budgets=(), estimated_cost=0.1, exempt=False)
    await store.mark_running(job.id)
    print(job.id, flush=True)
    await asyncio.to_thread(sys.stdin.readline)

asyncio.run(main())
"""


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "data" / "imagine.sqlite3"


@pytest.fixture
async def child(db_path: Path) -> AsyncIterator[Child]:
    """Start store-holding child processes; each is killed at the end of the test."""
    started: list[asyncio.subprocess.Process] = []

    async def start(platform: str = "discord") -> tuple[asyncio.subprocess.Process, str]:
        process = await asyncio.create_subprocess_exec(
            *(sys.executable, "-c", _CHILD, str(db_path), platform),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            cwd=Path(__file__).resolve().parents[2],
        )
        started.append(process)
        assert process.stdout is not None
        line = await asyncio.wait_for(process.stdout.readline(), 30)
        assert line.strip(), "the child store did not start"
        return process, line.decode().strip()

    yield start
    for process in started:
        if process.returncode is None:
            process.kill()
            await process.wait()


@pytest.fixture
async def store(db_path: Path) -> AsyncIterator[Store]:
    opened = await Store.open(db_path)
    yield opened
    await opened.close()


def status_of(db_path: Path, job_id: str) -> tuple[str, int]:
    db = sqlite3.connect(db_path)
    try:
        row = db.execute(
            "SELECT status, charged_images FROM jobs WHERE id = ?", (job_id,)
        ).fetchone()
    finally:
        db.close()
    return str(row[0]), int(row[1])


async def test_a_live_process_keeps_its_job_and_a_killed_ones_is_refunded(
    store: Store, child: Child, db_path: Path
) -> None:
    process, job_id = await child()
    assert await store.recover_interrupted() == []
    reopened = await Store.open(db_path)  # any command opening the store
    await reopened.close()
    assert status_of(db_path, job_id) == ("running", 2)

    process.send_signal(signal.SIGKILL)
    await process.wait()
    [job] = await store.recover_interrupted()
    assert job.id == job_id
    assert (job.status, job.charged_images) == ("interrupted", 0)
    assert status_of(db_path, job_id) == ("interrupted", 0)


async def test_opening_the_store_recovers_a_killed_process_job(child: Child, db_path: Path) -> None:
    process, job_id = await child()
    process.kill()
    await process.wait()
    opened = await Store.open(db_path)
    try:
        assert status_of(db_path, job_id) == ("interrupted", 0)
        # Nobody was told yet: the next adapter start announces it, once.
        [claimed] = await opened.claim_interrupted({"discord"})
        assert claimed.id == job_id
        assert await opened.claim_interrupted({"discord"}) == []
    finally:
        await opened.close()


async def test_a_long_running_store_recovers_a_job_killed_while_it_runs(
    child: Child, db_path: Path
) -> None:
    watcher = await Store.open(db_path, heartbeat_s=0.05)
    try:
        process, job_id = await child()
        process.kill()
        await process.wait()
        for _ in range(400):
            if status_of(db_path, job_id)[0] == "interrupted":
                break
            await asyncio.sleep(0.05)
        assert status_of(db_path, job_id) == ("interrupted", 0)
    finally:
        await watcher.close()


def add_owner(
    db_path: Path, owner_id: str, host: str, pid: int, pid_start: str, seen: float
) -> None:
    db = sqlite3.connect(db_path)
    try:
        db.execute(
            "INSERT INTO owners (id, host, pid, pid_start, started_at, seen_at) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (owner_id, host, pid, pid_start, seen, seen),
        )
        db.commit()
    finally:
        db.close()


def set_owner(db_path: Path, job_id: str, owner_id: str) -> None:
    db = sqlite3.connect(db_path)
    try:
        db.execute("UPDATE jobs SET owner_id = ? WHERE id = ?", (owner_id, job_id))
        db.commit()
    finally:
        db.close()


async def admitted(store: Store, platform: str = "discord") -> str:
    requester = Requester(platform, "U1", "T1", "C1")
    job = await store.admit(
        ImageRequest(requester, "a kite", ImageOptions()),
        limits=(),
        budgets=(),
        estimated_cost=0.04,
        exempt=False,
    )
    return job.id


async def test_owners_on_another_host_are_judged_by_their_lease(
    store: Store, db_path: Path
) -> None:
    now = time.time()
    fresh, stale = await admitted(store), await admitted(store)
    add_owner(db_path, "fresh", "elsewhere|boot|pid:[1]", 1, "7", now - LEASE_S / 2)
    add_owner(db_path, "stale", "elsewhere|boot|pid:[1]", 1, "7", now - LEASE_S - 1)
    set_owner(db_path, fresh, "fresh")
    set_owner(db_path, stale, "stale")

    recovered = await store.recover_interrupted(now=now)

    assert [job.id for job in recovered] == [stale]
    assert status_of(db_path, fresh) == ("queued", 1)


async def test_a_reused_pid_or_a_missing_owner_does_not_keep_a_job_alive(
    store: Store, db_path: Path
) -> None:
    mine = await admitted(store)
    reused, unknown = await admitted(store), await admitted(store)
    # Our own pid, but started at another time: the process that owned the job is gone.
    add_owner(db_path, "reused", this_host(), os.getpid(), "1", time.time())
    set_owner(db_path, reused, "reused")
    set_owner(db_path, unknown, "never-registered")

    recovered = await store.recover_interrupted()

    assert sorted(job.id for job in recovered) == sorted([reused, unknown])
    assert status_of(db_path, mine) == ("queued", 1)


async def test_recovery_deletes_partial_files_but_keeps_saved_inputs(
    db_path: Path,
) -> None:
    from bot.models import SourceImage

    first = await Store.open(db_path)
    photo = SourceImage(b"\x89PNG\r\n\x1a\n" + b"p" * 100, "photo.png", "image/png", 64, 64)
    requester = Requester("slack", "U1", "T1", "C1")
    job = await first.admit(
        ImageRequest(requester, "paint it", ImageOptions(), sources=(photo,)),
        limits=(),
        budgets=(),
        estimated_cost=0.04,
        exempt=False,
    )
    folder = db_path.parent / "images" / job.id
    (folder / "out_0.png.part").write_bytes(b"x" * 100_000)
    (folder / "out_1.png").write_bytes(b"y" * 100_000)  # written, never recorded
    await first.close()

    second = await Store.open(db_path)
    try:
        assert sorted(p.name for p in folder.iterdir()) == ["src_0.png"]
        sources, _ = await second.job_sources(job.id)
        assert [s.data for s in sources] == [photo.data]
    finally:
        await second.close()


async def test_jobs_recovered_by_any_command_are_announced_by_the_next_adapter_start(
    make_app: AppFactory, tmp_path: Path
) -> None:
    app = await make_app(discord_token="x" * 10)
    discord_job = await admitted(app.store, "discord")
    slack_job = await admitted(app.store, "slack")
    shell_job = await admitted(app.store, "cli")
    await app.aclose()

    # `imagine-bot usage` opens the store: the jobs end there, refunded, and nobody is told.
    usage = await Store.open(tmp_path / "data" / "imagine.sqlite3")
    await usage.close()

    bot = await make_app(discord_token="x" * 10)
    told = await bot.service.recover_interrupted()
    assert [job.id for job in told] == [discord_job]
    assert [job.id for job in await bot.service.recover_interrupted()] == [discord_job]
    # The Slack job waits for a process that runs Slack; a shell job has nobody to tell.
    slack_bot = await make_app(slack_bot_token="xoxb-1-2-abc")
    assert [job.id for job in await slack_bot.service.recover_interrupted()] == [slack_job]
    assert shell_job not in [job.id for job in told]


def test_a_killed_but_unreaped_process_counts_as_gone() -> None:
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        assert process_start(sleeper.pid)  # alive, with a start time
        sleeper.kill()
        stat = Path(f"/proc/{sleeper.pid}/stat")
        for _ in range(600):
            if stat.read_text().rpartition(")")[2].split()[0] == "Z":
                break
            time.sleep(0.05)
        else:
            raise AssertionError("the killed process never became a zombie")
        assert process_start(sleeper.pid) is None
    finally:
        sleeper.kill()
        sleeper.wait()


def set_owner_row(db_path: Path, job_id: str, host: str, seen_at: float) -> None:
    db = sqlite3.connect(db_path)
    try:
        db.execute(
            "UPDATE owners SET host = ?, seen_at = ? "
            "WHERE id = (SELECT owner_id FROM jobs WHERE id = ?)",
            (host, seen_at, job_id),
        )
        db.commit()
    finally:
        db.close()


async def test_the_owners_file_lock_decides_across_containers(
    store: Store, child: Child, db_path: Path
) -> None:
    # As another container on the same volume sees it: a pid that means nothing here.
    process, job_id = await child()
    set_owner_row(db_path, job_id, "another-container|boot|pid:[9]", time.time() - 10 * LEASE_S)
    assert await store.recover_interrupted() == []  # a silent lease, but the lock is held
    assert status_of(db_path, job_id) == ("running", 2)
    set_owner_row(db_path, job_id, "another-container|boot|pid:[9]", time.time())

    process.kill()
    await process.wait()

    # Gone at once, though its lease has not run out.
    assert [job.id for job in await store.recover_interrupted()] == [job_id]
    assert list((db_path.parent / "owners").iterdir()) == [
        db_path.parent / "owners" / f"{store.owner.id}.lock"
    ]
