"""Start the installed ``imagine-bot`` command as a process, with no settings from the shell."""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
from pathlib import Path

# The console script from this environment; fall back to the module for a bare checkout.
_SCRIPT = shutil.which("imagine-bot", path=str(Path(sys.executable).parent))
COMMAND = [_SCRIPT] if _SCRIPT else [sys.executable, "-m", "bot.cli"]
_SETTING_PREFIXES = ("OPENAI_", "IMAGINE_", "DISCORD_", "SLACK_")


async def start_cli(*args: str, cwd: Path, **settings: str) -> asyncio.subprocess.Process:
    """Start ``imagine-bot ARGS`` in ``cwd`` (no .env there) with only the settings given.

    The data folder is ``cwd/data`` unless ``IMAGINE_DATA_DIR`` is given.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith(_SETTING_PREFIXES)}
    env["IMAGINE_DATA_DIR"] = str(cwd / "data")
    env.update(settings)
    return await asyncio.create_subprocess_exec(
        *COMMAND,
        *args,
        cwd=cwd,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
