"""The installed ``imagine-bot`` command with Slack: the manifest, and ``run`` on a fake Slack."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import yaml

from adapters.slack.manifest import slack_manifest
from tests.fakes.cli_process import start_cli
from tests.fakes.openai_server import FakeOpenAI
from tests.fakes.slack_server import APP_TOKEN, BOT_TOKEN, FakeSlack
from tests.fakes.slack_steps import text_of


async def test_slack_manifest_command_prints_the_manifest(tmp_path: Path) -> None:
    process = await start_cli("slack-manifest", cwd=tmp_path)
    out, err = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode == 0, err.decode()
    assert out.decode() == slack_manifest()
    assert yaml.safe_load(out)["features"]["slash_commands"][0]["command"] == "/imagine"


@pytest.mark.parametrize("args", [("run", "slack"), ("run",)])
async def test_run_serves_slack_until_terminated(
    args: tuple[str, ...], slack_fake: FakeSlack, openai_fake: FakeOpenAI, tmp_path: Path
) -> None:
    # Plain ``run`` starts every platform whose tokens are set: here only Slack's.
    process = await start_cli(
        *args,
        cwd=tmp_path,
        IMAGINE_PARTIAL_IMAGES="0",
        OPENAI_API_KEY=openai_fake.api_key,
        OPENAI_BASE_URL=openai_fake.base_url,
        SLACK_BOT_TOKEN=BOT_TOKEN,
        SLACK_APP_TOKEN=APP_TOKEN,
        SLACK_API_URL=slack_fake.api_url,
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
