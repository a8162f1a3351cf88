"""The data folder (IMAGINE_DATA_DIR): checks before it is used, and plain words when it fails."""

from __future__ import annotations

import errno
import os
import secrets
import sqlite3
from pathlib import Path

from bot.errors import ConfigError, UserFacingError

VARIABLE = "IMAGINE_DATA_DIR"
_FULL = frozenset({errno.ENOSPC, errno.EDQUOT})


class DataDirFull(UserFacingError):
    """The data folder has no space left (or the quota is used up)."""

    def __init__(self, data_dir: Path, *, paid: bool, cost_usd: float = 0.0) -> None:
        self.data_dir = data_dir
        self.paid = paid
        self.cost_usd = cost_usd
        where = f"no space left in {VARIABLE} ({shown(data_dir)})"
        if paid:
            message = (
                f"The image was made but couldn't be saved: {where}, so it was not delivered "
                "and doesn't count against your limits. Please tell the bot's operator to free "
                "some space, then try again."
            )
        else:
            message = (
                f"Can't make images right now: {where}. Nothing was charged; please tell "
                "the bot's operator to free some space, then try again."
            )
        super().__init__(message)


class DataDirUnwritable(UserFacingError):
    """The data folder can't be written (read-only, permissions, not a folder)."""

    def __init__(self, data_dir: Path, reason: str, *, paid: bool, cost_usd: float = 0.0) -> None:
        self.data_dir = data_dir
        self.reason = reason
        self.paid = paid
        self.cost_usd = cost_usd
        where = f"can't write to {VARIABLE} ({shown(data_dir)}): {reason}"
        if paid:
            message = (
                f"The image was made but couldn't be saved: {where}. It was not delivered and "
                "doesn't count against your limits; please tell the bot's operator."
            )
        else:
            message = (
                f"Can't make images right now: {where}. Nothing was charged; please tell the "
                "bot's operator."
            )
        super().__init__(message)


def shown(path: Path) -> str:
    """The path as an operator finds it: absolute, not resolved through links."""
    return os.path.abspath(path)


def reason_of(exc: OSError) -> str:
    """'Read-only file system', 'Permission denied': the OS's words without the path."""
    return exc.strerror or type(exc).__name__


def write_error(
    data_dir: Path, exc: OSError, *, paid: bool, cost_usd: float = 0.0
) -> UserFacingError:
    """The user-facing error for a failed write under the data folder."""
    if exc.errno in _FULL:
        return DataDirFull(data_dir, paid=paid, cost_usd=cost_usd)
    return DataDirUnwritable(data_dir, reason_of(exc), paid=paid, cost_usd=cost_usd)


def is_disk_full(exc: sqlite3.Error) -> bool:
    """True for SQLite's SQLITE_FULL ("database or disk is full")."""
    return getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL or "is full" in str(exc)


def probe(folder: Path) -> None:
    """Create ``folder`` if needed and prove a file can be written in it (blocking)."""
    folder.mkdir(parents=True, exist_ok=True)
    test = folder / f".write-test-{secrets.token_hex(4)}"
    try:
        with test.open("xb") as handle:
            handle.write(b"ok")
    finally:
        test.unlink(missing_ok=True)


def prepare_folder(data_dir: Path) -> None:
    """Make sure the data folder exists and is writable, or raise ConfigError saying what to do."""
    if data_dir.exists() and not data_dir.is_dir():
        raise ConfigError(
            VARIABLE,
            f"{shown(data_dir)} is a file, not a folder; point {VARIABLE} at a folder "
            "(it is created if missing) or move the file away",
        )
    try:
        probe(data_dir)
    except (FileExistsError, NotADirectoryError):
        raise ConfigError(
            VARIABLE,
            f"{shown(data_dir)} can't be created: part of that path is a file, not a folder; "
            f"point {VARIABLE} at a folder",
        ) from None
    except OSError as exc:
        raise ConfigError(
            VARIABLE,
            f"can't write to {shown(data_dir)} ({reason_of(exc)}); make it writable by the user "
            f"running imagine-bot, or point {VARIABLE} at another folder",
        ) from None


def database_error(path: Path, exc: sqlite3.Error) -> ConfigError:
    """A ConfigError for a database file SQLite can't use."""
    text = str(exc)
    if isinstance(exc, sqlite3.OperationalError) and is_disk_full(exc):
        problem = (
            f"no space left for the database {shown(path)}; free some space in {shown(path.parent)}"
        )
    elif "not a database" in text or "malformed" in text:
        problem = (
            f"{shown(path)} is damaged or not a database ({text}); restore it from a backup, "
            "or move it aside to start with an empty one"
        )
    elif "readonly" in text or "read-only" in text:
        problem = (
            f"the database {shown(path)} is read-only; make it (and its folder) writable by "
            f"the user running imagine-bot, or point {VARIABLE} at another folder"
        )
    elif "unable to open" in text and path.is_dir():
        problem = f"{shown(path)} is a folder, not a database file; move it away"
    else:
        problem = (
            f"can't use the database {shown(path)} ({text}); check that the folder is "
            f"writable and the file is imagine-bot's, or point {VARIABLE} at another folder"
        )
    return ConfigError(VARIABLE, problem)


def foreign_database(path: Path, tables: list[str]) -> ConfigError:
    """A ConfigError for an SQLite file that belongs to some other program."""
    named = ", ".join(sorted(tables)[:5]) + (", …" if len(tables) > 5 else "")
    return ConfigError(
        VARIABLE,
        f"{shown(path)} is another application's SQLite database (tables: {named}); point "
        f"{VARIABLE} at a folder of imagine-bot's own, or move that file away",
    )
