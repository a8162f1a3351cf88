"""Start the installed ``imagine-bot`` command as a process, with no settings from the shell."""

from __future__ import annotations

import asyncio
import os
import resource
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path

# The console script from this environment; fall back to the module for a bare checkout.
_SCRIPT = shutil.which("imagine-bot", path=str(Path(sys.executable).parent))
COMMAND = [_SCRIPT] if _SCRIPT else [sys.executable, "-m", "bot.cli"]
_SETTING_PREFIXES = ("OPENAI_", "IMAGINE_", "DISCORD_", "SLACK_")
# The signals the command answers; the test runner's own dispositions (a shell that started it
# in the background ignores SIGINT) must not leak into the command under test.
_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def cli_env(cwd: Path, settings: dict[str, str]) -> dict[str, str]:
    """The environment for a run in ``cwd``: the shell's, less every setting, plus ``settings``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(_SETTING_PREFIXES)}
    env["IMAGINE_DATA_DIR"] = str(cwd / "data")
    env.update(settings)
    return env


def _signals(ignored: Collection[signal.Signals]) -> Callable[[], None]:
    def reset() -> None:  # runs in the child between fork and exec
        for signum in _STOP_SIGNALS:
            signal.signal(signum, signal.SIG_IGN if signum in ignored else signal.SIG_DFL)

    return reset


async def start_cli(
    *args: str,
    cwd: Path,
    stderr: int = asyncio.subprocess.PIPE,
    ignored_signals: Collection[signal.Signals] = (),
    **settings: str,
) -> asyncio.subprocess.Process:
    """Start ``imagine-bot ARGS`` in ``cwd`` (no .env there) with only the settings given.

    The data folder is ``cwd/data`` unless ``IMAGINE_DATA_DIR`` is given. ``stderr`` may be a
    file descriptor (a pseudo-terminal); ``ignored_signals`` start ignored, as ``nohup`` does.
    """
    return await asyncio.create_subprocess_exec(
        *COMMAND,
        *args,
        cwd=cwd,
        env=cli_env(cwd, settings),
        stdout=asyncio.subprocess.PIPE,
        stderr=stderr,
        preexec_fn=_signals(ignored_signals),
    )


@dataclass
class Measured:
    """A finished run and the most memory its process ever held."""

    code: int
    out: str
    err: str
    peak_rss_mb: float


def run_cli_measured(*args: str, cwd: Path, **settings: str) -> Measured:
    """Run ``imagine-bot ARGS`` to the end (blocking) and report its peak resident memory."""
    out_path, err_path = cwd / ".cli-stdout", cwd / ".cli-stderr"
    with out_path.open("wb") as out, err_path.open("wb") as err:
        process = subprocess.Popen(
            [*COMMAND, *args],
            cwd=cwd,
            env=cli_env(cwd, settings),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            preexec_fn=_signals(()),
        )
        # wait4 reaps this one child and returns its own rusage (ru_maxrss is in KiB on Linux).
        watchdog = threading.Timer(120, process.kill)  # a hung run fails instead of hanging
        watchdog.start()
        try:
            _, status, usage = os.wait4(process.pid, 0)
        finally:
            watchdog.cancel()
        process.returncode = os.waitstatus_to_exitcode(status)
    assert isinstance(usage, resource.struct_rusage)
    return Measured(
        code=process.returncode,
        out=out_path.read_text(),
        err=err_path.read_text(),
        peak_rss_mb=usage.ru_maxrss / 1024,
    )


def tmpfs_unavailable(scratch: Path) -> str | None:
    """Why a private tmpfs can't be mounted in a user namespace here, or None if it can."""
    if shutil.which("unshare") is None:
        return "unshare is not installed"
    scratch.mkdir(exist_ok=True)
    probe = subprocess.run(
        ["unshare", "-Urm", "sh", "-c", f"mount -t tmpfs -o ro,size=64k tmpfs {scratch}"],
        capture_output=True,
        check=False,
    )
    if probe.returncode != 0:
        return f"can't mount a tmpfs in a user namespace: {probe.stderr.decode().strip()}"
    return None
