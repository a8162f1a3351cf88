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
from collections.abc import Collection, Sequence
from pathlib import Path

import aiosqlite

from bot import data_dir, pg_schema, recovery
from bot.admission import ADMIT_CALL, admit_call, check_rules, guarded_insert
from bot.config import Settings, WindowRule
from bot.db import ERRORS as DB_ERRORS
from bot.db import Conn, Database, PgDatabase, SqliteDatabase
from bot.errors import ConfigError, JobNotFound
from bot.job_files import input_files, output_path, remove_files, write_files
from bot.job_owners import HEARTBEAT_S, OwnerLock, lock_held, new_owner
from bot.job_rows import INSERT_IMAGE, INSERT_JOB, job_from_row, job_row, queued_record
from bot.migrations import ForeignDatabase, configure, migrate
from bot.models import ImageRequest, JobRecord, ProviderResult, StoredImage
from bot.policy import Counted, Rules
from bot.reports import ReportStore

logger = logging.getLogger("bot.store")

BUSY_TIMEOUT_MS = 10_000
# A provider slot held in a shared database lasts this long unless its instance renews it
# (every heartbeat); an instance that died frees its slots by then at the latest.
SLOT_LEASE_S = 90.0
_DB_OR_DISK: tuple[type[Exception], ...] = (*DB_ERRORS, data_dir.DataDirFull)
_DB_DISK_VALUE: tuple[type[Exception], ...] = (*_DB_OR_DISK, ValueError)
_ID_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"
_REFUND = "charged_images = 0, charged_cost = 0"


def new_job_id(now: float) -> str:
    """A 16-character id that sorts by creation time (milliseconds, then 30 random bits)."""
    value = (max(0, int(now * 1000)) << 30) | secrets.randbits(30)
    chars = []
    for _ in range(16):
        value, digit = divmod(value, 32)
        chars.append(_ID_ALPHABET[digit])
    return "".join(reversed(chars))


