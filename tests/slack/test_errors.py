"""Refusals and failures in Slack: each ends in plain words for the one user who asked."""

from __future__ import annotations

from typing import Any

import pytest

from tests.fakes.openai_server import FakeOpenAI
from tests.fakes.slack_server import BOT_USER_ID, FakeSlack
from tests.fakes.slack_steps import (
    CHANNEL,
    TRANSPORTS,
    png,
    text_of,
)


@pytest.mark.parametrize("mode", TRANSPORTS)
@pytest.mark.parametrize(
    ("setting", "first", "second", "says"),
    [
        ({"imagine_user_limit": "1/day"}, "one", "two", "limit of 1 image per day"),
        # One medium-quality image (about $0.05) fits a six-cent budget; a second does not.
        (
            {"imagine_user_budget": "0.06/day"},
            "one --quality medium",
            "two --quality medium",
            "budget of $0.06 per day",
        ),
    ],
    ids=["limit", "budget"],
)
async def test_limit_and_budget_refusals_are_ephemeral_with_reset_time(
    mode: str,
    setting: dict[str, str],
    first: str,
    second: str,
    says: str,
    slack_fake: FakeSlack,
    openai_fake: FakeOpenAI,
    start_slack: Any,
) -> None:
    await start_slack(mode, **setting)
    await slack_fake.send_command(slack_fake.command_payload(first))
    await slack_fake.wait_for("files.completeUploadExternal")
    await slack_fake.send_command(slack_fake.command_payload(second))
    refused = await slack_fake.wait_for("chat.postEphemeral")
    assert refused[0].args["user"] == "UALICE"
    assert says in text_of(refused[0]) and "Try again in" in text_of(refused[0])
    assert len(slack_fake.calls_to("chat.postMessage")) == 1  # no placeholder for the second
    assert len(openai_fake.requests) == 1


@pytest.mark.parametrize("mode", TRANSPORTS)
async def test_blocked_prompt_is_ephemeral_with_category(
    mode: str, slack_fake: FakeSlack, openai_fake: FakeOpenAI, start_slack: Any
) -> None:
    await start_slack(mode)
    openai_fake.fail_next("moderation_blocked", categories=["violence"])
    await slack_fake.send_command(slack_fake.command_payload("something nasty"))
    shown = await slack_fake.wait_for("chat.postEphemeral")
    assert "safety system" in text_of(shown[0]) and "violence" in text_of(shown[0])
    closed = await slack_fake.wait_for("chat.update", lambda c: "not made" in text_of(c))
    assert "nothing was charged" in text_of(closed[0])
    assert not slack_fake.uploads


async def test_provider_unavailable_is_explained(
    slack_fake: FakeSlack, openai_fake: FakeOpenAI, start_slack: Any
) -> None:
    await start_slack("socket")
    openai_fake.fail_next("server_error", times=3)
    await slack_fake.send_command(slack_fake.command_payload("a bridge"))
    shown = await slack_fake.wait_for("chat.postEphemeral")
    assert "unavailable" in text_of(shown[0]) and "Nothing was charged" in text_of(shown[0])


async def test_a_refused_upload_is_a_warning_with_the_job_id_not_an_error(
    slack_fake: FakeSlack, openai_fake: FakeOpenAI, start_slack: Any, caplog: Any
) -> None:
    # Slack failing is not a bug in the bot: a warning to look up, no traceback at ERROR.
    await start_slack("socket")
    slack_fake.fail_next("files.completeUploadExternal", "internal_error")
    await slack_fake.send_command(slack_fake.command_payload("a boat"))
    shown = await slack_fake.wait_for("chat.postEphemeral")
    final = slack_fake.calls_to("chat.postMessage")[0]
    text = text_of(shown[0])
    assert "Traceback" not in text and "wouldn't take the upload (internal_error)" in text
    logged = [r for r in caplog.records if r.name == "adapters.slack" and r.levelname == "WARNING"]
    assert logged and logged[0].args
    assert f"(job `{logged[0].args[0]}`)" in text
    assert final.args["channel"] == "C0GENERAL"


