"""/imagine-usage, /imagine-history, /imagine-admin and user-group tiers, on a fake Slack."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

import adapters.slack
from adapters.slack.spend import SECTION_TEXT, answer_messages
from bot.policy import parse_entry, target_key
from bot.spend_commands import Answer
from tests.fakes.openai_server import FakeOpenAI
from tests.fakes.slack_server import BOT_USER_ID, FakeSlack, SlackCall
from tests.fakes.slack_steps import CHANNEL, click, posted, slash_result, text_of

USAGE, HISTORY, ADMIN = "/imagine-usage", "/imagine-history", "/imagine-admin"


def shown(call: SlackCall) -> str:
    """What an ephemeral shows: its sections' text (the ``text`` is only the fallback)."""
    sections = [b["text"]["text"] for b in call.args.get("blocks") or [] if b["type"] == "section"]
    return "\n".join(sections) if sections else text_of(call)


def ephemerals(fake: FakeSlack) -> list[SlackCall]:
    return fake.calls_to("chat.postEphemeral")


async def ask(
    fake: FakeSlack, command: str, text: str = "", *, user: str = "UALICE", channel: str = CHANNEL
) -> str:
    """Run a command and return the private answer it got."""
    before = len(ephemerals(fake))
    await fake.send_command(fake.command_payload(text, user=user, channel=channel, command=command))
    await fake.wait_until(lambda: len(ephemerals(fake)) > before)
    answer = ephemerals(fake)[before]
    assert answer.args["user"] == user and answer.args["channel"] == channel
    return shown(answer)


async def imagine(fake: FakeSlack, prompt: str, *, user: str, channel: str = CHANNEL) -> None:
    await fake.send_command(fake.command_payload(prompt, user=user, channel=channel))


def test_manifest_declares_the_commands_and_their_scopes() -> None:
    path = Path(adapters.slack.__file__).parent / "manifest.yaml"
    manifest = yaml.safe_load(path.read_text(encoding="utf-8"))
    commands = {c["command"]: c for c in manifest["features"]["slash_commands"]}
    assert {USAGE, HISTORY, ADMIN} <= set(commands)
    for name in (USAGE, HISTORY, ADMIN):
        assert commands[name]["usage_hint"] and commands[name]["description"]
        # Picked people, channels and groups then arrive as ids.
        assert commands[name]["should_escape"] is True
    assert "set <scope>" in commands[ADMIN]["usage_hint"]
    scopes = set(manifest["oauth_config"]["scopes"]["bot"])
    assert {"usergroups:read", "channels:read", "groups:read", "users:read"} <= scopes


async def test_a_tier_rule_holds_for_the_groups_members_at_every_entry_point(
    slack_fake: FakeSlack, openai_fake: FakeOpenAI, start_slack: Any
) -> None:
    slack_fake.add_usergroup("S0PRO", "pro", ["UBOB"])
    running = await start_slack("socket")
    done = await ask(slack_fake, ADMIN, "set tier <!subteam^S0PRO|@pro> limit 1/day", user="UADMIN")
    assert done.startswith("Done: <!subteam^S0PRO>'s limit is now `1/day`"), done

    root, job_id = await slash_result(slack_fake, "a red square")  # Alice, not in the group
    await click(slack_fake, "UALICE", posted(slack_fake, root), "imagine_regenerate", job_id)
    await slack_fake.wait_for("files.completeUploadExternal", count=2)

    await imagine(slack_fake, "a blue square", user="UBOB")
    await slack_fake.wait_for("files.completeUploadExternal", count=3)
    mention = slack_fake.add_message(CHANNEL, f"<@{BOT_USER_ID}> a green square", user="UBOB")
    await slack_fake.send_event(slack_fake.message_event(CHANNEL, mention, kind="app_mention"))
    to_bob = await slack_fake.wait_for("chat.postEphemeral", lambda c: c.args["user"] == "UBOB")
    assert "limit of 1 image per day" in text_of(to_bob[0]), text_of(to_bob[0])
    [bobs] = await running.app.store.history("slack:UBOB", 1)
    assert bobs.message_key is not None
    placeholder = posted(slack_fake, bobs.message_key.split(":")[1])
    await click(slack_fake, "UBOB", placeholder, "imagine_regenerate", bobs.job.id)
    to_bob = await slack_fake.wait_for(
        "chat.postEphemeral", lambda c: c.args["user"] == "UBOB", count=2
    )
    assert "limit of 1 image per day" in text_of(to_bob[1]), text_of(to_bob[1])
    await click(slack_fake, "UBOB", posted(slack_fake, root), "imagine_edit_button", job_id)
    view = (await slack_fake.wait_for("views.open"))[0].args["view"]
    values = {"prompt": {"prompt": {"value": "paint it purple"}}}
    await slack_fake.send_interactive(slack_fake.view_submission_payload("UBOB", view, values))
    to_bob = await slack_fake.wait_for(
        "chat.postEphemeral", lambda c: c.args["user"] == "UBOB", count=3
    )
    assert "limit of 1 image per day" in text_of(to_bob[2]), text_of(to_bob[2])
    assert len(openai_fake.requests) == 3
    # One usergroups.list served the admin's lookup and every request after it.
    (listed,) = slack_fake.calls_to("usergroups.list")
    assert listed.args["include_users"] in ("1", "true", True)


