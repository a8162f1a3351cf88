"""/imagine-usage, -history and -admin, and role tiers, end to end on the fake Discord."""

from __future__ import annotations

from typing import Any

from adapters.discord.spend import split_message
from bot.policy import Entry
from tests.fakes.discord_server import (
    EPHEMERAL,
    BotFactory,
    FakeDiscord,
    FakeInteraction,
    FakeUser,
    job_of,
)
from tests.fakes.openai_server import FakeOpenAI

MANAGE_GUILD = 1 << 5
LIMIT_WORDS = "limit of 1 image per day"


async def answer(fake: FakeDiscord, it: FakeInteraction, *, ending: str | None = None) -> str:
    """The whole private answer to a command (all its messages), once it has arrived.

    ``ending``: wait until the last message ends with it (a long answer comes in pieces).
    """

    def pieces() -> list[dict[str, Any]] | None:
        if it.original_id is None or it.original_id not in fake.messages:
            return None
        found = fake.ephemeral_followups(it)
        if not found or not found[0]["content"]:
            return None
        if ending is not None and not found[-1]["content"].endswith(ending):
            return None
        return found

    messages: list[dict[str, Any]] = await fake.wait_until(pieces)
    # Deferred as "only you can see this", and every message after it just as private.
    assert it.callback_type == 5 and (it.callback_data or {}).get("flags", 0) & EPHEMERAL
    assert all(m["flags"] & EPHEMERAL for m in messages)
    assert not [m for m in fake.channel_messages() if m.get("_token") == it.token]
    return "\n".join(m["content"] for m in messages)


async def admin(fake: FakeDiscord, user: FakeUser, action: str, **options: Any) -> str:
    """Run /imagine-admin and read its private answer."""
    return await answer(fake, await fake.slash(user, "imagine-admin", action=action, **options))


def actor(user: FakeUser) -> str:
    """How the policy table's audit names a Discord member."""
    return f"discord:{user.id}"


async def test_the_three_commands_are_registered_with_their_options_and_permissions(
    discord_fake: FakeDiscord, discord_bot: BotFactory
) -> None:
    _app, bot = await discord_bot()
    commands = {c["name"]: c for c in discord_fake.commands["global"]}
    options = {
        name: [(o["name"], o["type"], o.get("required", False)) for o in commands[name]["options"]]
        for name in ("imagine-usage", "imagine-history", "imagine-admin")
    }
    assert options == {
        "imagine-usage": [("user", 6, False), ("report", 5, False)],
        "imagine-history": [("job", 3, False)],
        "imagine-admin": [
            ("action", 3, True),
            ("scope", 3, False),
            ("target", 3, False),
            ("rule", 3, False),
            ("value", 3, False),
        ],
    }
    admin_options = {o["name"]: o for o in commands["imagine-admin"]["options"]}
    choices = {k: [c["value"] for c in o.get("choices", [])] for k, o in admin_options.items()}
    assert choices["action"] == ["show", "log", "set", "unset"]
    assert choices["scope"] == ["user", "tier", "channel", "team", "total"]
    assert "budget" in choices["rule"] and "previews" in choices["rule"]
    assert int(commands["imagine-admin"]["default_member_permissions"]) == MANAGE_GUILD
    assert commands["imagine-admin"]["contexts"] == [0]  # servers only
    for name in ("imagine-usage", "imagine-history"):
        assert commands[name]["default_member_permissions"] is None

    # With server ids set, they are registered in those servers like /imagine.
    await bot.close()
    await discord_bot(discord_guild_ids=discord_fake.guild_id)
    in_guild = {c["name"]: c for c in discord_fake.commands[discord_fake.guild_id]}
    assert {"imagine", "imagine-usage", "imagine-history", "imagine-admin"} <= set(in_guild)
    assert int(in_guild["imagine-admin"]["default_member_permissions"]) == MANAGE_GUILD


async def test_a_role_tier_limits_its_members_on_commands_and_buttons(
    discord_fake: FakeDiscord, discord_bot: BotFactory, openai_fake: FakeOpenAI
) -> None:
    app, _bot = await discord_bot()
    fake = discord_fake
    role = await fake.add_role("trial", fake.alice)  # while the bot is connected
    await app.store.set_policy(
        Entry("tier", f"discord:{role}", "limit", "1/day"), actor(fake.admin)
    )

    first = await fake.generate(fake.alice, "a paper boat")
    again = await fake.slash(fake.alice, prompt="a second paper boat")
    refusal = await fake.private_reply(again)
    assert refusal["content"].startswith("⚠️") and LIMIT_WORDS in refusal["content"]
    click = await fake.click(fake.alice, first["id"], f"imagine:regen:{job_of(first)}")
    assert LIMIT_WORDS in (await fake.private_reply(click))["content"]
    opened = await fake.click(fake.alice, first["id"], f"imagine:edit:{job_of(first)}")
    await fake.wait_until(lambda: opened.callback_type == 9)
    submitted = await fake.submit_modal(fake.alice, opened, {"prompt": "make it blue"})
    assert LIMIT_WORDS in (await fake.private_reply(submitted))["content"]
    reply = await fake.send_message(fake.alice, "make it green", reply_to=first["id"])
    await fake.wait_until(
        lambda: [m for m in fake.replies_to(reply["id"]) if LIMIT_WORDS in m["content"]]
    )

    # Bob has no such role: the tier's rule is not his.
    await fake.generate(fake.bob, "a paper plane")
    await fake.generate(fake.bob, "another paper plane")
    assert len(openai_fake.requests) == 3


