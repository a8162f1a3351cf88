"""Owner rows, the lease, and ending the jobs of owners that are gone (refunded, files removed)."""

from __future__ import annotations

import contextlib
from collections.abc import Collection, Iterable
from pathlib import Path

from bot.db import Conn, Row
from bot.job_owners import FORGET_AFTER_S, Owner, owner_alive

_UNFINISHED = "status IN ('queued', 'running')"
INTERRUPTED_ERROR = "interrupted: the process running it stopped"


async def register(db: Conn, owner: Owner, now: float, *, locked: bool) -> None:
    """Record (or, after it was forgotten, record again) that ``owner`` is alive."""
    await db.execute(
        "INSERT INTO owners (id, host, pid, pid_start, started_at, seen_at, locked) "
        "VALUES (?, ?, ?, ?, ?, ?, ?) "
        "ON CONFLICT (id) DO UPDATE SET seen_at = excluded.seen_at",
        (owner.id, owner.host, owner.pid, owner.pid_start, now, now, int(locked)),
    )


async def release(db: Conn, owner_id: str) -> None:
    """The owner's store closed: whatever it left unfinished is anyone's to recover."""
    await db.execute("UPDATE owners SET released = 1 WHERE id = ?", (owner_id,))


async def dead_owners(
    db: Conn, data_dir: Path, now: float, held: Collection[str] | None = None
) -> list[str | None]:
    """Owners (None: a job from before owners existed) of unfinished jobs who are gone.

    ``held``: on a shared database, the owners whose instance holds its session lock; any
    other owner not closed is gone (its connection, and with it the lock, died with it).
    """
    rows = await db.execute_fetchall(
        "SELECT DISTINCT jobs.owner_id, owners.id, owners.host, owners.pid, owners.pid_start, "
        "owners.seen_at, owners.released, owners.locked "
        "FROM jobs LEFT JOIN owners ON owners.id = jobs.owner_id "
        f"WHERE jobs.{_UNFINISHED}"
    )
    dead: list[str | None] = []
    for row in rows:
        if row[1] is None:
            dead.append(row[0])  # no owner row at all: nobody can finish it
            continue
        if held is not None:
            if bool(row[6]) or str(row[1]) not in held:
                dead.append(row[0])
            continue
        lock = (data_dir, str(row[1])) if row[7] else None
        if not owner_alive(row[2], int(row[3]), row[4], float(row[5]), bool(row[6]), now, lock):
            dead.append(row[0])
    return dead


async def interrupt(db: Conn, owners: Collection[str | None], now: float) -> list[Row]:
    """End the unfinished jobs of ``owners`` as interrupted, refunded; return their rows."""
    if not owners:
        return []
    ids = [owner for owner in owners if owner is not None]
    match = f"owner_id IN ({', '.join('?' * len(ids))})" if ids else "FALSE"
    if None in owners:
        match = f"({match} OR owner_id IS NULL)"
    # Nobody is told about a shell job: its user saw the command end.
    rows = await db.execute_fetchall(
        "UPDATE jobs SET status = 'interrupted', finished_at = ?, error = ?, "
        "charged_images = 0, charged_cost = 0, "
        "announced = CASE WHEN platform = 'cli' THEN 1 ELSE 0 END "
        f"WHERE {_UNFINISHED} AND {match} RETURNING *",
        (now, INTERRUPTED_ERROR, *ids),
    )
    return list(rows)


async def free_slots(db: Conn, owners: Collection[str | None]) -> None:
    """Drop the shared provider slots ``owners`` held: their instances are gone."""
    ids = [owner for owner in owners if owner is not None]
    if ids:
        await db.execute(
            f"DELETE FROM slot_leases WHERE owner_id IN ({', '.join('?' * len(ids))})", ids
        )


async def forget_owners(db: Conn, now: float) -> list[str]:
    """Drop owner rows nothing refers to any more (closed stores, long-silent processes).

    Returns the ids of those that had a lock file, which may be left behind by a kill.
    """
    rows = await db.execute_fetchall(
        "DELETE FROM owners WHERE (released = 1 OR seen_at < ?) AND NOT EXISTS "
        f"(SELECT 1 FROM jobs WHERE jobs.owner_id = owners.id AND jobs.{_UNFINISHED}) "
        "RETURNING id, locked",
        (now - FORGET_AFTER_S,),
    )
    return [str(row[0]) for row in rows if row[1]]


async def claim_unannounced(db: Conn, platforms: Collection[str] | None) -> list[Row]:
    """Interrupted jobs nobody has told their user about yet, now marked as told."""
    where = "status = 'interrupted' AND announced = 0"
    params: list[str] = []
    if platforms is not None:
        if not platforms:
            return []
        where += f" AND platform IN ({', '.join('?' * len(platforms))})"
        params = list(platforms)
    rows = await db.execute_fetchall(
        f"UPDATE jobs SET announced = 1 WHERE {where} RETURNING *", params
    )
    return list(rows)


async def kept_files(db: Conn, job_ids: Iterable[str]) -> dict[str, set[str]]:
    """Per job, the file paths (relative to the data dir) its ``job_images`` rows refer to."""
    ids = list(job_ids)
    kept: dict[str, set[str]] = {job_id: set() for job_id in ids}
    for start in range(0, len(ids), 500):
        chunk = ids[start : start + 500]
        rows = await db.execute_fetchall(
            f"SELECT job_id, path FROM job_images WHERE job_id IN ({', '.join('?' * len(chunk))})",
            chunk,
        )
        for row in rows:
            kept[str(row[0])].add(str(row[1]))
    return kept


def remove_orphans(data_dir: Path, kept: dict[str, set[str]]) -> int:
    """Delete what each job's folder holds beyond ``kept`` (partial writes, unsaved outputs).

    Blocking: run it in a thread. Returns the bytes freed; a folder left empty goes too.
    """
    freed = 0
    for job_id, keep in kept.items():
        folder = data_dir / "images" / job_id
        try:
            entries = list(folder.iterdir())
        except OSError:
            continue
        for entry in entries:
            relative = f"images/{job_id}/{entry.name}"
            if relative in keep or not entry.is_file():
                continue
            try:
                size = entry.stat().st_size
                entry.unlink()
            except OSError:
                continue
            freed += size
        with contextlib.suppress(OSError):  # not empty: it holds the job's saved inputs
            folder.rmdir()
    return freed