class Store(ReportStore):
    """The bot's SQLite file; every method is safe to call from many coroutines at once."""

    def __init__(self, database: Database, path: Path) -> None:
        super().__init__(database, path)
        self.owner = new_owner()
        self._owner_lock: OwnerLock | None = None
        self._heartbeat: asyncio.Task[None] | None = None
        # Endings (failed, refunded) that could not be written: the job would stay running and
        # charged while this owner lives, so they are written again until they land.
        self._unended: dict[str, tuple[str, tuple[object, ...]]] = {}

    @classmethod
    async def open_settings(cls, settings: Settings) -> Store:
        """The store the settings name: IMAGINE_DATABASE_URL, else the data folder's file."""
        url = settings.imagine_database_url
        return await cls.open(
            settings.database_path, database_url=None if url is None else url.get_secret_value()
        )

    @classmethod
    async def open(
        cls, path: Path, *, database_url: str | None = None, heartbeat_s: float = HEARTBEAT_S
    ) -> Store:
        """Open (creating if needed) the database at ``path`` and bring its schema up to date.

        With ``database_url`` the tables live in that PostgreSQL database instead, shared with
        other instances, and ``path``'s folder holds only the images. Jobs left unfinished by
        processes that are gone are ended (refunded) here, and again every ``heartbeat_s``
        while the store is open; ConfigError says what's wrong otherwise.
        """
        path = Path(path)
        await asyncio.to_thread(data_dir.prepare_folder, path.parent)
        if database_url is not None:
            return await cls._open_pg(path, database_url, heartbeat_s)
        try:
            db = await aiosqlite.connect(
                str(path), isolation_level=None, timeout=BUSY_TIMEOUT_MS / 1000
            )
        except sqlite3.Error as exc:
            raise data_dir.database_error(path, exc) from None
        store = cls(SqliteDatabase(db), path)
        try:
            db.row_factory = sqlite3.Row
            await configure(db, BUSY_TIMEOUT_MS)
            await migrate(db)
            # Locked before the owner row exists, so nobody can find it unlocked.
            store._owner_lock = await asyncio.to_thread(
                OwnerLock.take, store.data_dir, store.owner.id
            )
            await store._register()
            await store.recover_interrupted()
        except BaseException as exc:
            await db.close()
            if store._owner_lock is not None:
                await asyncio.to_thread(store._owner_lock.release)
            if isinstance(exc, ForeignDatabase):
                raise data_dir.foreign_database(path, exc.tables) from None
            if isinstance(exc, sqlite3.DatabaseError):
                raise data_dir.database_error(path, exc) from None
            raise
        store._heartbeat = asyncio.create_task(store._keep_alive(heartbeat_s))
        return store

    @classmethod
    async def _open_pg(cls, path: Path, url: str, heartbeat_s: float) -> Store:
        database = await PgDatabase.open(url)
        store = cls(database, path)
        try:
            async with database.pool.acquire() as conn:
                await pg_schema.migrate(conn)
            # Held before the owner row exists, so nobody can find it without its lock.
            await database.hold_owner_lock(store.owner.id)
            await store._register()
            await store.recover_interrupted()
        except BaseException as exc:
            await database.close()
            if isinstance(exc, ForeignDatabase):
                raise ConfigError(
                    "IMAGINE_DATABASE_URL",
                    "that database's schema holds another application's tables "
                    f"({', '.join(exc.tables[:5])}); give imagine-bot a database or schema "
                    "of its own",
                ) from None
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
        await self.end_unrecorded()
        with contextlib.suppress(*DB_ERRORS, ValueError):
            async with self._database.connection() as db:
                await recovery.release(db, self.owner.id)
                await db.execute("DELETE FROM slot_leases WHERE owner_id = ?", (self.owner.id,))
        await self._database.close()
        if self._owner_lock is not None:
            await asyncio.to_thread(self._owner_lock.release)
            self._owner_lock = None

    async def _register(self) -> None:
        if isinstance(self._database, PgDatabase):
            # Lost with its connection (the server restarted): take it again first.
            await self._database.hold_owner_lock(self.owner.id)
        async with self._write() as db:
            locked = self._owner_lock is not None or self._database.shared
            await recovery.register(db, self.owner, time.time(), locked=locked)

    async def _keep_alive(self, every_s: float) -> None:
        while True:
            await asyncio.sleep(every_s)
            await self.heartbeat()

    async def heartbeat(self) -> None:
        """Write lost endings again, renew the lease, end the jobs of owners that went away."""
        await self.end_unrecorded()
        try:
            await self._register()
            await self.renew_slots()
            await self.recover_interrupted()
        except _DB_OR_DISK as exc:
            logger.warning("could not renew the job lease or recover jobs: %s", exc)

    async def end_unrecorded(self) -> list[str]:
        """Write again the endings (failed, refunded) that could not be recorded; the ids ended."""
        ended: list[str] = []
        for job_id, (sql, params) in list(self._unended.items()):
            try:
                changed = await self._run(sql, params)
            except _DB_DISK_VALUE as exc:
                logger.warning("still could not record job %s as ended: %s", job_id, exc)
                continue
            del self._unended[job_id]
            if changed:
                ended.append(job_id)
        if ended:
            logger.warning("%d job(s) recorded as failed and refunded on retry", len(ended))
            with contextlib.suppress(*DB_ERRORS):
                await self._remove_orphans(ended)
        return ended

    async def _end(self, job_id: str, sql: str, params: tuple[object, ...]) -> int:
        try:
            changed = await self._run(sql, params)
        except _DB_OR_DISK:
            self._unended[job_id] = (sql, params)
            raise
        self._unended.pop(job_id, None)
        return changed

    # --- admission --------------------------------------------------------------------------

    async def admit(
        self,
        request: ImageRequest,
        *,
        estimated_cost: float,
        scopes: Sequence[Counted] | None = None,
        limits: Sequence[WindowRule] = (),
        budgets: Sequence[WindowRule] = (),
        exempt: bool = False,
        now: float | None = None,
    ) -> JobRecord:
        """Check every scope's rules and record the job as queued, atomically.

        ``scopes`` are the rules that count (``bot.policy``); without them, ``limits`` and
        ``budgets`` are the requester's own (none when ``exempt``).
        """
        if scopes is None:
            rules = Rules(tuple(limits), tuple(budgets))
            own = Counted("user", request.requester.key, rules)
            scopes = () if exempt or not rules else (own,)
        try:
            counted = tuple(s for s in scopes if s.rules)
            job = await self._admit(request, counted, estimated_cost, now)
        except sqlite3.OperationalError as exc:
            if data_dir.is_disk_full(exc):
                raise data_dir.DataDirFull(self.data_dir, paid=False) from None
            raise
        if self._unended:
            # The database takes writes again: end what could not be ended before.
            await self.end_unrecorded()
        return job

    async def _admit(
        self,
        request: ImageRequest,
        scopes: Sequence[Counted],
        estimated_cost: float,
        now: float | None,
    ) -> JobRecord:
        now = time.time() if now is None else now
        n = request.options.n
        platform = request.requester.platform
        job_id = new_job_id(now)
        files = input_files(job_id, request)

        async def check(db: Conn) -> None:
            await check_rules(db, scopes, n, estimated_cost, now, platform)

        if files and scopes:
            # Refuse before writing what may be megabytes of attachments for nothing.
            async with self._database.connection() as db:
                await check(db)
        if files:
            writes = [(self._absolute(f.path), f.image.data) for f in files]
            try:
                await asyncio.to_thread(write_files, writes)
            except OSError as exc:
                await asyncio.to_thread(shutil.rmtree, self.data_dir / "images" / job_id, True)
                raise data_dir.write_error(self.data_dir, exc, paid=False) from None
        row = job_row(job_id, request, now, estimated_cost, self.owner.id)
        if not files:
            # Fast path: one INSERT ... SELECT that adds the row only if every rule allows it.
            # A write statement takes SQLite's write lock before its SELECT reads, so it is
            # as atomic across processes as BEGIN IMMEDIATE, in one trip to the db thread.
            # On PostgreSQL one call of imagine_admit does the same under the writers' lock.
            sql, params = INSERT_JOB, list(row)
            if scopes and isinstance(self._database, PgDatabase):
                sql, params = admit_call(row, scopes, now)
            elif scopes:
                sql, params = guarded_insert(row, n, estimated_cost, scopes, now)
            async with self._database.connection() as db:
                if sql is ADMIT_CALL:
                    admitted = bool((await db.execute_fetchall(sql, params))[0][0])
                else:
                    admitted = await db.execute(sql, params) == 1
                if admitted:
                    return queued_record(job_id, request, now)
                # Refused: name the rule with a plain read; it raises unless charges moved
                # meanwhile, and then the transaction below decides.
                await check(db)
        try:
            # The slow path names the broken rule, or admits if charges moved meanwhile.
            async with self._write() as db:
                if scopes:
                    await check(db)
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
        # A full disk here raises DataDirFull (nothing paid yet) like every store write.
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
                    "INSERT INTO job_images (job_id, kind, idx, path, mime) "
                    "VALUES (?, 'output', ?, ?, ?) ON CONFLICT (job_id, kind, idx) "
                    "DO UPDATE SET path = excluded.path, mime = excluded.mime",
                    [(job_id, i, path, image.mime) for i, path, image in outputs],
                )
        except BaseException as exc:
            await asyncio.to_thread(remove_files, [path for path, _ in writes])
            if isinstance(exc, data_dir.DataDirFull) or (
                isinstance(exc, sqlite3.OperationalError) and data_dir.is_disk_full(exc)
            ):
                full = data_dir.DataDirFull(self.data_dir, paid=True, cost_usd=cost_usd)
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
        # Files go first: on a full disk the database needs their room to record this.
        await self._remove_orphans([job_id])
        try:
            await self._end(
                job_id,
                f"UPDATE jobs SET status = 'failed', error = ?, finished_at = ?, {_REFUND}, "
                "usage = ?, cost_usd = ?, request_id = ? WHERE id = ? AND status <> 'succeeded'",
                (error, now, usage, cost_usd, result.request_id, job_id),
            )
        except _DB_OR_DISK as exc:
            logger.warning("could not record job %s as unsaved (retried later): %s", job_id, exc)

    async def fail(
        self,
        job_id: str,
        error: str,
        *,
        status: str = "failed",
        cost_usd: float | None = None,
        cancelled_by: str | None = None,
        now: float | None = None,
    ) -> None:
        """End an unfinished job as failed or interrupted and give its charge back.

        ``cost_usd``: what the provider may have billed; ``cancelled_by``: who cancelled it. An
        ending that can't be written is retried by the heartbeat, the next admission and close."""
        if status not in ("failed", "interrupted"):
            raise ValueError(f"fail() takes status 'failed' or 'interrupted', not {status!r}")
        now = time.time() if now is None else now
        cost = "" if cost_usd is None else ", cost_usd = ?"
        cost += "" if cancelled_by is None else ", cancelled_by = ?"
        params: tuple[object, ...] = (status, error, now)
        params += () if cost_usd is None else (cost_usd,)
        params += () if cancelled_by is None else (cancelled_by,)
        changed = await self._end(
            job_id,
            f"UPDATE jobs SET status = ?, error = ?, finished_at = ?, {_REFUND}{cost} "
            "WHERE id = ? AND status IN ('queued', 'running')",
            (*params, job_id),
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
            held = None
            if isinstance(self._database, PgDatabase):
                owners = await db.execute_fetchall("SELECT id FROM owners")
                held = await self._database.held_owners(db, (str(r[0]) for r in owners))
            dead = await recovery.dead_owners(db, self.data_dir, now, held)
            rows = await recovery.interrupt(db, dead, now)
            await recovery.free_slots(db, dead)
            forgotten = await recovery.forget_owners(db, now)
        for owner_id in forgotten:
            # A killed owner's lock file stays behind; testing the lock removes it if free.
            await asyncio.to_thread(lock_held, self.data_dir, owner_id)
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

    # --- provider slots shared by instances -------------------------------------------------

    async def take_slot(self, job_id: str, cap: int, now: float | None = None) -> bool:
        """Lease one of ``cap`` provider slots shared by every instance; False if all are held.

        Only on a shared database; the caller already holds one of this process's own slots.
        """
        now = time.time() if now is None else now
        async with self._write() as db:
            await db.execute("DELETE FROM slot_leases WHERE expires_at < ?", (now,))
            taken = await db.execute(
                "INSERT INTO slot_leases (job_id, owner_id, expires_at) "
                "SELECT CAST(? AS TEXT), CAST(? AS TEXT), CAST(? AS DOUBLE PRECISION) "
                "WHERE (SELECT COUNT(*) FROM slot_leases) < ? "
                "ON CONFLICT (job_id) DO NOTHING",
                (job_id, self.owner.id, now + SLOT_LEASE_S, cap),
            )
            if taken:
                return True
            # Already holding one (a retried call) counts as having it.
            rows = await db.execute_fetchall(
                "SELECT 1 FROM slot_leases WHERE job_id = ? AND owner_id = ?",
                (job_id, self.owner.id),
            )
            return bool(rows)

    async def give_slot(self, job_id: str) -> None:
        """Free the shared provider slot the job held, if any."""
        await self._run(
            "DELETE FROM slot_leases WHERE job_id = ? AND owner_id = ?", (job_id, self.owner.id)
        )

    async def renew_slots(self, now: float | None = None) -> None:
        """Extend every shared slot this store holds by another lease."""
        if not self._database.shared:
            return
        now = time.time() if now is None else now
        await self._run(
            "UPDATE slot_leases SET expires_at = ? WHERE owner_id = ?",
            (now + SLOT_LEASE_S, self.owner.id),
        )

    async def _remove_orphans(self, job_ids: Sequence[str]) -> int:
        async with self._database.connection() as db:
            kept = await recovery.kept_files(db, job_ids)
        return await asyncio.to_thread(recovery.remove_orphans, self.data_dir, kept)
