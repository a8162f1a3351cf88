"""Prompt help on Slack: --enhance, "Enhance & retry", and "Rephrase and retry" after a block."""

from __future__ import annotations

import sqlite3
from typing import Any

import pytest

from adapters.slack.handlers import SENT_SUGGESTION
from adapters.slack.text import HELP as USAGE
from adapters.slack.text import parse_prompt
from bot import texts
from bot.app import App
from tests.fakes.openai_server import FakeOpenAI, chat_reply
from tests.fakes.slack_server import BOT_USER_ID, FakeSlack
from tests.fakes.slack_steps import CHANNEL, TRANSPORTS, click, edits, posted, slash_result, text_of

HELP = {"imagine_prompt_model": "gpt-4.1-mini", "imagine_prompt_price": "0.40,1.60"}


def served(openai_fake: FakeOpenAI) -> list[str]:
    """The prompts the image API received, in order."""
    return [str((r.json or r.form or {}).get("prompt")) for r in openai_fake.requests]


def rewritten(openai_fake: FakeOpenAI) -> list[str]:
    """The user messages prompt help was asked to rewrite, in order."""
    return [str((r.json or {})["messages"][-1]["content"]) for r in openai_fake.chat_requests]


def job_ids(app: App, prompt: str) -> list[str]:
    """The ids of the jobs asked with ``prompt``."""
    path = app.settings.database_path
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        rows = db.execute("SELECT id FROM jobs WHERE prompt = ?", (prompt,)).fetchall()
    return [str(row[0]) for row in rows]


def buttons(message: dict[str, Any]) -> list[str]:
    """The labels of every button on a message."""
    return [
        e["text"]["text"]
        for b in message.get("blocks") or []
        if b["type"] == "actions"
        for e in b["elements"]
    ]


def value_of(message: dict[str, Any], label: str) -> str:
    """The value of the button labelled ``label``."""
    for block in message.get("blocks") or []:
        for element in block.get("elements") or [] if block["type"] == "actions" else []:
            if element["text"]["text"] == label:
                return str(element["value"])
    raise AssertionError(f"no {label!r} button; the message shows {buttons(message)}")


def action_of(message: dict[str, Any], label: str) -> str:
    """The action id of the button labelled ``label``."""
    for block in message.get("blocks") or []:
        for element in block.get("elements") or [] if block["type"] == "actions" else []:
            if element["text"]["text"] == label:
                return str(element["action_id"])
    raise AssertionError(f"no {label!r} button")


def block_texts(message: dict[str, Any]) -> list[str]:
    """Every mrkdwn text of a message's sections and context blocks."""
    out: list[str] = []
    for block in message.get("blocks") or []:
        if block["type"] == "section":
            out.append(block["text"]["text"])
        if block["type"] == "context":
            out.extend(e.get("text", "") for e in block["elements"])
    return out


async def press(fake: FakeSlack, shown: dict[str, Any], label: str) -> None:
    """Click the button ``label`` on the private message ``shown``, as its user."""
    payload = fake.ephemeral_action_payload(shown, action_of(shown, label), value_of(shown, label))
    await fake.send_interactive(payload)


async def private_with(fake: FakeSlack, user: str, label: str) -> dict[str, Any]:
    """Wait until ``user`` sees a private message with the button ``label``; that message."""
    await fake.wait_until(lambda: any(label in buttons(e) for e in fake.ephemerals_for(user)))
    return next(e for e in fake.ephemerals_for(user) if label in buttons(e))


# --- the flag -------------------------------------------------------------------------------
def test_enhance_flag_and_its_short_form() -> None:
    assert parse_prompt("a fox --enhance --n 2").enhance
    assert parse_prompt("-e a fox").prompt == "a fox"
    assert parse_prompt("-e a fox").enhance
    assert not parse_prompt("a fox").enhance
    assert "`--enhance`" in USAGE


