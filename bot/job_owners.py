"""Which process owns a job, and whether that process is still there to finish it.

Each open store registers an owner row (a random id, the host, the pid and that pid's start
time) and holds an exclusive lock on ``owners/<id>.lock`` in the data folder until it closes;
the kernel drops the lock the moment the process dies, even from kill -9, and it is seen from
every container sharing the volume. A job records its owner at admission. Recovery ends only
jobs whose owner is gone: a store closed, a lock nobody holds, or, where locks are not
available, a pid on this host that has died (or was reused) or a lease nobody renewed.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import socket
import time
from dataclasses import dataclass
from functools import cache
from pathlib import Path

try:
    import fcntl
except ImportError:  # Windows: fall back to pids and the lease
    fcntl = None  # type: ignore[assignment]

# A live store renews its lease every HEARTBEAT_S; LEASE_S of silence means its process is gone.
# Only owners on another host are judged by the lease: on this host the pid tells for sure.
HEARTBEAT_S = 30.0
LEASE_S = 120.0
# Owner rows with no unfinished job are kept this long after their last sign of life.
FORGET_AFTER_S = 86_400.0

_PROC = Path("/proc")


@dataclass(frozen=True)
class Owner:
    """One open store in one process."""

    id: str
    host: str
    pid: int
    pid_start: str  # the kernel's start time of ``pid``; '' where it can't be read


@cache
def this_host() -> str:
    """This machine and pid namespace: pids are comparable only between equal values."""
    parts = [socket.gethostname()]
    # boot_id changes at every boot (pids restart); the pid namespace differs per container
    # even when containers share a host name (network_mode: host).
    for source in (_PROC / "sys/kernel/random/boot_id", _PROC / "self/ns/pid"):
        try:
            parts.append(os.readlink(source) if source.is_symlink() else source.read_text().strip())
        except OSError:
            parts.append("")
    return "|".join(parts)


def process_start(pid: int) -> str | None:
    """The start time of a running ``pid`` ('' if unknowable here), or None if it is gone."""
    try:
        stat = (_PROC / str(pid) / "stat").read_text()
    except FileNotFoundError:
        return None
    except OSError:
        return _signal_probe(pid)
    # The command name in parentheses may hold spaces; the fields after it are fixed.
    fields = stat.rpartition(")")[2].split()
    if len(fields) < 20:
        return _signal_probe(pid)
    if fields[0] in ("Z", "X"):
        return None  # a zombie is dead; only its parent has not reaped it yet
    return fields[19]


def _signal_probe(pid: int) -> str | None:
    # Without /proc (macOS): signal 0 says whether the pid exists, not whether it was reused.
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        return ""
    return ""


def new_owner() -> Owner:
    """The owner a store opened now in this process registers."""
    pid = os.getpid()
    return Owner(secrets.token_hex(8), this_host(), pid, process_start(pid) or "")


def lock_path(data_dir: Path, owner_id: str) -> Path:
    """The file an owner keeps locked while it is alive."""
    return data_dir / "owners" / f"{owner_id}.lock"


class OwnerLock:
    """An exclusive lock held while a store is open (blocking calls: run them in a thread)."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd: int | None = fd

    @classmethod
    def take(cls, data_dir: Path, owner_id: str) -> OwnerLock | None:
        """Create and lock the owner's file; None where file locks aren't available."""
        if fcntl is None:
            return None
        path = lock_path(data_dir, owner_id)
        try:
            path.parent.mkdir(exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError:
            return None
        try:
            # flock, not lockf: its locks belong to the open file, so a second store in the
            # same process sees the first one's lock as held.
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return None
        return cls(path, fd)

    def release(self) -> None:
        """Remove the file and let go of the lock."""
        if self._fd is None:
            return
        with contextlib.suppress(OSError):
            self.path.unlink()
        os.close(self._fd)
        self._fd = None


def lock_held(data_dir: Path, owner_id: str) -> bool | None:
    """True if the owner's lock is held, False if not (its file is then removed), None: unknown."""
    if fcntl is None:
        return None
    path = lock_path(data_dir, owner_id)
    try:
        fd = os.open(path, os.O_RDWR)
    except FileNotFoundError:
        return False
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        except OSError:
            return None
        with contextlib.suppress(OSError):
            path.unlink()  # ours now, and its owner is gone
        return False
    finally:
        os.close(fd)


def owner_alive(
    host: str,
    pid: int,
    pid_start: str,
    seen_at: float,
    released: bool,
    now: float | None = None,
    lock: tuple[Path, str] | None = None,
) -> bool:
    """True while the owner described by an ``owners`` row may still finish its jobs.

    ``lock`` (data folder, owner id) is given for an owner that locked its file: that decides.
    """
    if released:
        return False
    if lock is not None:
        held = lock_held(*lock)
        if held is not None:
            return held
    if host != this_host():
        return (time.time() if now is None else now) - seen_at < LEASE_S
    start = process_start(pid)
    if start is None:
        return False
    return not (start and pid_start and start != pid_start)