async def test_no_user_groups_are_looked_up_while_no_tier_has_rules(
    slack_fake: FakeSlack, openai_fake: FakeOpenAI, start_slack: Any
) -> None:
    slack_fake.add_usergroup("S0PRO", "pro", ["UBOB"])
    await start_slack("socket")
    await ask(slack_fake, ADMIN, "set team limit 50/day", user="UADMIN")
    root, job_id = await slash_result(slack_fake, "a red square")
    await click(slack_fake, "UBOB", posted(slack_fake, root), "imagine_regenerate", job_id)
    mention = slack_fake.add_message(CHANNEL, f"<@{BOT_USER_ID}> a green square", user="UBOB")
    await slack_fake.send_event(slack_fake.message_event(CHANNEL, mention, kind="app_mention"))
    await slack_fake.wait_for("files.completeUploadExternal", count=3)
    assert "What's left" in await ask(slack_fake, USAGE, "<@UBOB|bob>", user="UADMIN")
    assert slack_fake.calls_to("usergroups.list") == []


async def test_a_non_admin_cannot_change_the_rules(
    slack_fake: FakeSlack, openai_fake: FakeOpenAI, start_slack: Any
) -> None:
    running = await start_slack("socket")
    for text in ("set team budget 1/day", "set galaxy budget 1/day", "show"):
        answer = await ask(slack_fake, ADMIN, text, user="UBOB")
        assert answer.startswith(":warning: Only workspace admins and owners"), answer
        assert "Nothing was changed" in answer
    assert await running.app.store.policy_entries() == []
    assert await running.app.store.policy_changes() == []
    assert not slack_fake.responses and not slack_fake.calls_to("chat.postMessage")


async def test_an_admins_change_applies_to_the_next_request_without_a_restart(
    slack_fake: FakeSlack, openai_fake: FakeOpenAI, start_slack: Any
) -> None:
    await start_slack("socket")
    done = await ask(slack_fake, ADMIN, "set team budget 0.001/day", user="UADMIN")
    assert done.startswith("Done: this workspace's budget is now `$0.001/day`"), done
    await imagine(slack_fake, "a red square", user="UALICE")
    refused = await slack_fake.wait_for("chat.postEphemeral", lambda c: c.args["user"] == "UALICE")
    assert "this workspace's budget" in text_of(refused[0]).lower(), text_of(refused[0])
    assert not openai_fake.requests

    done = await ask(slack_fake, ADMIN, "set channel <#C0ART|art> size 1024x1024", user="UADMIN")
    assert done.startswith("Done: <#C0ART>'s size is now `1024x1024`"), done
    await ask(slack_fake, ADMIN, "unset team budget", user="UADMIN")
    await imagine(slack_fake, "a blue square", user="UALICE", channel="C0ART")
    await slack_fake.wait_for("files.completeUploadExternal")
    await imagine(slack_fake, "a green square", user="UALICE")
    await slack_fake.wait_for("files.completeUploadExternal", count=2)
    sizes = [(r.json or {}).get("size") for r in openai_fake.requests]
    assert sizes[0] == "1024x1024" and sizes[1] != "1024x1024", sizes
    log = await ask(slack_fake, ADMIN, "log", user="UADMIN")
    assert "<@UADMIN>" in log and "<#C0ART>'s size" in log


