"""The Vary button on a result and the Cancel button on a job still waiting or being made."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from typing import Any

import pytest

from adapters.slack.text import MARKUP
from bot import texts
from bot.app import App
from tests.fakes.app_fixtures import ProviderGate
from tests.fakes.openai_server import FakeOpenAI
from tests.fakes.slack_server import FakeSlack
from tests.fakes.slack_steps import CHANNEL, TRANSPORTS, click, edits, posted, slash_result, text_of

# Several placeholders in one channel would wait for Slack's one-post-a-second; shrink its clock.
FAST = 0.05


async def until(condition: Callable[[], object]) -> None:
    """Wait for state the fakes don't announce (the core's queue) by looking again, up to 10 s."""
    for _ in range(1000):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the bot never got there")


def job_rows(app: App) -> dict[str, tuple[str, float, str | None]]:
    """Every job row by prompt: (status, charged cost, who cancelled it)."""
    path = app.settings.database_path
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        rows = db.execute("SELECT prompt, status, charged_cost, cancelled_by FROM jobs").fetchall()
    return {str(p): (str(s), float(c), by) for p, s, c, by in rows}


def status_of(app: App, prompt: str) -> str | None:
    """The status of the job asked with ``prompt`` (None before it exists)."""
    row = job_rows(app).get(prompt)
    return row[0] if row else None


def served(openai_fake: FakeOpenAI) -> list[str]:
    """The prompts the image API received, in order."""
    return [str((r.json or r.form or {}).get("prompt")) for r in openai_fake.requests]


async def imagine(fake: FakeSlack, prompt: str, user: str = "UALICE") -> dict[str, Any]:
    """Send /imagine as ``user``; the job's placeholder once it is posted (with its buttons)."""
    await fake.send_command(fake.command_payload(prompt, user=user))
    head = f"<@{user}>: {prompt} — "
    await fake.wait_for("chat.postMessage", lambda c: text_of(c).startswith(head))
    # By head, not the posted text: a busy machine may already have edited it to "working".
    found = [m for m in fake.messages.get(CHANNEL, []) if m["text"].startswith(head)]
    assert found, f"no placeholder for {prompt!r}"
    return dict(found[-1])


def job_of(message: dict[str, Any]) -> str:
    """The job id on a message's first button."""
    actions = next(b for b in message.get("blocks") or [] if b["type"] == "actions")
    return str(actions["elements"][0]["value"])


def buttons(message: dict[str, Any]) -> list[str]:
    """The labels of every button on a message."""
    return [
        e["text"]["text"]
        for b in message.get("blocks") or []
        if b["type"] == "actions"
        for e in b["elements"]
    ]


async def cancelled_on(fake: FakeSlack, ts: str, by: str) -> dict[str, Any]:
    """Wait until the placeholder ``ts`` says it was cancelled by ``by``; the message."""
    words = texts.cancelled(by, MARKUP)
    await fake.wait_until(lambda: words in str((fake.message(CHANNEL, ts) or {}).get("text")))
    return posted(fake, ts)


# --- Vary -----------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", TRANSPORTS)
async def test_vary_edits_the_results_image_with_its_prompt_for_whoever_clicks(
    mode: str, slack_fake: FakeSlack, openai_fake: FakeOpenAI, start_slack: Any
) -> None:
    running = await start_slack(mode)
    root, job_id = await slash_result(slack_fake, "a lighthouse --quality low")
    result = posted(slack_fake, root)
    assert buttons(result) == ["Regenerate", "Vary", "Edit", "Delete"]

    await click(slack_fake, "UBOB", result, "imagine_vary", job_id)
    finals = await slack_fake.wait_for("chat.update", lambda c: "done in" in text_of(c), count=2)
    (edit,) = edits(openai_fake)
    original = await running.app.store.job_images(job_id)
    assert [f.field for f in edit.files] == ["image"]  # one source: a part named "image"
    assert edit.files[0].data == original[0].read_bytes()
    assert edit.form["prompt"] == texts.variation("a lighthouse")
    assert edit.form["quality"] == "low"  # the original's options
    new_id = job_of({"blocks": finals[-1].args["blocks"]})
    new = await running.app.store.get_job(new_id)
    assert new is not None and new_id != job_id
    assert new.parent_job_id == job_id and new.requester.user_id == "UBOB"
    assert text_of(finals[-1]).startswith("<@UBOB>: ")
    # The variation is posted in the result's thread.
    assert slack_fake.calls_to("files.completeUploadExternal")[-1].args["thread_ts"] == root