@pytest.mark.parametrize("mode", TRANSPORTS)
async def test_enhance_rewrites_the_prompt_then_makes_the_image_and_shows_both(
    mode: str, slack_fake: FakeSlack, openai_fake: FakeOpenAI, start_slack: Any
) -> None:
    await start_slack(mode, **HELP)
    root, _ = await slash_result(slack_fake, "a fox --enhance --quality low")

    assert rewritten(openai_fake) == ["a fox"]
    assert served(openai_fake) == [chat_reply("a fox")]
    result = posted(slack_fake, root)
    assert result["text"].startswith(f"<@UALICE>: {chat_reply('a fox')} — done in")
    assert "✨ Enhanced from: a fox" in block_texts(result)
    assert "✨ Enhance & retry" in buttons(result)


async def test_a_mention_with_e_is_enhanced_and_user_text_is_escaped(
    slack_fake: FakeSlack, openai_fake: FakeOpenAI, start_slack: Any
) -> None:
    await start_slack("socket", **HELP)
    msg = slack_fake.add_message(CHANNEL, f"<@{BOT_USER_ID}> cats &amp; &lt;dogs&gt; -e")
    await slack_fake.send_event(slack_fake.message_event(CHANNEL, msg, kind="app_mention"))
    [final] = await slack_fake.wait_for("chat.update", lambda c: "done in" in text_of(c))

    assert rewritten(openai_fake) == ["cats & <dogs>"]
    assert served(openai_fake) == [chat_reply("cats & <dogs>")]
    result = posted(slack_fake, str(final.args["ts"]))
    assert "✨ Enhanced from: cats &amp; &lt;dogs&gt;" in block_texts(result)
    assert "<dogs>" not in result["text"] and "&lt;dogs&gt;" in result["text"]


async def test_a_thread_reply_with_enhance_edits_with_the_rewrite(
    slack_fake: FakeSlack, openai_fake: FakeOpenAI, start_slack: Any
) -> None:
    await start_slack("http", **HELP)
    root, _ = await slash_result(slack_fake, "a red square")
    reply = slack_fake.add_message(CHANNEL, "make it blue --enhance", thread_ts=root)
    await slack_fake.send_event(slack_fake.message_event(CHANNEL, reply))
    finals = await slack_fake.wait_for("chat.update", lambda c: "done in" in text_of(c), count=2)

    (edit,) = edits(openai_fake)
    assert rewritten(openai_fake) == ["make it blue"]
    assert edit.form["prompt"] == chat_reply("make it blue")
    shown = posted(slack_fake, str(finals[-1].args["ts"]))
    assert "✨ Enhanced from: make it blue" in block_texts(shown)


async def test_a_long_rewrite_fits_slacks_text_limits(
    slack_fake: FakeSlack, openai_fake: FakeOpenAI, start_slack: Any
) -> None:
    # The rewrite is longer than a section may hold, and the original is 2990 characters.
    await start_slack("socket", **HELP)
    prompt = " ".join(["a tall & narrow tower"] * 136)[:2990].strip()
    await slack_fake.send_command(slack_fake.command_payload(f"{prompt} --enhance"))
    [final] = await slack_fake.wait_for("chat.update", lambda c: "done in" in text_of(c))

    assert served(openai_fake) == [chat_reply(prompt)]
    shown = block_texts(posted(slack_fake, str(final.args["ts"])))
    assert all(len(text) <= 3000 for text in shown)
    assert any(t.startswith("*Prompt:* A detailed illustration of a tall &amp;") for t in shown)
    assert any(t.startswith("✨ Enhanced from: a tall &amp; narrow") for t in shown)


@pytest.mark.parametrize("mode", TRANSPORTS)
async def test_enhance_without_prompt_help_is_refused_privately_and_nothing_is_asked(
    mode: str, slack_fake: FakeSlack, openai_fake: FakeOpenAI, start_slack: Any
) -> None:
    await start_slack(mode)
    await slack_fake.send_command(slack_fake.command_payload("a fox --enhance"))
    [told] = await slack_fake.wait_for("chat.postEphemeral")

    assert told.args["user"] == "UALICE"
    assert "Prompt help is off" in text_of(told)
    assert openai_fake.requests == [] and openai_fake.chat_requests == []
    assert not slack_fake.calls_to("chat.postMessage")


