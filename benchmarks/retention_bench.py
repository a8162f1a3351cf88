"""Time of one retention sweep over 10,000 job folders; one line per case.

Each job is a succeeded row with one small output file in its own folder. The age case makes
half the jobs 100 days old (IMAGINE_KEEP_IMAGES_DAYS=90); the size case makes them all recent
and caps IMAGINE_MAX_DATA_GB at half of what they hold, so the oldest half goes.
Run: ``.venv/bin/python benchmarks/retention_bench.py [JOBS]``.
"""

from __future__ import annotations

import asyncio
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

from bot.config import Settings
from bot.retention import DAY_S, GB, megabytes, sweep
from bot.store import Store, new_job_id

FILE_BYTES = 2_048


async def _populate(data_dir: Path, jobs: int, now: float, *, old_half: bool) -> int:
    """Write ``jobs`` succeeded jobs with one file each; returns the bytes written."""
    store = await Store.open(data_dir / "imagine.sqlite3")
    await store.close()
    rows, images = [], []
    for i in range(jobs):
        created = now - (100 * DAY_S if old_half and i % 2 == 0 else DAY_S) - i
        job_id = new_job_id(created)
        rows.append((job_id, created, created + 5))
        path = f"images/{job_id}/out_0.png"
        images.append((job_id, path))
        folder = data_dir / "images" / job_id
        folder.mkdir(parents=True)
        (folder / "out_0.png").write_bytes(b"\x89PNG" + b"x" * (FILE_BYTES - 4))
    db = sqlite3.connect(data_dir / "imagine.sqlite3")
    with db:
        db.executemany(
            "INSERT INTO jobs (id, user_key, platform, user_id, prompt, options, status, "
            "created_at, finished_at, charged_images, charged_cost) "
            "VALUES (?, 'cli:bench', 'cli', 'bench', 'a fox', '{}', 'succeeded', ?, ?, 1, 0.04)",
            rows,
        )
        db.executemany(
            "INSERT INTO job_images (job_id, kind, idx, path, mime) "
            "VALUES (?, 'output', 0, ?, 'image/png')",
            images,
        )
    db.close()
    return jobs * FILE_BYTES


async def _case(name: str, jobs: int, *, old_half: bool, size_cap: bool) -> None:
    with tempfile.TemporaryDirectory() as scratch:
        data_dir = Path(scratch) / "data"
        now = time.time()
        written = await _populate(data_dir, jobs, now, old_half=old_half)
        settings = Settings(  # type: ignore[call-arg]
            _env_file=None,
            imagine_data_dir=data_dir,
            imagine_keep_images_days=0 if size_cap else 90,
            imagine_max_data_gb=(written / 2) / GB if size_cap else None,
        )
        store = await Store.open(settings.database_path)
        try:
            dry = await sweep(store, settings, dry_run=True)
            report = await sweep(store, settings)
            again = await sweep(store, settings)
        finally:
            await store.close()
        print(
            f"{name}: {jobs:,} folders, {report.folders:,} freed, "
            f"{megabytes(report.bytes_freed)} ({report.bytes_freed:,} bytes), "
            f"{report.took_s:.2f} s (dry run {dry.took_s:.2f} s, "
            f"next sweep with nothing to do {again.took_s:.2f} s)"
        )


async def main(jobs: int) -> None:
    await _case("age bound (half past 90 days)", jobs, old_half=True, size_cap=False)
    await _case("size bound (cap at half)", jobs, old_half=False, size_cap=True)


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 10_000))
