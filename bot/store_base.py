"""The store's connection plumbing and lookups: jobs, images, message links, dedupe, usage."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import time
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bot import data_dir
from bot.db import INTEGRITY_ERRORS, Conn, Database, Row
from bot.errors import ImagePruned, JobNotFound
from bot.job_rows import job_from_row
from bot.models import JobRecord, SourceImage, StoredImage

EVENT_TTL_S = 86_400.0
_PRUNE_EVERY_S = 3_600.0


@dataclass(frozen=True)
class UsageRow:
    """One user's charged images and dollars for the current UTC day and month."""

    user_key: str
    images_today: int
    cost_today: float
    images_month: int
    cost_month: float


class StoreBase:
    """The database, and every read and small write that isn't a job's lifecycle."""

    def __init__(self, database: Database, path: Path) -> None:
        self._database = database
        self.path = path
        self.data_dir = path.parent
        self._last_prune = float("-inf")

    @property
    def database(self) -> Database:
        """The SQLite file or the shared PostgreSQL database the tables live in."""
        return self._database

    # --- plumbing ---------------------------------------------------------------------------

    @contextlib.contextmanager
    def _full_disk_named(self) -> Iterator[None]:
        # SQLITE_FULL from any statement is the operator's full disk, not an internal error.
        try:
            yield
        except sqlite3.OperationalError as exc:
            if data_dir.is_disk_full(exc):
                raise data_dir.DataDirFull(self.data_dir, paid=False) from None
            raise

    @contextlib.asynccontextmanager
    async def _write(self) -> AsyncIterator[Conn]:
        with self._full_disk_named():
            async with self._database.write() as db:
                yield db

    async def _fetch(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        with self._full_disk_named():
            return await self._database.fetch(sql, params)

    async def _run(self, sql: str, params: Sequence[Any] = ()) -> int:
        with self._full_disk_named():
            return await self._database.run(sql, params)

    def _absolute(self, relative: str) -> Path:
        return self.data_dir / relative

    # --- lookups ----------------------------------------------------------------------------

    async def get_job(self, job_id: str) -> JobRecord | None:
        """The job with this id, or None."""
        rows = await self._fetch("SELECT * FROM jobs WHERE id = ?", (job_id,))
        return job_from_row(rows[0]) if rows else None

    async def job_images(self, job_id: str) -> tuple[StoredImage, ...]:
        """The job's output images still on disk, in order (empty until it succeeds)."""
        rows = await self._fetch(
            "SELECT idx, path, mime FROM job_images WHERE job_id = ? AND kind = 'output' "
            "ORDER BY idx",
            (job_id,),
        )
        images = [StoredImage(row[0], self._absolute(row[1]), row[2]) for row in rows]
        # An operator may prune old image files by hand; a missing file is no image to offer.
        present = await asyncio.to_thread(lambda: [image.path.is_file() for image in images])
        kept = tuple(image for image, exists in zip(images, present, strict=True) if exists)
        if not kept:
            await self._refuse_pruned(job_id)
        return kept

    async def job_sources(self, job_id: str) -> tuple[tuple[SourceImage, ...], SourceImage | None]:
        """The input images and mask saved at admission; JobNotFound if their files are gone.

        ImagePruned when retention removed the inputs of a job that had some.
        """
        rows = await self._fetch(
            "SELECT kind, path, mime, filename, width, height FROM job_images "
            "WHERE job_id = ? AND kind IN ('source', 'mask') ORDER BY kind DESC, idx",
            (job_id,),
        )
        if not rows:
            # A prompt-only job needs no inputs, pruned or not.
            await self._refuse_pruned(job_id, inputs=True)
        try:
            datas = await asyncio.to_thread(
                lambda: [self._absolute(row["path"]).read_bytes() for row in rows]
            )
        except OSError:
            await self._refuse_pruned(job_id)
            raise JobNotFound(job_id) from None
        images = [
            (
                row["kind"],
                SourceImage(data, row["filename"], row["mime"], row["width"], row["height"]),
            )
            for row, data in zip(rows, datas, strict=True)
        ]
        sources = tuple(image for kind, image in images if kind == "source")
        masks = [image for kind, image in images if kind == "mask"]
        return sources, (masks[0] if masks else None)

    async def _refuse_pruned(self, job_id: str, *, inputs: bool = False) -> None:
        """Raise ImagePruned if retention removed the job's images (``inputs``: and it had some)."""
        rows = await self._fetch(
            "SELECT images_pruned_at, images_kept_days, source_count FROM jobs WHERE id = ?",
            (job_id,),
        )
        if rows and rows[0][0] is not None and (not inputs or rows[0][2]):
            raise ImagePruned(job_id, rows[0][1])

    async def retention_rows(self, job_ids: Sequence[str]) -> dict[str, Row]:
        """Status, times and prune mark of those of ``job_ids`` that have a row, read at once."""
        found: dict[str, Row] = {}
        with self._full_disk_named():
            # One read transaction: every chunk sees the same snapshot.
            async with self._database.read() as db:
                for start in range(0, len(job_ids), 500):
                    chunk = job_ids[start : start + 500]
                    rows = await db.execute_fetchall(
                        "SELECT id, status, created_at, finished_at, images_pruned_at "
                        f"FROM jobs WHERE id IN ({', '.join('?' * len(chunk))})",
                        chunk,
                    )
                    found.update((str(row[0]), row) for row in rows)
        return found

    async def mark_pruned(
        self, job_ids: Sequence[str], kept_days: float | None, now: float
    ) -> set[str]:
        """Mark finished jobs as having lost their images and drop their image rows.

        Rows, charges and the ledger stay. Returns the ids marked now: only their folders may go.
        """
        marked: set[str] = set()
        async with self._write() as db:
            for start in range(0, len(job_ids), 500):
                chunk = list(job_ids[start : start + 500])
                ids = f"({', '.join('?' * len(chunk))})"
                rows = await db.execute_fetchall(
                    "UPDATE jobs SET images_pruned_at = ?, images_kept_days = ? "
                    f"WHERE id IN {ids} AND status NOT IN ('queued', 'running') "
                    "AND images_pruned_at IS NULL RETURNING id",
                    (now, kept_days, *chunk),
                )
                done = [str(row[0]) for row in rows]
                if done:
                    await db.execute(
                        f"DELETE FROM job_images WHERE job_id IN ({', '.join('?' * len(done))})",
                        done,
                    )
                marked.update(done)
        return marked

    async def link_message(self, platform: str, message_id: str, job_id: str) -> None:
        """Remember that a platform message shows this job (for replies and buttons)."""
        try:
            await self._run(
                "INSERT INTO message_links (platform, message_id, job_id) VALUES (?, ?, ?) "
                "ON CONFLICT (platform, message_id) DO UPDATE SET job_id = excluded.job_id",
                (platform, message_id, job_id),
            )
        except INTEGRITY_ERRORS:
            raise JobNotFound(job_id) from None

    async def job_for_message(self, platform: str, message_id: str) -> JobRecord | None:
        """The job a platform message shows, or None."""
        rows = await self._fetch(
            "SELECT jobs.* FROM message_links JOIN jobs ON jobs.id = message_links.job_id "
            "WHERE message_links.platform = ? AND message_links.message_id = ?",
            (platform, message_id),
        )
        return job_from_row(rows[0]) if rows else None

    async def set_prompt(self, job_id: str, prompt: str) -> None:
        """The prompt prompt help rewrote (Regenerate then repeats the rewrite)."""
        await self._run("UPDATE jobs SET prompt = ? WHERE id = ?", (prompt, job_id))

    async def settle_text(
        self, job_id: str, prompt: str, cost_usd: float, now: float | None = None
    ) -> None:
        """End a job that made text, not images (a rewrite), charged at what it cost."""
        now = time.time() if now is None else now
        await self._run(
            "UPDATE jobs SET status = 'succeeded', prompt = ?, finished_at = ?, cost_usd = ?, "
            "charged_images = 0, charged_cost = ? WHERE id = ? AND status IN ('queued', 'running')",
            (prompt, now, cost_usd, cost_usd, job_id),
        )

    async def set_platform_ref(self, job_id: str, ref: Mapping[str, object]) -> None:
        """Merge ``ref`` (JSON values) into the job's platform_ref, key by key."""
        async with self._write() as db:
            rows = list(
                await db.execute_fetchall("SELECT platform_ref FROM jobs WHERE id = ?", (job_id,))
            )
            if not rows:
                raise JobNotFound(job_id)
            merged = {**json.loads(rows[0][0] or "{}"), **ref}
            await db.execute(
                "UPDATE jobs SET platform_ref = ? WHERE id = ?", (json.dumps(merged), job_id)
            )

    async def claim_event(self, key: str, now: float | None = None) -> bool:
        """True the first time ``key`` is seen (within a day): the caller should handle it."""
        now = time.time() if now is None else now
        with self._full_disk_named():
            return await self._claim_event(key, now)

    async def _claim_event(self, key: str, now: float) -> bool:
        async with self._database.connection() as db:
            if now - self._last_prune >= _PRUNE_EVERY_S:
                self._last_prune = now
                await db.execute("DELETE FROM events WHERE seen_at < ?", (now - EVENT_TTL_S,))
            added = await db.execute(
                "INSERT INTO events (key, seen_at) VALUES (?, ?) ON CONFLICT (key) DO NOTHING",
                (key, now),
            )
            return added == 1

    async def usage_summary(
        self, user_key: str | None = None, now: float | None = None
    ) -> list[UsageRow]:
        """Charged images and cost per user for this UTC day and month, highest cost first."""
        moment = datetime.fromtimestamp(time.time() if now is None else now, UTC)
        day = moment.replace(hour=0, minute=0, second=0, microsecond=0)
        month = day.replace(day=1)
        next_month = month.replace(year=month.year + month.month // 12, month=month.month % 12 + 1)
        where = "created_at >= ? AND created_at < ?"
        params: list[Any] = [day.timestamp(), day.timestamp(), month.timestamp()]
        params.append(next_month.timestamp())
        if user_key is not None:
            where += " AND user_key = ?"
            params.append(user_key)
        rows = await self._fetch(
            "SELECT user_key, "
            "SUM(CASE WHEN created_at >= ? THEN charged_images ELSE 0 END), "
            "SUM(CASE WHEN created_at >= ? THEN charged_cost ELSE 0 END), "
            "SUM(charged_images) AS images, SUM(charged_cost) AS cost "
            f"FROM jobs WHERE {where} GROUP BY user_key "
            "HAVING SUM(charged_images) > 0 OR SUM(charged_cost) > 0 "
            "ORDER BY cost DESC, images DESC, user_key",
            params,
        )
        summary = [UsageRow(r[0], int(r[1]), float(r[2]), int(r[3]), float(r[4])) for r in rows]
        if user_key is not None and not summary:
            # Asked about one user: "nothing yet" is an answer, not an absence.
            summary.append(UsageRow(user_key, 0, 0.0, 0, 0.0))
        return summary
