"""``imagine-bot run`` as a real process: both platforms at once, then stopped by SIGTERM."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

from tests.fakes.cli_process import start_cli
from tests.fakes.discord_server import FakeDiscord
from tests.fakes.openai_server import FakeOpenAI
from tests.fakes.slack_server import APP_TOKEN, BOT_TOKEN, FakeSlack


async def test_run_serves_discord_and_slack_together_and_stops_cleanly(
    openai_fake: FakeOpenAI, discord_fake: FakeDiscord, slack_fake: FakeSlack, tmp_path: Path
) -> None:
    slack_fake.mode = "socket"
    process = await start_cli(
        "run",
        cwd=tmp_path,
        OPENAI_API_KEY=openai_fake.api_key,
        OPENAI_BASE_URL=openai_fake.base_url,
        IMAGINE_PARTIAL_IMAGES="0",
        # The most talkative level: still no secret may reach the log.
        IMAGINE_LOG_LEVEL="DEBUG",
        DISCORD_TOKEN=discord_fake.token,
        DISCORD_API_BASE_URL=discord_fake.api_url,
        DISCORD_GATEWAY_URL=discord_fake.gateway_url,
        SLACK_BOT_TOKEN=BOT_TOKEN,
        SLACK_APP_TOKEN=APP_TOKEN,
        SLACK_API_URL=slack_fake.api_url,
    )
    try:
        await discord_fake.wait_until(lambda: discord_fake.connected, timeout=30)
        await slack_fake.wait_connected(timeout=30)

        interaction = await discord_fake.slash(discord_fake.alice, prompt="a kite")
        result = await discord_fake.result_of(interaction)
        assert result["attachments"], result
        await slack_fake.send_command(slack_fake.command_payload("a lighthouse in fog"))
        await slack_fake.wait_for("files.completeUploadExternal", timeout=30)
        prompts = sorted(request.json["prompt"] for request in openai_fake.requests if request.json)
        assert prompts == ["a kite", "a lighthouse in fog"]

        process.send_signal(signal.SIGTERM)
        out, err = await asyncio.wait_for(process.communicate(), timeout=30)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    log = err.decode()
    assert process.returncode == 0, log[-2000:]
    assert "starting: discord, slack" in log
    assert "stopping" in log
    assert "Traceback" not in log
    for secret in (openai_fake.api_key, discord_fake.token, BOT_TOKEN, APP_TOKEN):
        assert secret not in log
    assert out == b""


async def test_run_with_a_platform_api_out_of_reach_says_which_and_where(
    openai_fake: FakeOpenAI, discord_fake: FakeDiscord, tmp_path: Path
) -> None:
    # Nothing listens on port 9 of this machine: the connection is refused, as when offline.
    for platform, settings in (
        ("discord", {"DISCORD_TOKEN": discord_fake.token,
                     "DISCORD_API_BASE_URL": "http://127.0.0.1:9/api/v10"}),
        ("slack", {"SLACK_BOT_TOKEN": BOT_TOKEN, "SLACK_APP_TOKEN": APP_TOKEN,
                   "SLACK_API_URL": "http://127.0.0.1:9/api/"}),
    ):  # fmt: skip
        process = await start_cli(
            "run",
            platform,
            cwd=tmp_path,
            OPENAI_API_KEY=openai_fake.api_key,
            OPENAI_BASE_URL=openai_fake.base_url,
            **settings,
        )
        _, err = await asyncio.wait_for(process.communicate(), timeout=60)
        variable = "DISCORD_API_BASE_URL" if platform == "discord" else "SLACK_API_URL"
        last = err.decode().strip().splitlines()[-1]
        assert process.returncode == 1
        assert last.startswith(f"imagine-bot: {variable}: can't reach 127.0.0.1:9 (")
        assert last.endswith("check the network connection, or this setting if you use a proxy")
        assert "Traceback" not in err.decode()
