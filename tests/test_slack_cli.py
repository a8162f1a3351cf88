"""The installed ``imagine-bot`` command with Slack: the manifest, and ``run`` on a fake Slack."""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
from pathlib import Path

import pytest
import yaml

from adapters.slack_manifest import slack_manifest
from tests.fakes.openai_server import FakeOpenAI
from tests.fakes.slack_server import APP_TOKEN, BOT_TOKEN, FakeSlack
from tests.fakes.slack_steps import text_of

# The console script from this environment; fall back to the module for a bare checkout.
_SCRIPT = shutil.which("imagine-bot", path=str(Path(sys.executable).parent))
COMMAND = [_SCRIPT] if _SCRIPT else [sys.executable, "-m", "bot.cli"]


def _environment(tmp_path: Path, **settings: str) -> dict[str, str]:
    """This machine's environment without any bot settings from the developer's shell."""
    prefixes = ("OPENAI_", "IMAGINE_", "DISCORD_", "SLACK_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(prefixes)}
    env.update(IMAGINE_DATA_DIR=str(tmp_path / "data"), IMAGINE_PARTIAL_IMAGES="0", **settings)
    return env


async def test_slack_manifest_command_prints_the_manifest(tmp_path: Path) -> None:
    process = await asyncio.create_subprocess_exec(
        *COMMAND,
        "slack-manifest",
        cwd=tmp_path,
        env=_environment(tmp_path),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode == 0, err.decode()
    assert out.decode() == slack_manifest()
    assert yaml.safe_load(out)["features"]["slash_commands"][0]["command"] == "/imagine"


@pytest.mark.parametrize("args", [("run", "slack"), ("run",)])
async def test_run_serves_slack_until_terminated(
    args: tuple[str, ...], slack_fake: FakeSlack, openai_fake: FakeOpenAI, tmp_path: Path
) -> None:
    # Plain ``run`` starts every platform whose tokens are set: here only Slack's.
    env = _environment(
        tmp_path,
        OPENAI_API_KEY=openai_fake.api_key,
        OPENAI_BASE_URL=openai_fake.base_url,
        SLACK_BOT_TOKEN=BOT_TOKEN,
        SLACK_APP_TOKEN=APP_TOKEN,
        SLACK_API_URL=slack_fake.api_url,
    )
    process = await asyncio.create_subprocess_exec(
        *COMMAND,
        *args,
        cwd=tmp_path,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        await slack_fake.wait_connected(timeout=60)
        await slack_fake.send_command(slack_fake.command_payload("a moon over the sea"))
        done = await slack_fake.wait_for(
            "chat.update", lambda c: "done in" in text_of(c), timeout=60
        )
    finally:
        if process.returncode is None:
            process.terminate()
        _, err = await asyncio.wait_for(process.communicate(), timeout=60)
    assert text_of(done[0]).startswith("<@UALICE>: a moon over the sea — done in")
    assert openai_fake.requests[0].json is not None
    assert openai_fake.requests[0].json["prompt"] == "a moon over the sea"
    assert process.returncode == 0, err.decode()
    assert "Traceback" not in err.decode()