async def test_vary_works_after_a_restart(
    slack_fake: FakeSlack, openai_fake: FakeOpenAI, start_slack: Any
) -> None:
    first = await start_slack("http")
    root, job_id = await slash_result(slack_fake, "a harbour at dawn")
    await first.stop()
    second = await start_slack("http")

    await click(slack_fake, "UALICE", posted(slack_fake, root), "imagine_vary", job_id)
    await slack_fake.wait_for("files.completeUploadExternal", count=2)
    (edit,) = edits(openai_fake)
    original = await second.app.store.job_images(job_id)
    assert edit.files[0].data == original[0].read_bytes()
    assert edit.form["prompt"] == texts.variation("a harbour at dawn")
    final = await slack_fake.wait_for("chat.update", lambda c: "done in" in text_of(c), count=2)
    new = await second.app.store.get_job(job_of({"blocks": final[-1].args["blocks"]}))
    assert new is not None and new.parent_job_id == job_id


# --- Cancel ---------------------------------------------------------------------------------
async def test_cancel_while_queued_frees_the_slot_and_charges_nothing(
    slack_fake: FakeSlack, openai_fake: FakeOpenAI, start_slack: Any
) -> None:
    running = await start_slack(
        "socket", rate_scale=FAST, imagine_max_concurrency=1, imagine_user_queue=4
    )
    app: App = running.app
    gate = ProviderGate.hold(app)
    first = await imagine(slack_fake, "first picture")
    await until(lambda: status_of(app, "first picture") == "running")
    second = await imagine(slack_fake, "second picture")
    third = await imagine(slack_fake, "bob picture", user="UBOB")
    await until(lambda: app.service.queue_length == 2)
    # Every job shows Cancel from its first placeholder on.
    assert [buttons(m) for m in (first, second, third)] == [["Cancel"]] * 3
    # Slack refuses the cancellation's edit twice: it must still land.
    slack_fake.fail_when(
        "chat.update", lambda a: "cancelled by" in str(a.get("text")), "ratelimited", times=2
    )

    await click(slack_fake, "UALICE", second, "imagine_cancel", job_of(second))
    shown = await cancelled_on(slack_fake, second["ts"], "UALICE")
    assert shown["text"] == (
        "<@UALICE>: second picture — cancelled by <@UALICE> — nothing was charged"
    )
    assert buttons(shown) == []
    await until(lambda: app.service.queue_length == 1)  # only Bob's is left in line
    assert job_rows(app)["second picture"] == ("failed", 0.0, "slack:UALICE")

    gate.release.set()
    await slack_fake.wait_for("chat.update", lambda c: "done in" in text_of(c), count=2)
    assert served(openai_fake) == ["first picture", "bob picture"]
    assert "cancelled by" in posted(slack_fake, second["ts"])["text"]
    # Nothing private went out (it is said on the placeholder), and Alice needed no look-up.
    assert not slack_fake.calls_to("chat.postEphemeral")
    assert not slack_fake.calls_to("users.info")


