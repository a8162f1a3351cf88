"""SQLite persistence: jobs, the usage ledger that limits are counted on, message links, dedupe."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import secrets
import shutil
import sqlite3
import time
from collections.abc import AsyncIterator, Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiosqlite

from bot import data_dir, recovery
from bot.admission import check_rules, guarded_insert
from bot.config import WindowRule
from bot.errors import JobNotFound
from bot.job_files import input_files, output_path, remove_files, write_files
from bot.job_owners import HEARTBEAT_S, new_owner
from bot.migrations import (
    INSERT_IMAGE,
    INSERT_JOB,
    ForeignDatabase,
    configure,
    job_from_row,
    job_row,
    migrate,
    queued_record,
)
from bot.models import (
    ImageRequest,
    JobRecord,
    ProviderResult,
    SourceImage,
    StoredImage,
)

logger = logging.getLogger("bot.store")

BUSY_TIMEOUT_MS = 10_000
EVENT_TTL_S = 86_400.0
_PRUNE_EVERY_S = 3_600.0
_ID_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"
_REFUND = "charged_images = 0, charged_cost = 0"


@dataclass(frozen=True)
class UsageRow:
    """One user's charged images and dollars for the current UTC day and month."""

    user_key: str
    images_today: int
    cost_today: float
    images_month: int
    cost_month: float


def new_job_id(now: float) -> str:
    """A 16-character id that sorts by creation time (milliseconds, then 30 random bits)."""
    value = (max(0, int(now * 1000)) << 30) | secrets.randbits(30)
    chars = []
    for _ in range(16):
        value, digit = divmod(value, 32)
        chars.append(_ID_ALPHABET[digit])
    return "".join(reversed(chars))