async def test_a_member_without_manage_server_cannot_change_the_rules(
    discord_fake: FakeDiscord, discord_bot: BotFactory
) -> None:
    app, _bot = await discord_bot()
    text = await admin(
        discord_fake, discord_fake.bob, "set", scope="team", rule="budget", value="20/month"
    )
    assert text.startswith("⚠️ ") and "manage this server" in text
    assert await app.store.policy_entries() == []


async def test_an_admin_sets_the_server_budget_and_the_next_request_obeys_it(
    discord_fake: FakeDiscord, discord_bot: BotFactory, openai_fake: FakeOpenAI
) -> None:
    app, _bot = await discord_bot()
    fake = discord_fake
    done = await admin(fake, fake.admin, "set", scope="team", rule="budget", value="20/month")
    assert done.startswith("Done: ") and "20/month" in done
    [entry] = await app.store.policy_entries()
    assert (entry.scope, entry.target, entry.name) == ("team", f"discord:{fake.guild_id}", "budget")
    shown = await admin(fake, fake.admin, "show")
    assert "this server's budget: `" in shown
    log = await admin(fake, fake.admin, "log")
    assert f"<@{fake.admin.id}>" in log and "budget" in log

    await admin(fake, fake.admin, "set", scope="team", rule="budget", value="0.001/day")
    it = await fake.slash(fake.alice, prompt="a castle")
    refusal = (await fake.private_reply(it))["content"]
    assert "this server's budget" in refusal.lower()
    assert openai_fake.requests == []

    removed = await admin(fake, fake.admin, "unset", scope="team", rule="budget")
    assert removed.startswith("Removed: ")
    await fake.generate(fake.alice, "a castle")
    assert await app.store.policy_entries() == []


async def test_a_channel_size_applies_in_that_channel_only(
    discord_fake: FakeDiscord, discord_bot: BotFactory, openai_fake: FakeOpenAI
) -> None:
    await discord_bot()
    fake = discord_fake
    gallery = await fake.add_channel("gallery")
    done = await admin(
        fake,
        fake.admin,
        "set",
        scope="channel",
        target=f"<#{gallery}>",
        rule="size",
        value="1024x1024",
    )
    assert f"<#{gallery}>'s size" in done

    await fake.result_of(await fake.slash(fake.alice, prompt="a tall tower", in_channel=gallery))
    await fake.generate(fake.alice, "a tall tower")
    assert [r.json["size"] for r in openai_fake.requests] == ["1024x1024", "auto"]


async def test_previews_turned_off_in_a_channel(
    discord_fake: FakeDiscord, discord_bot: BotFactory, openai_fake: FakeOpenAI
) -> None:
    await discord_bot(imagine_partial_images=2)
    fake = discord_fake
    await fake.generate(fake.alice, "a fox")
    # No target: this channel, by name here.
    done = await admin(fake, fake.admin, "set", scope="channel", rule="previews", value="off")
    assert f"<#{fake.channel_id}>'s previews" in done
    await fake.generate(fake.alice, "a fox")
    streamed = [bool(r.json.get("stream")) for r in openai_fake.requests]
    assert streamed == [True, False]


async def test_bad_admin_input_is_explained_and_changes_nothing(
    discord_fake: FakeDiscord, discord_bot: BotFactory
) -> None:
    app, _bot = await discord_bot()
    fake = discord_fake
    nobody = "123456789012345678"
    cases = [
        ({"scope": "team", "rule": "limit", "value": "5/fortnight"}, "fortnight"),
        ({"scope": "team", "rule": "budget", "value": "-5/day"}, "-5"),
        (
            {"scope": "user", "target": f"<@{nobody}>", "rule": "limit", "value": "1/day"},
            "can't find a user",
        ),
        (
            {"scope": "tier", "target": f"<@&{nobody}>", "rule": "limit", "value": "1/day"},
            "can't find a role",
        ),
        (
            {"scope": "tier", "target": "@everyone", "rule": "limit", "value": "1/day"},
            "can't find a role",
        ),
        (
            {"scope": "channel", "target": "#nowhere", "rule": "size", "value": "1024x1024"},
            "can't find a channel",
        ),
    ]
    for options, words in cases:
        text = await admin(fake, fake.admin, "set", **options)
        assert text.startswith("⚠️ ") and words in text, (options, text)
        assert "Traceback" not in text
    # Discord itself said the member does not exist.
    [lookup] = [c for c in fake.calls_to("GET", f"/members/{nobody}")]
    assert lookup.status == 404
    assert await app.store.policy_entries() == []
    assert fake.problems == []