async def test_bad_admin_input_is_explained_privately_and_changes_nothing(
    slack_fake: FakeSlack, openai_fake: FakeOpenAI, start_slack: Any
) -> None:
    running = await start_slack("http")
    cases = {
        "set galaxy budget 1/day": "There is no scope called 'galaxy'",
        "set team budget 5/fortnight": "unknown unit 'fortnight'",
        "set team budget -5/day": "can't be negative",
        "set user <@UNOBODY|nobody> limit 1/day": "a user called &lt;@UNOBODY|nobody&gt;",
        "set user @alice limit 1/day": "mention picked from Slack's list",
        "set channel <#C0GONE|gone> size 1024x1024": "can't find a channel called",
        "set tier <!subteam^S0NONE|@none> limit 1/day": "can't find a user group called",
        "set team budget": "Give a value for budget",
        "frobnicate": "Use `show`, `log`, `set",
    }
    for text, expected in cases.items():
        answer = await ask(slack_fake, ADMIN, text, user="UADMIN")
        assert answer.startswith(":warning: ") and expected in answer, (text, answer)
        assert "Traceback" not in answer
    slack_fake.fail_next("conversations.info", "missing_scope")  # installed from an old manifest
    answer = await ask(slack_fake, ADMIN, "set channel <#C0ART|art> size 1024x1024", user="UADMIN")
    assert answer.startswith(":warning: Slack won't let me look that up"), answer
    assert "channels:read" in answer
    assert await running.app.store.policy_entries() == []
    assert await running.app.store.policy_changes() == []
    assert slack_fake.calls_to("users.info")[-1].args["user"] in ("UADMIN", "UNOBODY")


async def test_usage_shows_whats_left_and_admins_see_the_team_report(
    slack_fake: FakeSlack, openai_fake: FakeOpenAI, start_slack: Any
) -> None:
    await start_slack("socket", imagine_user_limit="10/day")
    await slash_result(slack_fake, "a red square")
    await imagine(slack_fake, "a blue square", user="UBOB", channel="C0ART")
    await slack_fake.wait_for("files.completeUploadExternal", count=2)

    mine = await ask(slack_fake, USAGE)
    assert mine.startswith("*Your usage*") and "Today: 1 image" in mine, mine
    assert "What's left:" in mine and "9 left" in mine, mine

    refused = await ask(slack_fake, USAGE, "<@UBOB|bob>")
    assert refused.startswith(":warning: Only workspace admins"), refused
    refused = await ask(slack_fake, USAGE, "team")
    assert refused.startswith(":warning: Only workspace admins"), refused

    theirs = await ask(slack_fake, USAGE, "<@UBOB|bob>", user="UADMIN")
    assert theirs.startswith("*Usage of <@UBOB>*") and "9 left" in theirs, theirs
    report = await ask(slack_fake, USAGE, "team", user="UADMIN")
    assert "Top users:" in report and "<@UALICE>" in report and "<@UBOB>" in report, report
    assert "Channels:" in report and "<#C0GENERAL>" in report and "<#C0ART>" in report
    missing = await ask(slack_fake, USAGE, "<@UNOBODY>", user="UADMIN")
    assert missing.startswith(":warning: I can't find a user called &lt;@UNOBODY&gt;"), missing


