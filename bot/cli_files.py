"""Files the shell commands read and write: input images, ``--out`` and ``--previews`` folders.

Every function blocks; the command runs them with ``asyncio.to_thread``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from bot.errors import AttachmentRejected, UserFacingError
from bot.models import JobResult, SourceImage

MIB = 1024 * 1024
_SUFFIXES = {"png": ".png", "jpeg": ".jpg", "webp": ".webp"}


def reason_of(exc: OSError) -> str:
    """The OS's words ('Permission denied', 'Read-only file system') without the path."""
    if isinstance(exc, FileExistsError | NotADirectoryError):
        return "part of that path is a file, not a folder"
    return exc.strerror or type(exc).__name__


def prepare_folder(folder: Path, option: str) -> Path:
    """Create ``folder`` if missing and prove a file can be written in it, before any charge."""
    if folder.exists() and not folder.is_dir():
        raise UserFacingError(
            f"Can't use {option} {folder}: it is a file, not a folder. Nothing was charged; "
            "name a folder (it is created if missing)."
        )
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".imagine-write-test-"):
            pass
    except OSError as exc:
        raise UserFacingError(
            f"Can't write to {option} {folder}: {reason_of(exc)}. Nothing was charged; "
            "name a folder you can write to."
        ) from None
    return folder


def _megabytes(size: int, limit: int) -> str:
    """The size in MB with enough decimals that it never reads as equal to the limit."""
    texts = [f"{size / MIB:.{decimals}f}" for decimals in (1, 2, 3)]
    return next((t for t in texts if float(t) > limit / MIB), texts[-1]).removesuffix(".0")


def _limit(max_bytes: int) -> str:
    return f"{max_bytes / MIB:.1f}".removesuffix(".0")


def read_input(path: Path, max_bytes: int) -> SourceImage:
    """Read an input image, refusing one over ``max_bytes`` before reading any of it."""
    try:
        size = path.stat().st_size
        if size > max_bytes:
            raise AttachmentRejected(
                str(path),
                f"is {_megabytes(size, max_bytes)} MB; the limit is {_limit(max_bytes)} MB",
            )
        with path.open("rb") as handle:
            # Bounded: a pipe has no size to check, and a file may grow after stat().
            data = handle.read(max_bytes + 1)
    except OSError as exc:
        raise UserFacingError(f"Can't read {path}: {exc.strerror or exc}") from None
    if len(data) > max_bytes:
        raise AttachmentRejected(
            str(path), f"is larger than {_limit(max_bytes)} MB; the limit is {_limit(max_bytes)} MB"
        )
    return SourceImage(data=data, filename=path.name, mime="")


def _write_whole(target: Path, write: str | bytes) -> None:
    """Write ``target`` under a temporary name first, so no half file keeps the final name."""
    partial = target.with_name(target.name + ".part")
    try:
        if isinstance(write, bytes):
            partial.write_bytes(write)
        else:
            shutil.copyfile(write, partial)
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)


def save_images(result: JobResult, out_dir: Path) -> list[Path]:
    """Copy the job's images into ``out_dir``; on OSError none of them is left there."""
    written: list[Path] = []
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        for image in result.images:
            target = out_dir / f"{result.job_id}_{image.index}{image.path.suffix}"
            _write_whole(target, str(image.path))
            written.append(target)
    except OSError:
        for path in written:
            path.unlink(missing_ok=True)
        raise
    return written


def save_preview(folder: Path, stem: str, data: bytes, output_format: str) -> Path:
    """Keep one streamed preview as ``folder/stem.<format>``."""
    target = folder / (stem + _SUFFIXES.get(output_format, ".bin"))
    _write_whole(target, data)
    return target
