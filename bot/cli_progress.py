"""What ``imagine-bot imagine/edit`` shows on stderr while a job runs, and the previews it keeps."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import time
from pathlib import Path
from typing import TextIO

from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TaskID, TextColumn, TimeElapsedColumn
from rich.text import Text

from bot.cli_files import save_preview
from bot.models import Finished, PartialImage, ProgressEvent, Queued, Started


def is_terminal(stream: TextIO) -> bool:
    """True when ``stream`` is a terminal that can redraw a line."""
    try:
        return stream.isatty() and os.environ.get("TERM") != "dumb"
    except (AttributeError, ValueError):  # replaced or closed streams
        return False


class PreviewCounter:
    """Says which image a streamed preview belongs to.

    The stream only carries each preview's ``partial_image_index``. With several images the
    index restarts at 0 for each new image (or, if it ever keeps counting, passes the number of
    previews asked per image); either way the order tells the images apart.
    """

    def __init__(self, per_image: int) -> None:
        self._per_image = max(1, per_image)
        self._image = 0
        self._last = -1

    def place(self, index: int) -> tuple[int, int]:
        """(image, preview) of a preview, both counted from 0."""
        if index >= self._per_image:
            return index // self._per_image, index % self._per_image
        if index <= self._last:
            self._image += 1
        self._last = index
        return self._image, index


class StderrProgress:
    """Shows progress on stderr (stdout holds only image paths); keeps previews in a folder.

    On a terminal a live line at the bottom shows what is happening and the time so far;
    elsewhere (a pipe, a log file) there are only plain lines, each with the time since start.
    """

    def __init__(
        self,
        *,
        previews_per_image: int,
        previews_dir: Path | None = None,
        live: bool | None = None,
        stream: TextIO | None = None,
    ) -> None:
        self._stream = stream or sys.stderr
        self._start = time.monotonic()
        self._counter = PreviewCounter(previews_per_image)
        self._previews_dir = previews_dir
        self.job_id: str | None = None
        self._live: Progress | None = None
        self._task: TaskID | None = None
        if is_terminal(self._stream) if live is None else live:
            console = Console(file=self._stream, force_terminal=True, highlight=False)
            self._live = Progress(
                SpinnerColumn(),
                TextColumn("{task.description}", markup=False),
                TimeElapsedColumn(),
                console=console,
                transient=True,
                redirect_stdout=False,
                redirect_stderr=False,
            )
            self._task = self._live.add_task("starting", total=None)
            self._live.start()

    def line(self, text: str) -> None:
        """A line that stays, stamped with the seconds since the start."""
        elapsed = time.monotonic() - self._start
        stamped = f"[{elapsed:6.1f}s] {text}"
        with contextlib.suppress(OSError):  # a closed terminal (SIGHUP) must not fail the job
            if self._live is not None:
                self._live.console.print(Text(stamped), soft_wrap=True)
            else:
                print(stamped, file=self._stream, flush=True)

    def status(self, text: str) -> None:
        """What the live line says now (a terminal only)."""
        if self._live is not None and self._task is not None:
            self._live.update(self._task, description=text)

    def close(self) -> None:
        """Take the live line away, leaving the lines that stay."""
        live, self._live = self._live, None
        if live is not None:
            with contextlib.suppress(OSError):
                live.stop()

    async def __call__(self, event: ProgressEvent) -> None:
        if isinstance(event, Queued):
            self.job_id = event.job_id
            if event.position:
                self.line(f"queued, position {event.position}")
                self.status(f"queued, position {event.position}")
        elif isinstance(event, Started):
            self.job_id = event.job_id
            self.line(f"generating (job {event.job_id})")
            self.status("generating")
        elif isinstance(event, PartialImage):
            await self._preview(event)
        elif isinstance(event, Finished):
            # A failure prints its own reason; a success its paths and cost.
            self.status("finishing" if event.status == "succeeded" else event.status)

    async def _preview(self, event: PartialImage) -> None:
        image, preview = self._counter.place(event.index)
        text = f"preview {preview + 1} of image {image + 1} received ({_size(len(event.data))})"
        if self._previews_dir is not None:
            try:
                saved = await asyncio.to_thread(
                    save_preview,
                    self._previews_dir,
                    f"{event.job_id}_{image}_preview_{preview}",
                    event.data,
                    event.output_format,
                )
            except OSError as exc:
                text += f", not kept: {exc.strerror or type(exc).__name__}"
            else:
                text += f", kept as {saved}"
        self.line(text)
        self.status(f"generating: preview {preview + 1} of image {image + 1}")


def _size(length: int) -> str:
    """'850 bytes', '12 KB': a small preview never reads as 0 KB."""
    return f"{length} bytes" if length < 1024 else f"{round(length / 1024)} KB"