async def test_ephemeral_falls_back_to_response_url(
    slack_fake: FakeSlack, openai_fake: FakeOpenAI, start_slack: Any
) -> None:
    await start_slack("socket")
    slack_fake.fail_next("chat.postEphemeral", "not_in_channel")
    await slack_fake.send_command(slack_fake.command_payload("--quality ultra a dog"))
    await slack_fake.wait_until(lambda: bool(slack_fake.responses))
    assert slack_fake.responses[0]["response_type"] == "ephemeral"
    assert "--quality ultra" in slack_fake.responses[0]["text"]


async def test_joins_a_public_channel_but_explains_a_private_one(
    slack_fake: FakeSlack, openai_fake: FakeOpenAI, start_slack: Any
) -> None:
    await start_slack("socket")
    slack_fake.outside.update({"C0PUBLIC", "G0PRIVATE"})
    await slack_fake.send_command(slack_fake.command_payload("a kite", channel="C0PUBLIC"))
    done = await slack_fake.wait_for("files.completeUploadExternal")
    assert done[0].args["channel_id"] == "C0PUBLIC"
    assert slack_fake.calls_to("conversations.join")[0].args["channel"] == "C0PUBLIC"
    await slack_fake.send_command(slack_fake.command_payload("a secret", channel="G0PRIVATE"))
    await slack_fake.wait_until(lambda: bool(slack_fake.responses))
    text = slack_fake.responses[0]["text"]
    assert "can't post in this channel" in text and "nothing was charged" in text
    assert "/invite" in text
    assert len(openai_fake.requests) == 1  # the private one never reached the image service


async def test_channel_allow_list(
    slack_fake: FakeSlack, openai_fake: FakeOpenAI, start_slack: Any
) -> None:
    await start_slack("socket", slack_allowed_channels="C0ART")
    await slack_fake.send_command(slack_fake.command_payload("a cat"))
    shown = await slack_fake.wait_for("chat.postEphemeral")
    assert "not enabled in this channel" in text_of(shown[0])
    await slack_fake.send_command(slack_fake.command_payload("a cat", channel="C0ART"))
    await slack_fake.wait_for("files.completeUploadExternal")
    assert len(openai_fake.requests) == 1


@pytest.mark.parametrize(
    ("setup", "expected"),
    [
        ("login_page", "sign-in page"),
        ("login_page_mislabelled", "sign-in page"),
        ("foreign_host", "isn't stored on Slack"),
        ("too_big", "it is 0.1 MB and the limit is 0.05 MB"),
        ("too_big_unsized", "it is 0.1 MB and the limit is 0.05 MB"),
        ("too_big_chunked", "it is more than 0."),
        ("not_image", "isn't an image"),
    ],
)
async def test_file_problems_are_explained(
    setup: str, expected: str, slack_fake: FakeSlack, openai_fake: FakeOpenAI, start_slack: Any
) -> None:
    await start_slack("socket", imagine_max_attachment_mb=0.05)
    data = png(400, 400) + b"\0" * 60_000 if setup.startswith("too_big") else png()
    file = slack_fake.add_file(data, "pic.png")
    if setup == "login_page":
        slack_fake.login_page_files.add(file["id"])
    elif setup == "foreign_host":
        # Another name for this very machine: a lapse would show as a download, not a dial-out.
        local = file["url_private"].replace("127.0.0.1", "localhost")
        file["url_private"] = file["url_private_download"] = local
    elif setup == "login_page_mislabelled":
        slack_fake.mislabelled_login_page_files.add(file["id"])
    elif setup.startswith("too_big_"):
        del file["size"]  # only the download itself can tell
        if setup == "too_big_chunked":
            slack_fake.chunked_files.add(file["id"])
    elif setup == "not_image":
        file.update(name="notes.pdf", mimetype="application/pdf", filetype="pdf")
    msg = slack_fake.add_message(CHANNEL, f"<@{BOT_USER_ID}> edit this", files=[file])
    await slack_fake.send_event(slack_fake.message_event(CHANNEL, msg, kind="app_mention"))
    shown = await slack_fake.wait_for("chat.postEphemeral")
    assert expected in text_of(shown[0]) and text_of(shown[0]).startswith("Can't use ")
    assert ("notes.pdf" if setup == "not_image" else "pic.png") in text_of(shown[0])
    if setup.startswith(("login_page", "too_big_")):
        assert [d.authorized for d in slack_fake.downloads] == [True]  # with the bot token
    else:
        assert not slack_fake.downloads
    assert not openai_fake.requests and not slack_fake.calls_to("chat.postMessage")