# --- Enhance & retry ------------------------------------------------------------------------
@pytest.mark.parametrize("mode", TRANSPORTS)
async def test_enhance_and_retry_rewrites_the_results_prompt_for_whoever_clicks(
    mode: str, slack_fake: FakeSlack, openai_fake: FakeOpenAI, start_slack: Any
) -> None:
    running = await start_slack(mode, **HELP)
    root, job_id = await slash_result(slack_fake, "a red boat --quality low")
    result = posted(slack_fake, root)
    assert buttons(result) == ["Regenerate", "Vary", "✨ Enhance & retry", "Edit", "Delete"]
    assert openai_fake.chat_requests == []

    await click(slack_fake, "UBOB", result, "imagine_enhance_retry", job_id)
    finals = await slack_fake.wait_for("chat.update", lambda c: "done in" in text_of(c), count=2)
    assert rewritten(openai_fake) == ["a red boat"]
    assert served(openai_fake) == ["a red boat", chat_reply("a red boat")]
    assert [r.json["quality"] for r in openai_fake.requests if r.json] == ["low", "low"]
    assert text_of(finals[-1]).startswith(f"<@UBOB>: {chat_reply('a red boat')} — ")
    # In the result's thread, counted against Bob.
    assert slack_fake.calls_to("files.completeUploadExternal")[-1].args["thread_ts"] == root
    new_id = value_of({"blocks": finals[-1].args["blocks"]}, "Regenerate")
    new = await running.app.store.get_job(new_id)
    assert new is not None and new.requester.user_id == "UBOB"


async def test_enhance_and_retry_is_offered_only_while_prompt_help_is_on(
    slack_fake: FakeSlack, openai_fake: FakeOpenAI, start_slack: Any
) -> None:
    plain = await start_slack("socket")
    root, _ = await slash_result(slack_fake, "a red boat")
    assert buttons(posted(slack_fake, root)) == ["Regenerate", "Vary", "Edit", "Delete"]
    await plain.stop()

    await start_slack("socket", **HELP)
    await slack_fake.send_command(slack_fake.command_payload("a blue boat"))
    [final] = await slack_fake.wait_for("chat.update", lambda c: "blue boat — done" in text_of(c))
    assert "✨ Enhance & retry" in buttons(posted(slack_fake, str(final.args["ts"])))


# --- after a safety block -------------------------------------------------------------------
@pytest.mark.parametrize("mode", TRANSPORTS)
async def test_rephrase_shows_the_rewrite_privately_and_sends_only_when_confirmed(
    mode: str, slack_fake: FakeSlack, openai_fake: FakeOpenAI, start_slack: Any
) -> None:
    running = await start_slack(mode, **HELP)
    openai_fake.fail_next("moderation_blocked")
    await slack_fake.send_command(slack_fake.command_payload("a spooky castle"))
    refusal = await private_with(slack_fake, "UALICE", "Rephrase and retry")
    assert "safety system blocked" in refusal["text"]
    [placeholder] = slack_fake.messages[CHANNEL]
    assert texts.NOT_MADE in placeholder["text"]
    [blocked] = job_ids(running.app, "a spooky castle")
    assert value_of(refusal, "Rephrase and retry") == blocked

    await press(slack_fake, refusal, "Rephrase and retry")
    offer = await private_with(slack_fake, "UALICE", "Send it")
    assert chat_reply("a spooky castle") in offer["text"]
    assert buttons(offer) == ["Send it", "Never mind"]
    blocked_id, _, suggestion_id = value_of(offer, "Send it").partition(":")
    suggestion = await running.app.store.get_job(suggestion_id)
    assert blocked_id == blocked and suggestion is not None
    assert suggestion.prompt == chat_reply("a spooky castle")
    assert refusal not in slack_fake.ephemerals  # the refusal became the offer
    assert rewritten(openai_fake) == ["a spooky castle"]
    assert served(openai_fake) == ["a spooky castle"]  # nothing sent again yet
    assert len(slack_fake.calls_to("chat.postMessage")) == 1

    await press(slack_fake, offer, "Send it")
    [final] = await slack_fake.wait_for("chat.update", lambda c: "done in" in text_of(c))
    assert served(openai_fake) == ["a spooky castle", chat_reply("a spooky castle")]
    assert len(openai_fake.chat_requests) == 1  # the confirmed rewrite, not a new one
    assert text_of(final).startswith(f"<@UALICE>: {chat_reply('a spooky castle')} — done in")
    # A new placeholder in the same place as the blocked one (the channel, no thread).
    retry = slack_fake.calls_to("chat.postMessage")[1]
    assert retry.args["channel"] == CHANNEL and not retry.args.get("thread_ts")
    assert [e["text"] for e in slack_fake.ephemerals_for("UALICE")] == [SENT_SUGGESTION]