async def test_cancel_during_the_image_call_ends_the_job_and_the_next_one_runs(
    slack_fake: FakeSlack, openai_fake: FakeOpenAI, start_slack: Any
) -> None:
    running = await start_slack("socket", rate_scale=FAST)
    app: App = running.app
    openai_fake.fail_next("timeout", seconds=30)
    placeholder = await imagine(slack_fake, "a slow painting")
    await openai_fake.wait_for()  # the image call is on the wire

    await click(slack_fake, "UALICE", placeholder, "imagine_cancel", job_of(placeholder))
    shown = await cancelled_on(slack_fake, placeholder["ts"], "UALICE")
    assert buttons(shown) == [] and "image" not in [b["type"] for b in shown["blocks"]]
    assert job_rows(app)["a slow painting"] == ("failed", 0.0, "slack:UALICE")
    assert not slack_fake.calls_to("chat.postEphemeral")

    await imagine(slack_fake, "a quick sketch")
    await slack_fake.wait_for("chat.update", lambda c: "done in" in text_of(c))
    assert status_of(app, "a quick sketch") == "succeeded"


async def test_someone_elses_cancel_is_refused_privately_and_changes_nothing(
    slack_fake: FakeSlack, openai_fake: FakeOpenAI, start_slack: Any
) -> None:
    running = await start_slack("http")
    app: App = running.app
    gate = ProviderGate.hold(app)
    placeholder = await imagine(slack_fake, "alice's owl")
    await until(lambda: status_of(app, "alice's owl") == "running")
    updates = len(slack_fake.calls_to("chat.update"))

    await click(slack_fake, "UBOB", placeholder, "imagine_cancel", job_of(placeholder))
    [refusal] = await slack_fake.wait_for("chat.postEphemeral")
    assert refusal.args["user"] == "UBOB" and text_of(refusal) == texts.ONLY_OWNER_CANCELS
    assert not refusal.args.get("thread_ts")  # beside the button, not inside its thread
    assert [c.args["user"] for c in slack_fake.calls_to("users.info")] == ["UBOB"]
    assert len(slack_fake.calls_to("chat.update")) == updates
    assert buttons(posted(slack_fake, placeholder["ts"])) == ["Cancel"]
    assert status_of(app, "alice's owl") == "running"

    gate.release.set()
    await slack_fake.wait_for("chat.update", lambda c: "done in" in text_of(c))
    assert job_rows(app)["alice's owl"][0] == "succeeded"


async def test_a_workspace_admin_can_cancel_anyones_job(
    slack_fake: FakeSlack, openai_fake: FakeOpenAI, start_slack: Any
) -> None:
    # UADMIN is a workspace admin in Slack only (not in IMAGINE_ADMIN_USERS).
    running = await start_slack("socket")
    app: App = running.app
    gate = ProviderGate.hold(app)
    placeholder = await imagine(slack_fake, "a quiet forest")
    await until(lambda: status_of(app, "a quiet forest") == "running")

    await click(slack_fake, "UADMIN", placeholder, "imagine_cancel", job_of(placeholder))
    shown = await cancelled_on(slack_fake, placeholder["ts"], "UADMIN")
    assert buttons(shown) == []
    assert job_rows(app)["a quiet forest"] == ("failed", 0.0, "slack:UADMIN")
    assert [c.args["user"] for c in slack_fake.calls_to("users.info")] == ["UADMIN"]
    gate.release.set()
    assert not openai_fake.requests
    assert not slack_fake.calls_to("chat.postEphemeral")


async def test_cancel_on_a_finished_job_says_it_is_too_late(
    slack_fake: FakeSlack, openai_fake: FakeOpenAI, start_slack: Any
) -> None:
    running = await start_slack("socket")
    gate = ProviderGate.hold(running.app)
    placeholder = await imagine(slack_fake, "a red kite")  # as Alice's screen still shows it
    gate.release.set()
    await slack_fake.wait_for("chat.update", lambda c: "done in" in text_of(c))
    assert "Cancel" not in buttons(posted(slack_fake, placeholder["ts"]))

    await click(slack_fake, "UALICE", placeholder, "imagine_cancel", job_of(placeholder))
    [told] = await slack_fake.wait_for("chat.postEphemeral")
    assert told.args["user"] == "UALICE"
    assert text_of(told) == texts.too_late_to_cancel("succeeded")
    assert "done in" in posted(slack_fake, placeholder["ts"])["text"]
