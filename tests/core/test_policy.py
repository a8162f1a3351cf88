"""Spend control rules: who gets which rules at which scope, reading a change, the policy table."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.config import Settings, WindowRule, parse_rules
from bot.errors import InvalidRequest
from bot.models import Requester
from bot.policy import (
    Counted,
    Defaults,
    Entry,
    Policy,
    Rules,
    Scope,
    Standing,
    generosity,
    parse_entry,
    parse_scope,
)
from bot.spending import PolicyBook
from bot.store import Store
from tests.core.store_kit import T0, OpenStore

ALICE = Requester("discord", "111", "g1", "c1", "Alice", groups=("r-artist", "r-patron"))
BOB = Requester("discord", "222", "g1", "c1", "Bob")
CLI = Requester("cli", "local")

DEFAULTS = Defaults(
    user=Rules(parse_rules("2/day", whole=True), parse_rules("1/day", whole=False)),
    channel=Rules(parse_rules("50/day", whole=True)),
    team=Rules(parse_rules("100/day", whole=True)),
    total=Rules((), parse_rules("30/month", whole=False)),
)


def entry(scope: Scope, target: str, name: str, value: str) -> Entry:
    return parse_entry(scope, target, name, value)


def policy(*entries: Entry, defaults: Defaults = DEFAULTS) -> Policy:
    return Policy(defaults, entries)


def counted(standing: Standing, scope: str) -> Counted:
    (found,) = [c for c in standing.counted if c.scope == scope]
    return found


def texts(rules: Rules) -> tuple[list[str], list[str]]:
    """Each kind as ``amount/window`` strings, to compare rules at a glance."""

    def one(rule_list: tuple[object, ...]) -> list[str]:
        return [f"{r.amount:g}/{r.label}" for r in rule_list]  # type: ignore[attr-defined]

    return one(rules.limits), one(rules.budgets)


def scopes(standing: Standing) -> list[str]:
    return [c.scope for c in standing.counted]


# --- who gets which rules ---------------------------------------------------------------------


def test_a_rule_set_on_the_user_beats_every_tier() -> None:
    rules = policy(
        entry("tier", "discord:r-artist", "limit", "40/day"),
        entry("tier", "discord:r-artist", "budget", "9/day"),
        entry("user", "discord:111", "limit", "3/day"),
        entry("user", "discord:111", "budget", "0.5/day"),
    )
    mine = counted(rules.standing(ALICE), "user")
    assert texts(mine.rules) == (["3/day"], ["0.5/day"])
    assert mine.source == "user"


def test_a_user_rule_of_one_kind_leaves_the_other_kind_to_the_tier() -> None:
    rules = policy(
        entry("tier", "discord:r-artist", "limit", "40/day"),
        entry("tier", "discord:r-artist", "budget", "9/day"),
        entry("user", "discord:111", "limit", "3/day"),
    )
    assert texts(counted(rules.standing(ALICE), "user").rules) == (["3/day"], ["9/day"])


def test_a_member_of_several_tiers_gets_the_most_generous_of_each_kind_over_a_month() -> None:
    # 10/day is 300 a month: more than 200/month, though 200 is the bigger number.
    rules = policy(
        entry("tier", "discord:r-artist", "limit", "10/day"),
        entry("tier", "discord:r-artist", "budget", "1/month"),
        entry("tier", "discord:r-patron", "limit", "200/month"),
        entry("tier", "discord:r-patron", "budget", "5/day"),
    )
    mine = counted(rules.standing(ALICE), "user")
    assert texts(mine.rules) == (["10/day"], ["5/day"])
    assert mine.source == "tier"
    # The order of the groups doesn't matter.
    swapped = Requester("discord", "111", "g1", "c1", groups=("r-patron", "r-artist"))
    assert texts(counted(rules.standing(swapped), "user").rules) == (["10/day"], ["5/day"])


def test_the_tightest_rule_of_a_tier_decides_how_generous_it_is() -> None:
    # r-artist's 100/day is capped at 50 a month; r-patron's 60/month allows more.
    rules = policy(
        entry("tier", "discord:r-artist", "limit", "100/day,50/month"),
        entry("tier", "discord:r-patron", "limit", "60/month"),
    )
    assert texts(counted(rules.standing(ALICE), "user").rules)[0] == ["60/month"]
    assert generosity(parse_rules("100/day,50/month", whole=True)) == 50
    assert generosity(parse_rules("10/day", whole=True)) == 300
    assert generosity(()) == float("inf")


def test_an_unlimited_tier_is_the_most_generous() -> None:
    rules = policy(
        entry("tier", "discord:r-artist", "limit", "1000/day"),
        entry("tier", "discord:r-patron", "limit", "unlimited"),
    )
    assert counted(rules.standing(ALICE), "user").rules.limits == ()


def test_a_tier_replaces_the_defaults_only_for_its_members() -> None:
    rules = policy(entry("tier", "discord:r-artist", "limit", "25/day"))
    # A member: the tier's limit, and the default budget the tier leaves alone.
    assert texts(counted(rules.standing(ALICE), "user").rules) == (["25/day"], ["1/day"])
    # Not a member: the defaults.
    assert texts(counted(rules.standing(BOB), "user").rules) == (["2/day"], ["1/day"])
    assert counted(rules.standing(BOB), "user").source == "default"
    # The same group id on the other platform is another tier.
    slack = Requester("slack", "U1", "T1", "C1", groups=("r-artist",))
    assert texts(counted(rules.standing(slack), "user").rules) == (["2/day"], ["1/day"])


def test_shared_scopes_are_counted_with_their_keys() -> None:
    rules = policy(entry("channel", "discord:c1", "budget", "3/day"))
    standing = rules.standing(BOB)
    assert scopes(standing) == ["user", "channel", "team", "total"]
    channel = counted(standing, "channel")
    assert (channel.key, channel.source) == ("discord:c1", "channel")
    assert texts(channel.rules) == (["50/day"], ["3/day"])
    assert counted(standing, "team").key == "discord:g1"
    assert counted(standing, "total").key == ""


# --- blocked ----------------------------------------------------------------------------------


def test_a_blocked_user_is_blocked_at_the_user_scope() -> None:
    standing = policy(entry("user", "discord:111", "blocked", "yes")).standing(ALICE)
    assert standing.blocked == "user"
    assert policy(entry("user", "discord:111", "blocked", "yes")).standing(BOB).blocked is None


def test_a_member_whose_every_tier_is_blocked_is_blocked_at_the_tier_scope() -> None:
    both = policy(
        entry("tier", "discord:r-artist", "blocked", "yes"),
        entry("tier", "discord:r-patron", "blocked", "yes"),
    )
    assert both.standing(ALICE).blocked == "tier"
    # One open tier is enough, and its rules are the ones that count.
    one = policy(
        entry("tier", "discord:r-artist", "blocked", "yes"),
        entry("tier", "discord:r-patron", "limit", "7/day"),
    )
    standing = one.standing(ALICE)
    assert standing.blocked is None
    assert texts(counted(standing, "user").rules)[0] == ["7/day"]
    # A rule set on the user lets them in even when their tiers are blocked.
    let_in = policy(
        entry("tier", "discord:r-artist", "blocked", "yes"),
        entry("tier", "discord:r-patron", "blocked", "yes"),
        entry("user", "discord:111", "limit", "1/day"),
    )
    assert let_in.standing(ALICE).blocked is None


def test_a_channel_that_is_not_allowed_blocks_at_the_channel_scope() -> None:
    closed = policy(entry("channel", "discord:c1", "allowed", "no"))
    assert closed.standing(BOB).blocked == "channel"
    elsewhere = Requester("discord", "222", "g1", "c2")
    assert closed.standing(elsewhere).blocked is None
    # "blocked yes" on a channel is read as "allowed no".
    assert entry("channel", "discord:c1", "blocked", "yes") == Entry(
        "channel", "discord:c1", "allowed", "no"
    )


def test_a_blocked_team_blocks_at_the_team_scope() -> None:
    standing = policy(entry("team", "discord:g1", "blocked", "yes")).standing(BOB)
    assert standing.blocked == "team"
    other = Requester("discord", "222", "g2", "c9")
    assert policy(entry("team", "discord:g1", "blocked", "yes")).standing(other).blocked is None


# --- admins -----------------------------------------------------------------------------------


def test_admins_skip_user_tier_and_channel_rules_even_a_closed_channel() -> None:
    rules = policy(
        entry("user", "discord:111", "blocked", "yes"),
        entry("tier", "discord:r-artist", "blocked", "yes"),
        entry("tier", "discord:r-patron", "blocked", "yes"),
        entry("channel", "discord:c1", "allowed", "no"),
        entry("channel", "discord:c1", "limit", "1/day"),
    )
    assert rules.standing(ALICE).blocked == "user"
    standing = rules.standing(ALICE, admin=True)
    assert standing.blocked is None
    assert scopes(standing) == ["team", "total"]


def test_admins_still_count_against_the_team_and_the_total_and_a_blocked_team() -> None:
    rules = policy(
        entry("team", "discord:g1", "limit", "4/day"),
        entry("total", "", "budget", "12/month"),
    )
    standing = rules.standing(ALICE, admin=True)
    assert texts(counted(standing, "team").rules)[0] == ["4/day"]
    assert texts(counted(standing, "total").rules)[1] == ["12/month"]
    blocked = policy(entry("team", "discord:g1", "blocked", "yes"))
    assert blocked.standing(ALICE, admin=True).blocked == "team"


# --- where there is no team or channel --------------------------------------------------------


def test_the_cli_has_no_team_or_channel_scope() -> None:
    standing = policy(
        entry("team", "cli:", "blocked", "yes"),
        entry("channel", "cli:", "allowed", "no"),
    ).standing(CLI)
    assert standing.blocked is None
    assert scopes(standing) == ["user", "total"]
    dm = Requester("discord", "111", "", "dm1")
    assert scopes(policy().standing(dm)) == ["user", "channel", "total"]
    no_channel = Requester("slack", "U1", "T1", "")
    assert scopes(policy().standing(no_channel)) == ["user", "team", "total"]


def test_defaults_come_from_the_settings(tmp_path: Path) -> None:
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        openai_api_key="sk-test",  # type: ignore[arg-type]
        imagine_data_dir=tmp_path,
        imagine_user_limit="3/day",
        imagine_channel_budget="2/day",
        imagine_team_limit="40/week",
        imagine_total_budget="100/month",
    )
    defaults = Defaults.from_settings(settings)
    assert texts(defaults.user) == (["3/day"], [])
    assert texts(defaults.channel) == ([], ["2/day"])
    assert texts(defaults.team) == (["40/week"], [])
    assert texts(defaults.total) == ([], ["100/month"])


# --- reading a change -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("scope", "name", "value", "kept"),
    [
        ("user", "budget", "$20/month", "$20/month"),
        ("user", "budget", "20/month", "$20/month"),
        ("user", "budget", "0.5/day", "$0.5/day"),
        ("user", "limit", "5/day,100/month", "5/day,100/month"),
        ("user", "limits", "5 per day", "5/day"),
        ("tier", "limit", "unlimited", "unlimited"),
        ("team", "budget", "Unlimited", "unlimited"),
        ("user", "blocked", "Yes", "yes"),
        ("channel", "format", "jpg", "jpeg"),
        ("channel", "size", "1024 x 1024", "1024x1024"),
        ("channel", "quality", "HIGH", "high"),
        ("channel", "previews", "off", "no"),
        ("channel", "model", "GPT-IMAGE-1", "gpt-image-1"),
    ],
)
def test_a_change_is_kept_written_one_way(scope: Scope, name: str, value: str, kept: str) -> None:
    assert parse_entry(scope, "discord:1", name, value).value == kept


def test_scopes_are_read_by_their_everyday_names() -> None:
    assert parse_scope("Users") == "user"
    assert parse_scope("server") == "team"
    assert parse_scope("workspace") == "team"
    assert parse_scope("role") == "tier"
    assert parse_scope("group") == "tier"
    with pytest.raises(InvalidRequest) as refused:
        parse_scope("galaxy")
    words = refused.value.user_message
    assert "galaxy" in words
    assert all(s in words for s in ("user", "tier", "channel", "team", "total"))


@pytest.mark.parametrize(
    ("scope", "name", "value", "words"),
    [
        ("user", "colour", "red", ("colour", "limit", "budget", "blocked")),
        ("team", "size", "1024x1024", ("team", "size", "limit", "budget", "blocked")),
        ("total", "blocked", "yes", ("total", "blocked", "limit or budget")),
        ("user", "quality", "high", ("user", "quality")),
        ("user", "limit", "5/fortnight", ("fortnight", "day", "month")),
        ("user", "budget", "-5/day", ("negative", "-5/day", "unlimited")),
        ("user", "limit", "-5/day", ("negative", "unlimited")),
        ("user", "budget", "$-5/day", ("negative",)),
        ("user", "limit", "2.5/day", ("2.5", "whole number")),
        ("user", "limit", "0/day", ("above zero",)),
        ("user", "limit", "lots", ("lots", "20/hour")),
        ("user", "limit", "  ", ("value", "limit")),
        ("channel", "size", "1000x1000", ("divisible by 16", "992x992")),
        ("channel", "size", "big", ("WIDTHxHEIGHT", "1024x1024")),
        ("channel", "quality", "ultra", ("ultra", "low", "medium", "high")),
        ("channel", "format", "gif", ("gif", "png", "jpeg", "webp")),
        ("user", "blocked", "maybe", ("yes or no", "maybe")),
        ("channel", "allowed", "sometimes", ("yes or no", "sometimes")),
        ("channel", "previews", "2", ("yes or no",)),
        ("channel", "model", "gpt image", ("model name", "gpt-image-2")),
    ],
)
def test_a_bad_change_is_refused_in_words_that_say_how_to_fix_it(
    scope: Scope, name: str, value: str, words: tuple[str, ...]
) -> None:
    with pytest.raises(InvalidRequest) as refused:
        parse_entry(scope, "discord:1", name, value)
    message = refused.value.user_message
    for word in words:
        assert word in message, message
    assert "Traceback" not in message and "ValueError" not in message


def test_an_unknown_window_is_refused_in_a_whole_sentence() -> None:
    with pytest.raises(InvalidRequest) as refused:
        parse_entry("user", "discord:1", "limit", "5/fortnight")
    assert not refused.value.user_message.startswith("The limit unknown")


def test_a_rule_and_its_scope_are_named_in_the_refusal_param() -> None:
    with pytest.raises(InvalidRequest) as rule:
        parse_entry("team", "discord:g1", "size", "1024x1024")
    assert rule.value.param == "rule"
    with pytest.raises(InvalidRequest) as value:
        parse_entry("user", "discord:1", "limit", "2.5/day")
    assert value.value.param == "value"


# --- the policy table -------------------------------------------------------------------------


async def test_set_and_unset_return_the_old_value_and_are_audited(store: Store) -> None:
    assert await store.policy_version() == 0
    first = entry("user", "discord:111", "limit", "5/day")
    assert await store.set_policy(first, "discord:900", now=T0) is None
    v1 = await store.policy_version()
    assert v1 > 0
    again = entry("user", "discord:111", "limit", "8/day")
    assert await store.set_policy(again, "slack:U9", now=T0 + 1) == "5/day"
    v2 = await store.policy_version()
    assert v2 > v1
    assert await store.policy_entries() == [again]

    old = await store.unset_policy("user", "discord:111", "limit", "discord:900", T0 + 2)
    assert old == "8/day"
    v3 = await store.policy_version()
    assert v3 > v2
    assert await store.policy_entries() == []
    # Unsetting what isn't set changes nothing and records nothing.
    assert await store.unset_policy("user", "discord:111", "limit", "discord:900") is None
    assert await store.policy_version() == v3

    changes = await store.policy_changes()
    assert [(c.actor, c.old_value, c.new_value) for c in changes] == [
        ("discord:900", "8/day", None),
        ("slack:U9", "5/day", "8/day"),
        ("discord:900", None, "5/day"),
    ]
    assert [c.at for c in changes] == [T0 + 2, T0 + 1, T0]
    assert {(c.scope, c.target, c.name) for c in changes} == {("user", "discord:111", "limit")}
    assert [c.id for c in await store.policy_changes(limit=1)] == [changes[0].id]


async def test_entries_of_every_scope_are_kept_side_by_side(store: Store) -> None:
    kept = [
        entry("channel", "discord:c1", "size", "1024x1024"),
        entry("channel", "discord:c1", "previews", "no"),
        entry("team", "slack:T1", "budget", "$10/day"),
        entry("total", "", "limit", "1000/month"),
        entry("tier", "discord:r-artist", "limit", "20/day"),
    ]
    for one in kept:
        await store.set_policy(one, "cli:local", now=T0)
    assert sorted(await store.policy_entries(), key=repr) == sorted(kept, key=repr)


def settings_for(tmp_path: Path, **values: object) -> Settings:
    return Settings(
        _env_file=None,  # type: ignore[call-arg]
        openai_api_key="sk-test",  # type: ignore[arg-type]
        imagine_data_dir=tmp_path,
        **values,  # type: ignore[arg-type]
    )


async def test_a_change_made_by_another_process_is_seen_within_the_recheck_interval(
    open_store: OpenStore, db_path: Path, tmp_path: Path
) -> None:
    running = await open_store(db_path)
    moment = [0.0]
    settings = settings_for(tmp_path, imagine_user_limit="2/day")
    book = PolicyBook(settings, running, clock=lambda: moment[0])
    assert texts(counted(await book.standing(BOB), "user").rules)[0] == ["2/day"]

    other = await open_store(db_path)  # the CLI, say, on the same file
    await other.set_policy(entry("user", "discord:222", "limit", "9/day"), "cli:local")
    moment[0] += book.recheck_s / 2
    assert texts(counted(await book.standing(BOB), "user").rules)[0] == ["2/day"]
    moment[0] += book.recheck_s / 2
    assert texts(counted(await book.standing(BOB), "user").rules)[0] == ["9/day"]

    await other.set_policy(entry("channel", "discord:c1", "allowed", "no"), "cli:local")
    moment[0] += book.recheck_s
    assert (await book.standing(BOB)).blocked == "channel"
    assert (await book.current()).channel_defaults(BOB).allowed is False

    await other.unset_policy("user", "discord:222", "limit", "cli:local")
    await other.unset_policy("channel", "discord:c1", "allowed", "cli:local")
    moment[0] += book.recheck_s
    standing = await book.standing(BOB)
    assert standing.blocked is None
    assert texts(counted(standing, "user").rules)[0] == ["2/day"]


async def test_a_change_made_through_the_same_store_is_seen_by_the_very_next_call(
    store: Store, tmp_path: Path
) -> None:
    book = PolicyBook(settings_for(tmp_path), store, clock=lambda: 0.0)  # time stands still
    assert (await book.standing(BOB)).blocked is None
    await store.set_policy(entry("user", "discord:222", "blocked", "yes"), "discord:1")
    assert (await book.standing(BOB)).blocked == "user"
    await store.unset_policy("user", "discord:222", "blocked", "discord:1")
    assert (await book.standing(BOB)).blocked is None


async def test_admins_named_in_the_settings_are_exempt_through_the_book(
    store: Store, tmp_path: Path
) -> None:
    book = PolicyBook(settings_for(tmp_path, imagine_admin_users=["discord:111"]), store)
    await store.set_policy(entry("user", "discord:111", "blocked", "yes"), "cli:local")
    await store.set_policy(entry("user", "discord:222", "blocked", "yes"), "cli:local")
    assert (await book.standing(ALICE)).blocked is None
    assert (await book.standing(BOB)).blocked == "user"


def test_a_user_rule_set_in_one_team_holds_there_only_and_the_operators_everywhere() -> None:
    policy = Policy(
        Defaults(user=Rules(limits=(WindowRule(5, 86_400, "day"),))),
        [
            Entry("user", "discord:222@g1", "blocked", "yes"),
            Entry("user", "discord:222", "limit", "9/day"),
        ],
    )
    in_g1 = Requester("discord", "222", "g1", "c1")
    in_g2 = Requester("discord", "222", "g2", "c9")
    assert policy.standing(in_g1).blocked == "user"
    standing = policy.standing(in_g2)
    assert standing.blocked is None
    [user] = [c for c in standing.counted if c.scope == "user"]
    assert [r.amount for r in user.rules.limits] == [9]