class Store:
    """The bot's SQLite file; every method is safe to call from many coroutines at once."""

    def __init__(self, db: aiosqlite.Connection, path: Path) -> None:
        self._db = db
        self.path = path
        self.data_dir = path.parent
        # One connection carries every coroutine's statements, so a transaction must not let
        # another coroutine's statement slip into it; BEGIN IMMEDIATE orders processes.
        self._lock = asyncio.Lock()
        self._last_prune = float("-inf")
        self.owner = new_owner()
        self._heartbeat: asyncio.Task[None] | None = None

    @classmethod
    async def open(cls, path: Path, *, heartbeat_s: float = HEARTBEAT_S) -> Store:
        """Open (creating if needed) the database at ``path`` and bring its schema up to date.

        Jobs left unfinished by processes that are gone are ended (refunded) here, and again
        every ``heartbeat_s`` while the store is open; ConfigError says what's wrong otherwise.
        """
        path = Path(path)
        await asyncio.to_thread(data_dir.prepare_folder, path.parent)
        try:
            db = await aiosqlite.connect(
                str(path), isolation_level=None, timeout=BUSY_TIMEOUT_MS / 1000
            )
        except sqlite3.Error as exc:
            raise data_dir.database_error(path, exc) from None
        store = cls(db, path)
        try:
            db.row_factory = sqlite3.Row
            await configure(db, BUSY_TIMEOUT_MS)
            await migrate(db)
            async with store._write() as tx:
                await recovery.register(tx, store.owner, time.time())
            await store.recover_interrupted()
        except ForeignDatabase as exc:
            await db.close()
            raise data_dir.foreign_database(path, exc.tables) from None
        except sqlite3.DatabaseError as exc:
            await db.close()
            raise data_dir.database_error(path, exc) from None
        except BaseException:
            await db.close()
            raise
        store._heartbeat = asyncio.create_task(store._keep_alive(heartbeat_s))
        return store

    async def close(self) -> None:
        """Close the connection; the store can't be used afterwards."""
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._heartbeat
            self._heartbeat = None
        async with self._lock:
            with contextlib.suppress(sqlite3.Error, ValueError):
                await recovery.release(self._db, self.owner.id)
            await self._db.close()

    async def _keep_alive(self, every_s: float) -> None:
        # Renew this owner's lease and end the jobs of owners that went away meanwhile
        # (a shell command killed mid-call gives its charge back while the bot runs).
        while True:
            await asyncio.sleep(every_s)
            try:
                async with self._write() as db:
                    await recovery.register(db, self.owner, time.time())
                await self.recover_interrupted()
            except (sqlite3.Error, OSError) as exc:
                logger.warning("could not renew the job lease or recover jobs: %s", exc)

    # --- plumbing ---------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _write(self) -> AsyncIterator[aiosqlite.Connection]:
        async with self._lock:
            db = self._db
            try:
                # Inside the try: if we are cancelled while BEGIN is queued, it still runs.
                await db.execute("BEGIN IMMEDIATE")
                yield db
                await db.execute("COMMIT")
            except BaseException:
                # Also on cancellation: the connection's worker runs queued statements in
                # order, so this ROLLBACK lands before the next coroutine's BEGIN.
                with contextlib.suppress(sqlite3.Error, ValueError):
                    await db.execute("ROLLBACK")
                raise

    async def _fetch(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        async with self._lock:
            return list(await self._db.execute_fetchall(sql, params))

    async def _run(self, sql: str, params: Sequence[Any] = ()) -> int:
        async with self._lock:
            cursor = await self._db.execute(sql, params)
            return cursor.rowcount

    def _absolute(self, relative: str) -> Path:
        return self.data_dir / relative

    # --- admission --------------------------------------------------------------------------

    async def admit(
        self,
        request: ImageRequest,
        *,
        limits: Sequence[WindowRule],
        budgets: Sequence[WindowRule],
        estimated_cost: float,
        exempt: bool,
        now: float | None = None,
    ) -> JobRecord:
        """Check the requester's limits and record the job as queued, atomically."""
        now = time.time() if now is None else now
        key = request.requester.key
        n = request.options.n
        rules = () if exempt else (*limits, *budgets)
        job_id = new_job_id(now)
        files = input_files(job_id, request)
        if files and rules:
            # Refuse before writing what may be megabytes of attachments for nothing.
            async with self._lock:
                await check_rules(self._db, key, n, estimated_cost, limits, budgets, now)
        if files:
            writes = [(self._absolute(f.path), f.image.data) for f in files]
            await asyncio.to_thread(write_files, writes)
        row = job_row(job_id, request, now, estimated_cost, self.owner.id)
        if not files:
            # Fast path: one INSERT ... SELECT that adds the row only if every rule allows it.
            # A write statement takes SQLite's write lock before its SELECT reads, so it is
            # as atomic across processes as BEGIN IMMEDIATE, in one trip to the db thread.
            sql, params = INSERT_JOB, list(row)
            if rules:
                sql, params = guarded_insert(row, n, estimated_cost, limits, budgets, now)
            async with self._lock:
                cursor = await self._db.execute(sql, params)
                if cursor.rowcount == 1:
                    return queued_record(job_id, request, now)
                # Refused: name the rule with a plain read; it raises unless charges moved
                # meanwhile, and then the transaction below decides.
                await check_rules(self._db, key, n, estimated_cost, limits, budgets, now)
        try:
            # The slow path names the broken rule, or admits if charges moved meanwhile.
            async with self._write() as db:
                if rules:
                    await check_rules(db, key, n, estimated_cost, limits, budgets, now)
                await db.execute(INSERT_JOB, row)
                if files:
                    await db.executemany(INSERT_IMAGE, [f.row(job_id) for f in files])
        except BaseException:
            if files:
                job_dir = self.data_dir / "images" / job_id
                await asyncio.to_thread(shutil.rmtree, job_dir, True)
            raise
        return queued_record(job_id, request, now)

    # --- job lifecycle ----------------------------------------------------------------------

    async def mark_running(self, job_id: str, now: float | None = None) -> None:
        """Record that the provider call for a queued job has begun."""
        now = time.time() if now is None else now
        await self._run(
            "UPDATE jobs SET status = 'running', started_at = ? WHERE id = ? AND status = 'queued'",
            (now, job_id),
        )

    async def check_writable(self, job_id: str) -> None:
        """Prove the job's image folder can be written, before anything is paid for."""
        try:
            await asyncio.to_thread(data_dir.probe, self.data_dir / "images" / job_id)
        except OSError as exc:
            raise data_dir.write_error(self.data_dir, exc, paid=False) from None

    async def finish(
        self, job_id: str, result: ProviderResult, cost_usd: float, now: float | None = None
    ) -> tuple[StoredImage, ...]:
        """Save the output images and settle the job's charge at its real cost.

        When they can't be saved (disk full), nothing is delivered: the job ends failed and
        refunded, keeping ``cost_usd`` as what the provider billed, and DataDirFull (or
        DataDirUnwritable) is raised.
        """
        now = time.time() if now is None else now
        rows = await self._fetch("SELECT status FROM jobs WHERE id = ?", (job_id,))
        if not rows:
            raise JobNotFound(job_id)
        if rows[0]["status"] == "succeeded":
            return await self.job_images(job_id)
        # A job failed meanwhile (a timeout, a restart) still succeeds here: the provider
        # made and billed these images, so the user gets them and the ledger shows them.
        outputs = [
            (i, output_path(job_id, i, image.mime), image) for i, image in enumerate(result.images)
        ]
        writes = [(self._absolute(path), image.data) for _, path, image in outputs]
        usage = None if result.usage is None else json.dumps(dataclasses.asdict(result.usage))
        try:
            await asyncio.to_thread(write_files, writes)
        except OSError as exc:
            error = data_dir.write_error(self.data_dir, exc, paid=True, cost_usd=cost_usd)
            await self._unsaved(job_id, error.user_message, now, usage, cost_usd, result)
            raise error from None
        try:
            async with self._write() as db:
                await db.execute(
                    "UPDATE jobs SET status = 'succeeded', error = NULL, finished_at = ?, "
                    "usage = ?, cost_usd = ?, charged_images = ?, charged_cost = ?, "
                    "request_id = ? WHERE id = ?",
                    (now, usage, cost_usd, len(outputs), cost_usd, result.request_id, job_id),
                )
                await db.executemany(
                    "INSERT OR REPLACE INTO job_images (job_id, kind, idx, path, mime) "
                    "VALUES (?, 'output', ?, ?, ?)",
                    [(job_id, i, path, image.mime) for i, path, image in outputs],
                )
        except BaseException as exc:
            await asyncio.to_thread(remove_files, [path for path, _ in writes])
            if isinstance(exc, sqlite3.OperationalError) and data_dir.is_disk_full(exc):
                full = data_dir.DataDirFull(self.data_dir, paid=True, cost_usd=cost_usd)
                with contextlib.suppress(sqlite3.Error):
                    await self._unsaved(job_id, full.user_message, now, usage, cost_usd, result)
                raise full from None
            raise
        return tuple(StoredImage(i, self._absolute(path), image.mime) for i, path, image in outputs)

    async def _unsaved(
        self,
        job_id: str,
        error: str,
        now: float,
        usage: str | None,
        cost_usd: float,
        result: ProviderResult,
    ) -> None:
        # Billed but not delivered: the user's charge is given back, the real cost kept.
        await self._run(
            f"UPDATE jobs SET status = 'failed', error = ?, finished_at = ?, {_REFUND}, "
            "usage = ?, cost_usd = ?, request_id = ? WHERE id = ? AND status <> 'succeeded'",
            (error, now, usage, cost_usd, result.request_id, job_id),
        )
        await self._remove_orphans([job_id])

    async def fail(
        self, job_id: str, error: str, *, status: str = "failed", now: float | None = None
    ) -> None:
        """End an unfinished job as failed or interrupted and give its charge back."""
        if status not in ("failed", "interrupted"):
            raise ValueError(f"fail() takes status 'failed' or 'interrupted', not {status!r}")
        now = time.time() if now is None else now
        changed = await self._run(
            f"UPDATE jobs SET status = ?, error = ?, finished_at = ?, {_REFUND} "
            "WHERE id = ? AND status IN ('queued', 'running')",
            (status, error, now, job_id),
        )
        if changed:
            await self._remove_orphans([job_id])

    async def recover_interrupted(self, now: float | None = None) -> list[JobRecord]:
        """End the unfinished jobs whose process is gone as interrupted, refunded; return them.

        A job whose owner still runs (another process, another open store) is left alone.
        Their partial files are deleted; their users are told via ``claim_interrupted``.
        """
        now = time.time() if now is None else now
        async with self._write() as db:
            dead = await recovery.dead_owners(db, now)
            rows = await recovery.interrupt(db, dead, now)
            await recovery.forget_owners(db, now)
        jobs = sorted((job_from_row(row) for row in rows), key=lambda job: job.created_at)
        if jobs:
            freed = await self._remove_orphans([job.id for job in jobs])
            logger.warning(
                "%d job(s) left unfinished by a stopped process ended as interrupted and "
                "refunded (%d bytes of partial files removed)",
                len(jobs),
                freed,
            )
        return jobs

    async def claim_interrupted(self, platforms: Collection[str] | None = None) -> list[JobRecord]:
        """Interrupted jobs (of ``platforms``, or any) whose users weren't told yet, once each."""
        async with self._write() as db:
            rows = await recovery.claim_unannounced(db, platforms)
        return sorted((job_from_row(row) for row in rows), key=lambda job: job.created_at)

    async def _remove_orphans(self, job_ids: Sequence[str]) -> int:
        async with self._lock:
            kept = await recovery.kept_files(self._db, job_ids)
        return await asyncio.to_thread(recovery.remove_orphans, self.data_dir, kept)

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
        return tuple(image for image, exists in zip(images, present, strict=True) if exists)

    async def job_sources(self, job_id: str) -> tuple[tuple[SourceImage, ...], SourceImage | None]:
        """The input images and mask saved at admission; JobNotFound if their files are gone."""
        rows = await self._fetch(
            "SELECT kind, path, mime, filename, width, height FROM job_images "
            "WHERE job_id = ? AND kind IN ('source', 'mask') ORDER BY kind DESC, idx",
            (job_id,),
        )
        try:
            datas = await asyncio.to_thread(
                lambda: [self._absolute(row["path"]).read_bytes() for row in rows]
            )
        except OSError:
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

    async def link_message(self, platform: str, message_id: str, job_id: str) -> None:
        """Remember that a platform message shows this job (for replies and buttons)."""
        try:
            await self._run(
                "INSERT OR REPLACE INTO message_links (platform, message_id, job_id) "
                "VALUES (?, ?, ?)",
                (platform, message_id, job_id),
            )
        except sqlite3.IntegrityError:
            raise JobNotFound(job_id) from None

    async def job_for_message(self, platform: str, message_id: str) -> JobRecord | None:
        """The job a platform message shows, or None."""
        rows = await self._fetch(
            "SELECT jobs.* FROM message_links JOIN jobs ON jobs.id = message_links.job_id "
            "WHERE message_links.platform = ? AND message_links.message_id = ?",
            (platform, message_id),
        )
        return job_from_row(rows[0]) if rows else None

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
        async with self._lock:
            if now - self._last_prune >= _PRUNE_EVERY_S:
                self._last_prune = now
                await self._db.execute("DELETE FROM events WHERE seen_at < ?", (now - EVENT_TTL_S,))
            cursor = await self._db.execute(
                "INSERT OR IGNORE INTO events (key, seen_at) VALUES (?, ?)", (key, now)
            )
            return cursor.rowcount == 1

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
            f"FROM jobs WHERE {where} GROUP BY user_key HAVING images > 0 OR cost > 0 "
            "ORDER BY cost DESC, images DESC, user_key",
            params,
        )
        summary = [UsageRow(r[0], int(r[1]), float(r[2]), int(r[3]), float(r[4])) for r in rows]
        if user_key is not None and not summary:
            # Asked about one user: "nothing yet" is an answer, not an absence.
            summary.append(UsageRow(user_key, 0, 0.0, 0, 0.0))
        return summary