async def test_an_admin_names_users_by_mention_and_by_name(
    discord_fake: FakeDiscord, discord_bot: BotFactory
) -> None:
    app, _bot = await discord_bot()
    fake = discord_fake
    await admin(
        fake,
        fake.admin,
        "set",
        scope="user",
        target=f"<@!{fake.bob.id}>",
        rule="limit",
        value="3/day",
    )
    fake.alice.nick = "Ally"
    await admin(fake, fake.admin, "set", scope="user", target="ally", rule="limit", value="2/day")
    entries = {e.target: e.value for e in await app.store.policy_entries()}
    # A server's admins set user rules for their server only.
    here = f"@{fake.guild_id}"
    assert set(entries) == {f"discord:{fake.bob.id}{here}", f"discord:{fake.alice.id}{here}"}
    assert fake.calls_to("GET", f"/guilds/{fake.guild_id}/members/{fake.bob.id}")


async def test_usage_shows_what_is_left(discord_fake: FakeDiscord, discord_bot: BotFactory) -> None:
    app, _bot = await discord_bot()
    fake = discord_fake
    await app.store.set_policy(
        Entry("user", f"discord:{fake.alice.id}", "limit", "5/day"), actor(fake.admin)
    )
    await fake.generate(fake.alice, "a quiet harbour")
    text = await answer(fake, await fake.slash(fake.alice, "imagine-usage"))
    assert text.startswith("**Your usage**")
    assert "Today: 1 image" in text
    assert "What's left:" in text and "4 left" in text


async def test_the_server_report_and_other_peoples_usage_are_for_admins(
    discord_fake: FakeDiscord, discord_bot: BotFactory
) -> None:
    await discord_bot()
    fake = discord_fake
    await fake.generate(fake.alice, "a red kite")

    report = await answer(fake, await fake.slash(fake.admin, "imagine-usage", report=True))
    assert "Top users:" in report and f"1. <@{fake.alice.id}>: 1 image" in report
    assert "Channels:" in report and f"<#{fake.channel_id}>: 1 image" in report

    theirs = await answer(fake, await fake.slash(fake.admin, "imagine-usage", user=fake.alice))
    assert theirs.startswith(f"**Usage of <@{fake.alice.id}>**")

    refused = await answer(fake, await fake.slash(fake.bob, "imagine-usage", user=fake.alice))
    assert refused.startswith("⚠️ ") and "manage this server" in refused
    refused = await answer(fake, await fake.slash(fake.bob, "imagine-usage", report=True))
    assert refused.startswith("⚠️ ")


async def test_history_lists_jobs_with_links_and_shows_one_record(
    discord_fake: FakeDiscord, discord_bot: BotFactory
) -> None:
    await discord_bot()
    fake = discord_fake
    first = await fake.generate(fake.alice, "a snowy owl")
    await fake.generate(fake.alice, "a barn owl")

    text = await answer(fake, await fake.slash(fake.alice, "imagine-history"))
    assert text.startswith("**Your last 2 requests**")
    link = f"https://discord.com/channels/{fake.guild_id}/{fake.channel_id}/{first['id']}"
    assert f"[message]({link})" in text
    assert f"`{job_of(first)}`" in text

    record = await answer(fake, await fake.slash(fake.alice, "imagine-history", job=job_of(first)))
    assert record.startswith(f"**Job `{job_of(first)}`: succeeded**")
    assert "a snowy owl" in record and f"[Open the message]({link})" in record

    refused = await answer(fake, await fake.slash(fake.bob, "imagine-history", job=job_of(first)))
    assert refused.startswith("⚠️ ") and "someone else" in refused
    seen = await answer(fake, await fake.slash(fake.admin, "imagine-history", job=job_of(first)))
    assert seen.startswith("**Job ")


async def test_a_long_answer_comes_in_private_pieces_under_discords_limit(
    discord_fake: FakeDiscord, discord_bot: BotFactory
) -> None:
    app, _bot = await discord_bot()
    fake = discord_fake
    for i in range(40):
        user = f"discord:{10**17 + i}"
        await app.store.set_policy(Entry("user", user, "limit", "20/day,100/month"), "x")
    it = await fake.slash(fake.admin, "imagine-admin", action="show")
    text = await answer(fake, it, ending="see `log`.")
    pieces = fake.ephemeral_followups(it)
    assert len(text) > 2000 and len(pieces) >= 2
    assert all(len(p["content"]) <= 2000 for p in pieces)
    assert text.count("'s limit: `20/day,100/month`") == 40
    assert fake.problems == []


def test_split_message_cuts_at_line_ends_and_cuts_a_too_long_line() -> None:
    lines = ["a" * 900, "b" * 900, "c" * 900]
    assert split_message("\n".join(lines)) == ["a" * 900 + "\n" + "b" * 900, "c" * 900]
    assert split_message("x" * 4500) == ["x" * 2000, "x" * 2000, "x" * 500]
    assert split_message("short") == ["short"]
