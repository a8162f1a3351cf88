"""/imagine end to end: real slack-bolt over Socket Mode and signed HTTP, on a fake Slack."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
import yaml

import adapters.slack
from adapters.slack import blocks as slack_blocks
from adapters.slack.bot import SlackBot, run_slack
from adapters.slack.manifest import slack_manifest
from bot.errors import ConfigError
from bot.models import ImageRequest, Requester
from tests.fakes.openai_server import FakeOpenAI
from tests.fakes.slack_server import APP_TOKEN, BOT_TOKEN, FakeSlack
from tests.fakes.slack_steps import (
    TRANSPORTS,
    text_of,
)

WORKING = r"^<@U\w+>: \w+ — working since <!date\^\d+\^\{time_secs\}\|[\d:]+ UTC>"


@pytest.mark.parametrize("mode", TRANSPORTS)
async def test_slash_command_posts_placeholder_then_uploads_into_its_thread(
    mode: str, slack_fake: FakeSlack, openai_fake: FakeOpenAI, start_slack: Any
) -> None:
    await start_slack(mode)
    answer = await slack_fake.send_command(
        slack_fake.command_payload("a lighthouse in fog --size 1536x1024 --quality low")
    )
    if mode == "http":
        assert answer[0] == 200
    complete = await slack_fake.wait_for("files.completeUploadExternal")
    placeholder = slack_fake.calls_to("chat.postMessage")[0]
    assert placeholder.args["channel"] == "C0GENERAL"
    assert "thread_ts" not in placeholder.args
    assert text_of(placeholder).startswith("<@UALICE>: a lighthouse in fog — ")
    root = slack_fake.message("C0GENERAL", complete[0].args["thread_ts"])
    assert root is not None and root["user"] == "UBOT"
    assert complete[0].args["channel_id"] == "C0GENERAL"
    sent = openai_fake.requests[0].json
    assert sent is not None and sent["size"] == "1536x1024" and sent["quality"] == "low"
    upload = next(iter(slack_fake.uploads.values()))
    assert upload.data.startswith(b"\x89PNG") and upload.completed
    final = await slack_fake.wait_for("chat.update", lambda c: "done in" in text_of(c))
    assert final[0].args["ts"] == root["ts"]
    blocks = final[0].args["blocks"]
    image = next(b for b in blocks if b["type"] == "image")
    assert image["slack_file"]["id"] == upload.file_id
    actions = next(b for b in blocks if b["type"] == "actions")["elements"]
    assert [a["text"]["text"] for a in actions] == ["Regenerate", "Vary", "Edit", "Delete"]
    job_id = actions[0]["value"]
    assert {a["value"] for a in actions} == {job_id}
    assert job_id in final[0].args["blocks"][2]["elements"][0]["text"]


@pytest.mark.parametrize("mode", TRANSPORTS)
async def test_unknown_flag_gets_ephemeral_help_and_no_job(
    mode: str, slack_fake: FakeSlack, openai_fake: FakeOpenAI, start_slack: Any
) -> None:
    await start_slack(mode)
    await slack_fake.send_command(slack_fake.command_payload("a cat --style anime"))
    shown = await slack_fake.wait_for("chat.postEphemeral")
    assert "--style" in text_of(shown[0]) and "/imagine <prompt>" in text_of(shown[0])
    assert shown[0].args["user"] == "UALICE"
    await slack_fake.send_command(slack_fake.command_payload(""))
    shown = await slack_fake.wait_for("chat.postEphemeral", count=2)
    assert text_of(shown[1]).startswith("*Make an image:* `/imagine <prompt> [options]`")
    assert not slack_fake.calls_to("chat.postMessage") and not openai_fake.requests


async def test_forged_or_stale_signature_is_rejected(
    slack_fake: FakeSlack, openai_fake: FakeOpenAI, start_slack: Any
) -> None:
    await start_slack("http")
    body = urlencode(slack_fake.command_payload("a forged request"))
    forged = await slack_fake.post_signed(body, "application/x-www-form-urlencoded", secret="x")
    stale = await slack_fake.post_signed(
        body, "application/x-www-form-urlencoded", timestamp=1_600_000_000
    )
    assert forged[0] == 401 and stale[0] == 401
    # A genuine request afterwards still works, so the 401s were about the signature.
    ok = await slack_fake.send_command(slack_fake.command_payload("a real one"))
    assert ok[0] == 200
    await slack_fake.wait_for("files.completeUploadExternal")
    assert len(openai_fake.requests) == 1
    assert "forged" not in json.dumps(openai_fake.requests[0].json)


async def test_http_mode_answers_url_verification(
    slack_fake: FakeSlack, openai_fake: FakeOpenAI, start_slack: Any
) -> None:
    await start_slack("http")
    body = json.dumps({"token": "t", "challenge": "c-123", "type": "url_verification"})
    status, text = await slack_fake.post_signed(body, "application/json")
    assert status == 200 and json.loads(text)["challenge"] == "c-123"


async def test_progress_shows_queue_position_then_previews(
    slack_fake: FakeSlack, openai_fake: FakeOpenAI, start_slack: Any
) -> None:
    await start_slack("socket", imagine_max_concurrency=1, imagine_partial_images=2)
    openai_fake.latency = 0.5
    await slack_fake.send_command(slack_fake.command_payload("first"))
    await openai_fake.wait_for()
    await slack_fake.send_command(slack_fake.command_payload("second", user="UBOB"))
    queued = await slack_fake.wait_for(
        "chat.postMessage", lambda c: text_of(c).startswith("<@UBOB>: second")
    )
    assert text_of(queued[0]) == "<@UBOB>: second — queued — next in line"
    await slack_fake.wait_for("files.completeUploadExternal", count=2, timeout=10)
    previews = [u for u in slack_fake.uploads.values() if u.filename.startswith("preview-")]
    assert previews and all(u.channel_id is None for u in previews)
    assert all(u.data.startswith(b"\xff\xd8") for u in previews)  # small JPEG previews
    shown = {
        b["slack_file"]["id"]
        for c in slack_fake.calls_to("chat.update")
        for b in c.args.get("blocks", [])
        if b["type"] == "image" and "working" in text_of(c)
    }
    assert shown and shown <= {u.file_id for u in previews}
    # While it runs, the placeholder says since when (Slack shows it in the reader's time zone).
    assert any(
        re.search(
            r"^<@U\w+>: \w+ — working since <!date\^\d+\^\{time_secs\}\|[\d:]+ UTC>", text_of(c)
        )
        for c in slack_fake.calls_to("chat.update")
    )
    # Once the result shows, the bot's private preview files are removed.
    await slack_fake.wait_until(lambda: all(u.file_id not in slack_fake.files for u in previews))
    assert openai_fake.requests[0].json is not None
    assert openai_fake.requests[0].json["partial_images"] == 2


async def test_progress_edits_are_throttled_and_coalesced(
    slack_fake: FakeSlack, openai_fake: FakeOpenAI, start_slack: Any
) -> None:
    # With a long interval, the three previews of a quick job never earn an edit of their own.
    await start_slack("socket", imagine_partial_images=3, imagine_progress_interval=60)
    await slack_fake.send_command(slack_fake.command_payload("a quick one"))
    await slack_fake.wait_for("chat.update", lambda c: "done in" in text_of(c))
    updates = slack_fake.calls_to("chat.update")
    assert len(updates) == 1 and "done in" in text_of(updates[0])
    assert not [u for u in slack_fake.uploads.values() if u.filename.startswith("preview-")]
    sent = openai_fake.requests[0].json
    assert sent is not None and sent["partial_images"] == 3 and sent["stream"] is True


async def test_rate_limited_call_is_retried(
    slack_fake: FakeSlack, openai_fake: FakeOpenAI, start_slack: Any
) -> None:
    await start_slack("socket")
    slack_fake.fail_next("chat.postMessage", "ratelimited")
    await slack_fake.send_command(slack_fake.command_payload("a quick sketch"))
    await slack_fake.wait_for("files.completeUploadExternal")
    posts = slack_fake.calls_to("chat.postMessage")
    assert len(posts) == 2 and text_of(posts[0]) == text_of(posts[1])


async def test_image_block_refused_falls_back_to_text(
    slack_fake: FakeSlack, openai_fake: FakeOpenAI, start_slack: Any
) -> None:
    slack_fake.refuse_slack_file_blocks = True
    await start_slack("socket")
    await slack_fake.send_command(slack_fake.command_payload("a red kite"))
    final = slack_fake.messages.setdefault("C0GENERAL", [{"text": ""}])
    await slack_fake.wait_until(lambda: "done in" in final[0]["text"])
    final = slack_fake.messages["C0GENERAL"]
    kinds = [b["type"] for b in final[0]["blocks"]]
    assert "image" not in kinds and "actions" in kinds


async def test_interrupted_job_placeholder_is_updated_at_start(
    slack_fake: FakeSlack, openai_fake: FakeOpenAI, make_app: Any, start_slack: Any
) -> None:
    # A previous process crashed mid-job: its job is still "running" with a placeholder.
    crashed = await make_app()
    requester = Requester("slack", "UALICE", "T0TEAM", "C0GENERAL")
    job = await crashed.store.admit(
        ImageRequest(requester, "a comet", crashed.service.options()),
        limits=(),
        budgets=(),
        estimated_cost=0.04,
        exempt=False,
    )
    await crashed.store.mark_running(job.id)
    placeholder = slack_fake.add_message("C0GENERAL", "<@UALICE>: a comet — working…", user="UBOT")
    await crashed.store.set_platform_ref(job.id, {"channel": "C0GENERAL", "ts": placeholder["ts"]})
    await crashed.aclose()
    await start_slack("socket")
    update = await slack_fake.wait_for("chat.update")
    assert update[0].args["ts"] == placeholder["ts"]
    assert "interrupted" in text_of(update[0]) and "nothing was charged" in text_of(update[0])


async def test_shutdown_mid_job_marks_placeholder_interrupted(
    slack_fake: FakeSlack, openai_fake: FakeOpenAI, start_slack: Any
) -> None:
    running = await start_slack("socket")
    openai_fake.fail_next("timeout", seconds=30)
    await slack_fake.send_command(slack_fake.command_payload("a slow painting"))
    await openai_fake.wait_for()
    await running.bot.stop()
    update = slack_fake.calls_to("chat.update")[-1]
    assert "interrupted" in text_of(update) and update.args["ts"]
    usage = await running.app.store.usage_summary("slack:UALICE")
    assert all(row.images_today == 0 for row in usage)  # refunded


async def test_run_slack_until_cancelled_and_config_errors(
    slack_fake: FakeSlack, openai_fake: FakeOpenAI, make_app: Any
) -> None:
    app = await make_app(
        slack_bot_token=BOT_TOKEN, slack_app_token=APP_TOKEN, slack_api_url=slack_fake.api_url
    )
    task = asyncio.create_task(run_slack(app))
    await slack_fake.wait_connected()
    await slack_fake.send_command(slack_fake.command_payload("a moon"))
    await slack_fake.wait_for("files.completeUploadExternal")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await slack_fake.wait_until(lambda: not slack_fake.connected)
    await app.aclose()

    no_secret = await make_app(slack_bot_token=BOT_TOKEN, slack_api_url=slack_fake.api_url)
    with pytest.raises(ConfigError) as raised:
        await run_slack(no_secret)
    assert raised.value.variable == "SLACK_SIGNING_SECRET"
    await no_secret.aclose()
    bad_token = await make_app(
        slack_bot_token="xoxb-wrong", slack_app_token=APP_TOKEN, slack_api_url=slack_fake.api_url
    )
    with pytest.raises(ConfigError) as raised:
        await run_slack(bad_token)
    assert raised.value.variable == "SLACK_BOT_TOKEN" and "invalid_auth" in str(raised.value)
    await bad_token.aclose()
    with pytest.raises(ConfigError) as raised:
        SlackBot(await make_app())
    assert raised.value.variable == "SLACK_BOT_TOKEN"


# The scope each Web API method needs; a new call in the adapter must be added here.
METHOD_SCOPES = {
    "auth_test": None,
    "views_open": None,
    "chat_postMessage": "chat:write",
    "chat_update": "chat:write",
    "chat_postEphemeral": "chat:write",
    "chat_delete": "chat:write",
    "conversations_join": "channels:join",
    "files_upload_v2": "files:write",
    "files_delete": "files:write",
    "files_info": "files:read",
    "users_info": "users:read",
    "usergroups_list": "usergroups:read",
    "conversations_info": "channels:read",  # groups:read too, for private channels
}


def test_manifest_declares_everything_the_bot_uses() -> None:
    manifest = yaml.safe_load(slack_manifest())
    features, settings = manifest["features"], manifest["settings"]
    assert [c["command"] for c in features["slash_commands"]] == [
        "/imagine",
        "/imagine-usage",
        "/imagine-history",
        "/imagine-admin",
    ]
    shortcut = features["shortcuts"][0]
    assert (shortcut["name"], shortcut["type"], shortcut["callback_id"]) == (
        "Edit image",
        "message",
        slack_blocks.SHORTCUT,
    )
    scopes = set(manifest["oauth_config"]["scopes"]["bot"])
    source = "".join(p.read_text() for p in Path(adapters.slack.__file__).parent.glob("*.py"))
    called = set(re.findall(r"client\.(\w+)\(", source))
    assert called and called <= set(METHOD_SCOPES), called - set(METHOD_SCOPES)
    needed = {METHOD_SCOPES[m] for m in called} - {None}
    # Reading mentions, thread replies and DMs, and the command and shortcut themselves.
    needed |= {"app_mentions:read", "channels:history", "groups:history", "im:history"}
    needed |= {"commands", "groups:read"}
    assert needed <= scopes, needed - scopes
    assert {"app_mention", "message.channels", "message.groups", "message.im"} <= set(
        settings["event_subscriptions"]["bot_events"]
    )
    assert settings["interactivity"]["is_enabled"] is True
    assert settings["socket_mode_enabled"] is True
