"""Where a job's images live under the data dir, and writing them safely."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from bot.models import ImageRequest, SourceImage

_EXTENSIONS = {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp"}


@dataclass(frozen=True)
class InputFile:
    """An input image (source or mask) and where it is saved, relative to the data dir."""

    path: str
    kind: str
    index: int
    image: SourceImage

    def row(self, job_id: str) -> tuple[object, ...]:
        """Its ``job_images`` row."""
        image = self.image
        return (
            job_id,
            self.kind,
            self.index,
            self.path,
            image.mime,
            image.filename,
            image.width,
            image.height,
        )


def _extension(mime: str) -> str:
    return _EXTENSIONS.get(mime, "bin")


def write_files(files: Sequence[tuple[Path, bytes]]) -> None:
    """Write every file whole, or (on any error, such as a full disk) none: blocking."""
    done: list[Path] = []
    try:
        for path, data in files:
            path.parent.mkdir(parents=True, exist_ok=True)
            # Write then rename, so a crash never leaves a half image under the final name.
            partial = path.with_name(path.name + ".part")
            done.append(partial)
            partial.write_bytes(data)
            os.replace(partial, path)
            done.append(path)
    except BaseException:
        # A .part left behind on a full disk keeps it full; the finished files alone are
        # of no use either, since the job that needs them all is failing.
        remove_files(done)
        raise


def remove_files(paths: Sequence[Path]) -> None:
    """Delete the files that exist, as many as can be (blocking: run it in a thread)."""
    for path in paths:
        with contextlib.suppress(OSError):
            path.unlink(missing_ok=True)


def input_files(job_id: str, request: ImageRequest) -> list[InputFile]:
    """The request's sources and mask with the paths they are saved under."""
    files = [
        InputFile(f"images/{job_id}/src_{i}.{_extension(s.mime)}", "source", i, s)
        for i, s in enumerate(request.sources)
    ]
    if request.mask is not None:
        mask = request.mask
        files.append(InputFile(f"images/{job_id}/mask.{_extension(mask.mime)}", "mask", 0, mask))
    return files


def output_path(job_id: str, index: int, mime: str) -> str:
    """Where output image ``index`` of a job is saved, relative to the data dir."""
    return f"images/{job_id}/out_{index}.{_extension(mime)}"
