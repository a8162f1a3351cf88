"""Retention: removing old job image folders while every job row and charge stays.

A sweep lists ``images/`` once, reads the jobs of those folders in one read, and decides: past
IMAGINE_KEEP_IMAGES_DAYS (by the job's ``created_at``) a folder goes; then, while the folders
left are bigger than IMAGINE_MAX_DATA_GB, the oldest go. A job still queued or running is never
touched, nor anything written in the last ``SETTLE_S``. Each batch of jobs is marked pruned
before its folders are deleted, so a sweep killed half-way leaves folders of pruned jobs behind,
and the next sweep deletes those first: nothing that should be kept is ever marked or deleted.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from bot.config import Settings
from bot.data_dir import DataDirFull
from bot.db import ERRORS as DB_ERRORS
from bot.db import Row

_SWEEP_ERRORS: tuple[type[Exception], ...] = (*DB_ERRORS, DataDirFull)

logger = logging.getLogger("bot.retention")

DAY_S = 86_400.0
GB = 1_000_000_000
# The bot sweeps this long after it starts (the platforms connect first), then every hour.
FIRST_SWEEP_AFTER_S = 30.0
SWEEP_EVERY_S = 3_600.0
# An admission writes its files before its row, and a job failed by a timeout may still save
# the images it was billed for: nothing written (or finished) this recently is removed.
SETTLE_S = 3_600.0
_BATCH = 200
_UNFINISHED = frozenset({"queued", "running"})

# The folder remover (tests replace it to fail half-way).
_remove_tree = shutil.rmtree


class RetentionStore(Protocol):
    """What a sweep needs of the store."""

    data_dir: Path

    async def retention_rows(self, job_ids: Sequence[str]) -> dict[str, Row]:
        """Status, times and prune mark of the jobs that have a row."""
        ...

    async def mark_pruned(
        self, job_ids: Sequence[str], kept_days: float | None, now: float
    ) -> set[str]:
        """Mark finished jobs pruned; the ids marked."""
        ...


@dataclass(frozen=True)
class Folder:
    """One folder under ``images/``: its name (a job id), bytes and newest modification time."""

    name: str
    path: Path
    size: int
    modified: float


@dataclass(frozen=True)
class _Doomed:
    folder: Folder
    mark: bool  # a job row to mark pruned before the folder goes
    kept_days: float | None  # why: the age bound, or None for room
    orphan: bool


@dataclass(frozen=True)
class SweepReport:
    """What one sweep removed (or, dry, would remove) and what it kept."""

    folders: int
    orphans: int
    bytes_freed: int
    bytes_kept: int
    oldest_kept: float | None  # created_at of the oldest job whose images are kept
    over_by: int  # bytes still above IMAGINE_MAX_DATA_GB (what may not be removed yet)
    failed: int  # folders not removed whole; the next sweep removes the rest
    took_s: float
    dry_run: bool


def _measure(folder: Path) -> tuple[int, float]:
    """Bytes of every file below ``folder`` (symlinks not followed) and the newest mtime."""
    size = 0
    try:
        newest = folder.lstat().st_mtime
    except OSError:
        return 0, 0.0
    stack = [folder]
    while stack:
        current = stack.pop()
        try:
            entries = list(os.scandir(current))
        except OSError:
            continue
        for entry in entries:
            try:
                info = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            newest = max(newest, info.st_mtime)
            if entry.is_dir(follow_symlinks=False):
                stack.append(Path(entry.path))
            else:
                size += info.st_size
    return size, newest


def scan(images: Path) -> list[Folder]:
    """Every folder directly under ``images`` with its size (blocking: run it in a thread)."""
    try:
        entries = list(os.scandir(images))
    except FileNotFoundError:
        return []
    folders = []
    for entry in entries:
        if not entry.is_dir(follow_symlinks=False):
            continue  # a stray file or a symlink is not a job's folder: left alone
        path = Path(entry.path)
        size, modified = _measure(path)
        folders.append(Folder(entry.name, path, size, modified))
    return folders


def _decide(
    folders: Sequence[Folder],
    rows: dict[str, Row],
    keep_days: float,
    max_bytes: int | None,
    now: float,
) -> tuple[list[_Doomed], list[tuple[Folder, float, bool]]]:
    """The folders to remove, oldest first, and those kept (with their time, whether a job's)."""
    cutoff = now - keep_days * DAY_S if keep_days > 0 else None
    kept_days = keep_days if keep_days > 0 else None
    doomed: list[_Doomed] = []
    kept: list[tuple[Folder, float, bool]] = []
    candidates: list[tuple[float, str, Folder, bool]] = []  # what the size bound may take
    for folder in folders:
        row = rows.get(folder.name)
        if row is None:
            # No job row: an admission writing its files right now, or one that died.
            if now - folder.modified < SETTLE_S:
                kept.append((folder, folder.modified, False))
            elif cutoff is not None and folder.modified < cutoff:
                doomed.append(_Doomed(folder, False, kept_days, True))
            else:
                candidates.append((folder.modified, folder.name, folder, False))
            continue
        if row["status"] in _UNFINISHED:
            kept.append((folder, float(row["created_at"]), True))
            continue
        if row["images_pruned_at"] is not None:
            # Marked by a sweep that stopped before deleting it all: finish the work.
            doomed.append(_Doomed(folder, False, kept_days, False))
            continue
        created = float(row["created_at"])
        last = max(created, float(row["finished_at"] or created))
        if now - last < SETTLE_S:
            kept.append((folder, created, True))
        elif cutoff is not None and created < cutoff:
            doomed.append(_Doomed(folder, True, kept_days, False))
        else:
            candidates.append((created, folder.name, folder, True))
    candidates.sort(key=lambda c: (c[0], c[1]))
    if max_bytes is not None:
        total = sum(c[2].size for c in candidates) + sum(k[0].size for k in kept)
        taken = 0
        for _, _, folder, is_job in candidates:
            if total <= max_bytes:
                break
            doomed.append(_Doomed(folder, is_job, None, not is_job))
            total -= folder.size
            taken += 1
        candidates = candidates[taken:]
    kept.extend((folder, at, is_job) for at, _, folder, is_job in candidates)
    return doomed, kept


def _remove(folders: Sequence[Folder]) -> list[int | None]:
    """Delete each folder; per folder None when it is gone, else the bytes still left in it."""
    left: list[int | None] = []
    for folder in folders:
        try:
            _remove_tree(folder.path)
        except FileNotFoundError:
            left.append(None)  # another sweep was quicker
        except OSError as exc:
            logger.warning("could not remove all of %s (retried next sweep): %s", folder.path, exc)
            left.append(_measure(folder.path)[0] if folder.path.exists() else None)
        else:
            left.append(None)
    return left


async def sweep(
    store: RetentionStore, settings: Settings, *, dry_run: bool = False, now: float | None = None
) -> SweepReport:
    """Remove the image folders past the age bound, then the oldest past the size bound."""
    started = time.perf_counter()
    now = time.time() if now is None else now
    folders = await asyncio.to_thread(scan, store.data_dir / "images")
    rows = await store.retention_rows([folder.name for folder in folders])
    max_gb = settings.imagine_max_data_gb
    max_bytes = None if max_gb is None else int(max_gb * GB)
    doomed, kept = _decide(folders, rows, settings.imagine_keep_images_days, max_bytes, now)
    # Per doomed folder the bytes it still holds afterwards (None: gone whole).
    left: dict[str, int | None] = {d.folder.name: None for d in doomed}
    skipped: set[str] = set()
    if not dry_run:
        for start in range(0, len(doomed), _BATCH):
            batch = doomed[start : start + _BATCH]
            allowed = await _mark(store, batch, now)
            chosen = [d.folder for d in batch if not d.mark or d.folder.name in allowed]
            # Not marked now: another sweep (another process) marked it first and removes it.
            skipped.update(d.folder.name for d in batch if d.mark and d.folder.name not in allowed)
            remains = await asyncio.to_thread(_remove, chosen)
            left.update((f.name, r) for f, r in zip(chosen, remains, strict=True))
    doomed = [d for d in doomed if d.folder.name not in skipped]
    gone = [d for d in doomed if left[d.folder.name] is None]
    still = sum(r for name, r in left.items() if r is not None and name not in skipped)
    freed = sum(d.folder.size for d in doomed) - still
    kept_bytes = sum(folder.size for folder, _, _ in kept) + still
    job_times = [at for _, at, is_job in kept if is_job]
    report = SweepReport(
        folders=len(gone),
        orphans=sum(1 for d in gone if d.orphan),
        bytes_freed=freed,
        bytes_kept=kept_bytes,
        oldest_kept=min(job_times) if job_times else None,
        over_by=0 if max_bytes is None else max(0, kept_bytes - max_bytes),
        failed=len(doomed) - len(gone),
        took_s=time.perf_counter() - started,
        dry_run=dry_run,
    )
    _log(report)
    return report


async def _mark(store: RetentionStore, batch: Sequence[_Doomed], now: float) -> set[str]:
    """Mark the batch's jobs pruned (grouped by why); the ids whose folders may go."""
    allowed: set[str] = set()
    reasons = {d.kept_days for d in batch if d.mark}
    for kept_days in reasons:
        ids = [d.folder.name for d in batch if d.mark and d.kept_days == kept_days]
        allowed |= await store.mark_pruned(ids, kept_days, now)
    return allowed


def _log(report: SweepReport) -> None:
    verb = "would remove" if report.dry_run else "removed"
    line = (
        f"image sweep{' (dry run)' if report.dry_run else ''}: {verb} {report.folders} "
        f"folder(s) ({report.orphans} with no job), {megabytes(report.bytes_freed)} freed, "
        f"{megabytes(report.bytes_kept)} kept, took {report.took_s:.2f}s"
    )
    if report.failed:
        line += f"; {report.failed} could not be removed whole (retried next sweep)"
    if report.over_by:
        line += f"; still {megabytes(report.over_by)} over IMAGINE_MAX_DATA_GB"
    (logger.warning if report.failed else logger.info)("%s", line)


def megabytes(size: int) -> str:
    """Bytes as megabytes, e.g. '12.3 MB' (1 MB = 1,000,000 bytes, as GB in the setting)."""
    return f"{size / 1_000_000:,.1f} MB"


async def keep_sweeping(
    store: RetentionStore,
    settings: Settings,
    *,
    first_after_s: float = FIRST_SWEEP_AFTER_S,
    every_s: float = SWEEP_EVERY_S,
) -> None:
    """Sweep shortly after start, then every ``every_s``; a failure is logged, never raised."""
    await asyncio.sleep(first_after_s)
    while True:
        try:
            await sweep(store, settings)
        except _SWEEP_ERRORS as exc:
            logger.warning("image sweep failed (tried again in %.0f s): %s", every_s, exc)
        except Exception:
            logger.exception("image sweep failed")
        await asyncio.sleep(every_s)