async def test_history_links_each_job_to_its_message_and_keeps_others_jobs_private(
    slack_fake: FakeSlack, openai_fake: FakeOpenAI, start_slack: Any
) -> None:
    await start_slack("socket")
    root, job_id = await slash_result(slack_fake, "a lighthouse in fog")
    link = f"https://test.slack.com/archives/{CHANNEL}/p{root.replace('.', '')}"

    listed = await ask(slack_fake, HISTORY)
    assert listed.startswith("*Your last 1 request*"), listed
    assert f"`{job_id}`" in listed and "a lighthouse in fog" in listed
    assert f"<{link}|message>" in listed, listed

    record = await ask(slack_fake, HISTORY, job_id)
    assert record.startswith(f"*Job `{job_id}`: succeeded*"), record
    assert "Asked by <@UALICE>" in record and f"<{link}|Open the message>" in record

    refused = await ask(slack_fake, HISTORY, job_id, user="UBOB")
    assert refused.startswith(":warning: ") and "someone else" in refused, refused
    assert "lighthouse" not in refused
    assert (await ask(slack_fake, HISTORY, job_id, user="UADMIN")).startswith(f"*Job `{job_id}`")
    empty = await ask(slack_fake, HISTORY, user="UBOB")
    assert "haven't asked for any images yet" in empty
    # auth.test is asked once, at start-up, and its url serves every link.
    assert len(slack_fake.calls_to("auth.test")) == 1


async def test_a_long_answer_is_split_so_no_part_is_cut(
    slack_fake: FakeSlack, openai_fake: FakeOpenAI, start_slack: Any
) -> None:
    running = await start_slack("socket")
    model = "gpt-image-" + "x" * 50
    channels = [f"C0LONG{i:03d}" for i in range(40)]
    for channel in channels:
        slack_fake.add_channel(channel, channel.lower())
        entry = parse_entry("channel", target_key("slack", channel), "model", model)
        await running.app.store.set_policy(entry, "slack:UADMIN")
    await slack_fake.send_command(slack_fake.command_payload("show", user="UADMIN", command=ADMIN))
    [call] = await slack_fake.wait_for("chat.postEphemeral")
    sections = [b["text"]["text"] for b in call.args["blocks"]]
    assert len(sections) >= 2 and all(len(s) <= SECTION_TEXT for s in sections)
    assert len(text_of(call)) <= 4000
    whole = "\n".join(sections)
    assert len(whole) > SECTION_TEXT
    for channel in channels:  # every line arrived whole
        assert f"• <#{channel}>'s model: `{model}`" in sections_lines(sections)
    assert whole.startswith("*Rules in force*") and whole.rstrip().endswith("`log`.")


def sections_lines(sections: list[str]) -> set[str]:
    return {line for section in sections for line in section.split("\n")}


def test_an_answer_past_fifty_sections_goes_out_as_several_messages() -> None:
    line = "y" * 2000
    messages = answer_messages(Answer("\n".join([line] * 120), refused=True))
    assert [len(blocks) for _text, blocks in messages] == [50, 50, 20]
    texts = [b["text"]["text"] for _text, blocks in messages for b in blocks]
    assert texts[0] == f":warning: {line}" and texts[1:] == [line] * 119
    assert all(len(text) <= 4000 for text, _blocks in messages)
    one_line = answer_messages(Answer("word " * 2000))  # one line longer than a section
    parts = [b["text"]["text"] for b in one_line[0][1]]
    assert all(len(p) <= SECTION_TEXT for p in parts) and " ".join(parts).split() == ["word"] * 2000


async def test_outside_the_bots_channels_the_answer_comes_through_the_response_url(
    slack_fake: FakeSlack, openai_fake: FakeOpenAI, start_slack: Any
) -> None:
    await start_slack("socket")
    slack_fake.outside.add("C0SECRET")
    payload = slack_fake.command_payload("", user="UALICE", channel="C0SECRET", command=USAGE)
    await slack_fake.send_command(payload)
    await slack_fake.wait_until(lambda: bool(slack_fake.responses))
    [response] = slack_fake.responses
    assert response["response_type"] == "ephemeral"
    assert response["blocks"][0]["text"]["text"].startswith("*Your usage*")