async def test_send_it_runs_in_the_blocked_jobs_thread(
    slack_fake: FakeSlack, openai_fake: FakeOpenAI, start_slack: Any
) -> None:
    await start_slack("socket", **HELP)
    openai_fake.fail_next("moderation_blocked")
    msg = slack_fake.add_message(CHANNEL, f"<@{BOT_USER_ID}> a haunted lake")
    await slack_fake.send_event(slack_fake.message_event(CHANNEL, msg, kind="app_mention"))
    refusal = await private_with(slack_fake, "UALICE", "Rephrase and retry")
    assert refusal["thread_ts"] == msg["ts"]

    await press(slack_fake, refusal, "Rephrase and retry")
    offer = await private_with(slack_fake, "UALICE", "Send it")
    await press(slack_fake, offer, "Send it")
    await slack_fake.wait_for("chat.update", lambda c: "done in" in text_of(c))
    placeholders = slack_fake.calls_to("chat.postMessage")
    assert [c.args.get("thread_ts") for c in placeholders] == [msg["ts"], msg["ts"]]
    assert served(openai_fake) == ["a haunted lake", chat_reply("a haunted lake")]


async def test_never_mind_sends_nothing_and_removes_the_offer(
    slack_fake: FakeSlack, openai_fake: FakeOpenAI, start_slack: Any
) -> None:
    await start_slack("http", **HELP)
    openai_fake.fail_next("moderation_blocked")
    await slack_fake.send_command(slack_fake.command_payload("a spooky castle"))
    refusal = await private_with(slack_fake, "UALICE", "Rephrase and retry")
    await press(slack_fake, refusal, "Rephrase and retry")
    offer = await private_with(slack_fake, "UALICE", "Send it")

    await press(slack_fake, offer, "Never mind")
    await slack_fake.wait_until(lambda: not slack_fake.ephemerals_for("UALICE"))
    assert slack_fake.responses[-1] == {"delete_original": True}
    assert served(openai_fake) == ["a spooky castle"]
    assert len(openai_fake.chat_requests) == 1
    assert len(slack_fake.calls_to("chat.postMessage")) == 1


async def test_rephrase_is_offered_only_while_prompt_help_is_on(
    slack_fake: FakeSlack, openai_fake: FakeOpenAI, start_slack: Any
) -> None:
    plain = await start_slack("socket")
    openai_fake.fail_next("moderation_blocked")
    await slack_fake.send_command(slack_fake.command_payload("a spooky castle"))
    [told] = await slack_fake.wait_for("chat.postEphemeral")
    assert "safety system blocked" in text_of(told)
    assert [buttons(e) for e in slack_fake.ephemerals_for("UALICE")] == [[]]
    await plain.stop()

    await start_slack("socket", **HELP)
    openai_fake.fail_next("moderation_blocked")
    await slack_fake.send_command(slack_fake.command_payload("a spookier castle"))
    offered = await private_with(slack_fake, "UALICE", "Rephrase and retry")
    assert "safety system blocked" in offered["text"]
