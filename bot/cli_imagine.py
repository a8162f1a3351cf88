"""``imagine-bot imagine`` and ``edit``: one job from the shell, stoppable by a signal."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import getpass
import signal
import sys
from pathlib import Path
from types import TracebackType

from bot.app import App, build
from bot.cli_files import prepare_folder, read_input, reason_of, save_images
from bot.cli_progress import StderrProgress
from bot.commands import Overrides
from bot.config import Settings
from bot.errors import UserFacingError
from bot.models import ImageRequest, Requester, SourceImage, StoredImage

EXIT_FAILED = 1
# The shell's convention, 128 + the signal's number, so scripts can tell a stop from a failure.
STOP_EXIT_CODES = {signal.SIGINT: 130, signal.SIGHUP: 129, signal.SIGTERM: 143}
# Each image option's argparse dest is its ImageOptions field name.
OPTION_ARGS = (
    "size", "quality", "n", "background", "output_format", "output_compression", "partial_images",
)  # fmt: skip


def say(text: str) -> None:
    """One line for the user on stderr; a terminal that went away (SIGHUP) is not an error."""
    with contextlib.suppress(OSError):
        print(f"imagine-bot: {text}", file=sys.stderr, flush=True)


def _show_paths(paths: list[Path]) -> None:
    with contextlib.suppress(OSError):
        for path in paths:
            print(path, flush=True)


class StopSignals:
    """While entered, SIGINT, SIGTERM and SIGHUP cancel the running task, as Ctrl-C does.

    Cancelling lets the service end the job as failed and give its charge back. A signal the
    command was started with ignored (``nohup`` ignores SIGHUP) stays ignored.
    """

    def __init__(self) -> None:
        self.received: signal.Signals | None = None
        self._installed: list[signal.Signals] = []
        self._loop: asyncio.AbstractEventLoop | None = None

    def __enter__(self) -> StopSignals:
        self._loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        if task is None:
            return self
        for signum in STOP_EXIT_CODES:
            if signal.getsignal(signum) == signal.SIG_IGN:
                continue
            try:
                self._loop.add_signal_handler(signum, self._stop, signum, task)
            except (NotImplementedError, RuntimeError, ValueError):  # not Unix, or not main
                continue
            self._installed.append(signum)
        return self

    def _stop(self, signum: signal.Signals, task: asyncio.Task[object]) -> None:
        if self.received is None:
            self.received = signum
        task.cancel()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        if self._loop is not None:
            for signum in self._installed:
                self._loop.remove_signal_handler(signum)


class _Outcome:
    """What a stopped command can still say: which job it was and whether images were kept."""

    def __init__(self) -> None:
        self.kept: tuple[StoredImage, ...] = ()
        self.listed = False  # their paths are on stdout already


async def make_images(settings: Settings, args: argparse.Namespace) -> int:
    """Run one imagine/edit job; a stop signal ends it refunded with one line and 128 + N."""
    outcome = _Outcome()
    with StopSignals() as stop:
        try:
            return await _make_images(settings, args, outcome)
        except asyncio.CancelledError:
            if stop.received is None:
                raise
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()
        name = stop.received.name
        if outcome.listed:
            say(f"stopped by {name} after the images were saved (paths above)")
        elif outcome.kept:
            _show_paths([image.path for image in outcome.kept])
            say(
                f"stopped by {name} after the images were made, so they count against your "
                f"limits; they are kept in {outcome.kept[0].path.parent} (paths above)"
            )
        else:
            say(f"stopped by {name}; nothing was charged")
        return STOP_EXIT_CODES[stop.received]


async def _read_inputs(
    args: argparse.Namespace, max_bytes: int
) -> tuple[list[SourceImage], SourceImage | None]:
    if args.command != "edit":
        return [], None
    sources = [await asyncio.to_thread(read_input, path, max_bytes) for path in args.images]
    mask = None
    if args.mask is not None:
        mask = await asyncio.to_thread(read_input, args.mask, max_bytes)
    return sources, mask


async def _make_images(settings: Settings, args: argparse.Namespace, outcome: _Outcome) -> int:
    # Every destination is proven writable before anything is admitted or paid for.
    out: Path = await asyncio.to_thread(prepare_folder, args.out, "--out")
    previews: Path | None = None
    if args.previews is not None:
        previews = await asyncio.to_thread(prepare_folder, args.previews, "--previews")
    sources, mask = await _read_inputs(args, settings.max_attachment_bytes)
    app = await build(settings)
    try:
        chosen = {name: getattr(args, name) for name in OPTION_ARGS}
        options = app.service.options(Overrides(**chosen))
        if previews is not None and options.partial_images == 0:
            raise UserFacingError(
                "--previews keeps partial previews, but none are asked for "
                "(IMAGINE_PARTIAL_IMAGES is 0); add --partials 1, 2 or 3. Nothing was charged."
            )
        request = ImageRequest(
            requester=Requester(platform="cli", user_id=args.user or getpass.getuser()),
            prompt=args.prompt,
            options=options,
            sources=tuple(sources),
            mask=mask,
        )
        reporter = StderrProgress(previews_per_image=options.partial_images, previews_dir=previews)
        try:
            return await _run_job(app, request, reporter, out, outcome)
        finally:
            reporter.close()
    finally:
        await app.aclose()


async def _run_job(
    app: App,
    request: ImageRequest,
    reporter: StderrProgress,
    out: Path,
    outcome: _Outcome,
) -> int:
    try:
        result = await app.service.run(request, reporter)
    except asyncio.CancelledError:
        outcome.kept = await _kept_after_stop(app, reporter.job_id)
        raise
    outcome.kept = result.images
    try:
        saved = await asyncio.to_thread(save_images, result, out)
    except OSError as exc:
        # Paid for and made: the images stay in the data folder, and the user learns where.
        reporter.close()
        _show_paths([image.path for image in result.images])
        outcome.listed = True
        say(
            f"couldn't write the images to --out {out} ({reason_of(exc)}); they are kept in "
            f"{result.images[0].path.parent} (paths above)"
        )
        return EXIT_FAILED
    # The live line goes first: on a terminal stdout shares the screen with it.
    reporter.close()
    _show_paths(saved)
    outcome.listed = True
    reporter.line(
        f"done in {result.elapsed_s:.1f}s, cost ${result.cost_usd:.4f} (job {result.job_id})"
    )
    return 0


async def _kept_after_stop(app: App, job_id: str | None) -> tuple[StoredImage, ...]:
    """The job's images if it still succeeded (its images were saved as the stop came)."""
    if job_id is None:
        return ()
    store = app.service.store
    try:
        job = await store.get_job(job_id)
        if job is None or job.status != "succeeded":
            return ()
        return await store.job_images(job_id)
    except Exception:  # the stop's own line matters more than this detail
        return ()
