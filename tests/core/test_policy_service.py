"""Spend control through the service against the fake OpenAI: shared budgets, channel defaults,
blocks, the per-user waiting cap, and changes that apply without a restart."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from bot import texts
from bot.app import App
from bot.commands import Edit, Generate, Overrides, Regenerate
from bot.errors import Blocked, BudgetExceeded, LimitExceeded, QueueFull
from bot.models import (
    JobRecord,
    PartialImage,
    Queued,
    Requester,
    Started,
)
from bot.policy import Entry, Scope, parse_entry
from bot.presenting import CantPost
from bot.store import Store
from tests.core.presenter_kit import PlainMarkup
from tests.core.service_kit import Recorder, Stepped
from tests.core.store_kit import raw_rows
from tests.fakes.app_fixtures import AppFactory
from tests.fakes.openai_checks import RecordedRequest
from tests.fakes.openai_server import FakeOpenAI

ALICE = Requester("discord", "111", "g1", "c1", "Alice")
ANNA = Requester("discord", "112", "g1", "c1", "Anna")
FAR = Requester("discord", "113", "g2", "c9", "Far away")
BOB = Requester("slack", "U222", "T1", "C1", "Bob")
BEA = Requester("slack", "U223", "T1", "C2", "Bea")
ADMIN = "cli:local"


async def set_rule(app: App, scope: Scope, target: str, name: str, value: str) -> None:
    await app.store.set_policy(parse_entry(scope, target, name, value), ADMIN)


async def generate(app: App, who: Requester, prompt: str = "a red fox", **flags: Any) -> Any:
    request = await app.service.prepare(Generate(who, prompt, Overrides(**flags)))
    return await app.service.run(request)


def generations(fake: FakeOpenAI) -> list[dict[str, Any]]:
    return [r.json for r in fake.requests if r.json is not None]


def job_rows(app: App) -> list[tuple[object, ...]]:
    return raw_rows(app.store.path, "SELECT user_key, charged_images, charged_cost FROM jobs")


# --- shared budgets and limits ----------------------------------------------------------------


async def test_a_spent_server_budget_refuses_another_member_in_the_servers_words(
    make_app: AppFactory,
) -> None:
    # A high-quality square reserves about $0.21: the second one doesn't fit in $0.25.
    app = await make_app(imagine_team_budget="0.25/day")
    await generate(app, ALICE, size="1024x1024", quality="high")
    with pytest.raises(BudgetExceeded) as refused:
        await generate(app, ANNA, size="1024x1024", quality="high")
    error = refused.value
    assert (error.scope, error.whose) == ("team", "this server's")
    assert "this server's daily budget of $0.25 is spent" in error.user_message.lower()
    assert "Your" not in error.user_message
    said = texts.refusal(error, PlainMarkup())
    assert f"It frees up <in {error.resets_at:.0f}>." in said
    assert "Your limit resets" not in said
    # Another server has its own budget; a cheap image still fits in this one.
    await generate(app, FAR, size="1024x1024", quality="high")
    await generate(app, ANNA, size="1024x1024", quality="low")


async def test_a_spent_workspace_budget_set_by_an_admin_is_the_workspaces(
    make_app: AppFactory,
) -> None:
    app = await make_app()
    await set_rule(app, "team", "slack:T1", "budget", "$0.25/day")
    await generate(app, BOB, size="1024x1024", quality="high")
    with pytest.raises(BudgetExceeded) as refused:
        await generate(app, BEA, size="1024x1024", quality="high")
    assert refused.value.whose == "this workspace's"
    assert "this workspace's daily budget of $0.25 is spent" in refused.value.user_message.lower()
    assert "It frees up" in texts.refusal(refused.value, PlainMarkup())


async def test_a_channel_limit_counts_everyone_in_the_channel(make_app: AppFactory) -> None:
    app = await make_app()
    await set_rule(app, "channel", "discord:c1", "limit", "2/day")
    await generate(app, ALICE)
    await generate(app, ANNA)
    with pytest.raises(LimitExceeded) as refused:
        await generate(app, ALICE)
    assert (refused.value.scope, refused.value.whose) == ("channel", "this channel's")
    assert "this channel's daily limit of 2 images is used up" in refused.value.user_message.lower()
    assert "It frees up" in texts.refusal(refused.value, PlainMarkup())
    elsewhere = Requester("discord", "111", "g1", "c2")
    await generate(app, elsewhere)


async def test_the_users_own_refusal_still_says_when_their_limit_resets(
    make_app: AppFactory,
) -> None:
    app = await make_app(imagine_user_limit="1/day")
    await generate(app, ALICE)
    with pytest.raises(LimitExceeded) as refused:
        await generate(app, ALICE)
    assert (refused.value.scope, refused.value.whose) == ("user", None)
    said = texts.refusal(refused.value, PlainMarkup())
    assert "Your limit resets" in said and "It frees up" not in said


async def test_a_tier_gives_its_members_their_own_limit(make_app: AppFactory) -> None:
    app = await make_app(imagine_user_limit="1/day")
    await set_rule(app, "tier", "discord:r-artist", "limit", "3/day")
    artist = Requester("discord", "111", "g1", "c1", groups=("r-artist",))
    for _ in range(3):
        await generate(app, artist)
    with pytest.raises(LimitExceeded) as refused:
        await generate(app, artist)
    assert refused.value.limit == 3
    await generate(app, ANNA)
    with pytest.raises(LimitExceeded):
        await generate(app, ANNA)


# --- channel defaults -------------------------------------------------------------------------


async def test_a_channels_size_and_quality_apply_to_a_fresh_request_but_the_users_flag_wins(
    make_app: AppFactory, openai_fake: FakeOpenAI
) -> None:
    app = await make_app()
    await set_rule(app, "channel", "discord:c1", "size", "1536x1024")
    await set_rule(app, "channel", "discord:c1", "quality", "low")
    await set_rule(app, "channel", "discord:c1", "format", "jpg")

    await generate(app, ALICE)
    await generate(app, ALICE, size="1024x1024")
    await generate(app, ALICE, quality="medium", output_format="webp")
    await generate(app, Requester("discord", "111", "g1", "c2"))

    sent = [(j["size"], j["quality"], j["output_format"]) for j in generations(openai_fake)]
    assert sent == [
        ("1536x1024", "low", "jpeg"),
        ("1024x1024", "low", "jpeg"),
        ("1536x1024", "medium", "webp"),
        ("auto", "auto", "png"),
    ]


async def test_previews_off_in_a_channel_asks_for_no_partial_images(
    make_app: AppFactory, openai_fake: FakeOpenAI
) -> None:
    app = await make_app(imagine_partial_images=2)
    await set_rule(app, "channel", "discord:c1", "previews", "no")

    def asked(recorded: RecordedRequest) -> tuple[object, object]:
        assert recorded.json is not None
        return recorded.json.get("stream"), recorded.json.get("partial_images", 0)

    elsewhere = Recorder()
    request = await app.service.prepare(Generate(Requester("discord", "111", "g1", "c2"), "x"))
    await app.service.run(request, elsewhere)
    assert asked(openai_fake.requests[-1]) == (True, 2)

    here = Recorder()
    request = await app.service.prepare(Generate(ALICE, "a red fox"))
    assert request.options.partial_images == 0
    await app.service.run(request, here)
    assert asked(openai_fake.requests[-1]) == (None, 0)
    assert not [e for e in here.events if isinstance(e, PartialImage)]


async def test_previews_on_in_a_channel_turns_them_on_where_the_bot_has_them_off(
    make_app: AppFactory, openai_fake: FakeOpenAI
) -> None:
    app = await make_app(imagine_partial_images=0)
    await set_rule(app, "channel", "discord:c1", "previews", "yes")
    heard = Recorder()
    request = await app.service.prepare(Generate(ALICE, "a red fox"))
    await app.service.run(request, heard)
    assert openai_fake.requests[-1].json is not None
    assert openai_fake.requests[-1].json.get("partial_images", 0) > 0
    assert [e for e in heard.events if isinstance(e, PartialImage)]


async def test_regenerate_in_a_channel_takes_its_model_and_moderation_but_keeps_the_look(
    make_app: AppFactory, openai_fake: FakeOpenAI
) -> None:
    app = await make_app()
    first = await generate(app, ALICE, size="1024x1024", quality="low")
    await set_rule(app, "channel", "discord:c2", "model", "gpt-image-1")
    await set_rule(app, "channel", "discord:c2", "moderation", "low")
    # Size and quality are the job's look: a channel's defaults don't change a regenerate.
    await set_rule(app, "channel", "discord:c2", "size", "1536x1024")
    await set_rule(app, "channel", "discord:c2", "quality", "high")

    there = Requester("discord", "112", "g1", "c2")
    again = await app.service.prepare(Regenerate(there, first.job_id))
    options = again.options
    assert (options.model, options.moderation) == ("gpt-image-1", "low")
    assert (options.size, options.quality) == ("1024x1024", "low")
    await app.service.run(again)
    sent = generations(openai_fake)[-1]
    assert (sent["model"], sent["moderation"]) == ("gpt-image-1", "low")
    assert (sent["size"], sent["quality"]) == ("1024x1024", "low")

    # The same job regenerated where nothing is set keeps its own model and moderation.
    here = await app.service.prepare(Regenerate(ALICE, first.job_id))
    assert (here.options.model, here.options.moderation) == ("gpt-image-2", "auto")


async def test_an_edit_of_a_job_in_a_channel_takes_its_model_but_keeps_the_look(
    make_app: AppFactory, openai_fake: FakeOpenAI
) -> None:
    app = await make_app()
    first = await generate(app, ALICE, size="1024x1024", quality="low")
    await set_rule(app, "channel", "discord:c2", "model", "gpt-image-1")
    await set_rule(app, "channel", "discord:c2", "size", "1536x1024")
    there = Requester("discord", "112", "g1", "c2")
    edit = await app.service.prepare(Edit(there, "make it night", job_id=first.job_id))
    assert (edit.options.model, edit.options.size, edit.options.quality) == (
        "gpt-image-1",
        "1024x1024",
        "low",
    )
    await app.service.run(edit)
    sent = openai_fake.requests[-1]
    assert sent.path == "/v1/images/edits"
    assert (sent.form["model"], sent.form["size"]) == ("gpt-image-1", "1024x1024")


# --- blocked ----------------------------------------------------------------------------------


async def test_a_blocked_user_is_told_plainly_and_no_job_is_written(
    make_app: AppFactory, openai_fake: FakeOpenAI
) -> None:
    app = await make_app()
    await set_rule(app, "user", "discord:111", "blocked", "yes")
    with pytest.raises(Blocked) as refused:
        await generate(app, ALICE)
    assert refused.value.scope == "user"
    words = refused.value.user_message
    assert words == (
        "An admin has turned image making off for you. Ask an admin of this server about it."
    )
    assert texts.refusal(refused.value, PlainMarkup()) == words
    assert job_rows(app) == []
    assert openai_fake.requests == []
    await generate(app, ANNA)
    assert [row[0] for row in job_rows(app)] == ["discord:112"]


async def test_a_closed_channel_and_a_blocked_workspace_say_where(
    make_app: AppFactory, openai_fake: FakeOpenAI
) -> None:
    app = await make_app(imagine_admin_users=["discord:111"])
    await set_rule(app, "channel", "discord:c1", "allowed", "no")
    with pytest.raises(Blocked) as channel:
        await generate(app, ANNA)
    assert channel.value.scope == "channel"
    assert "in this channel" in channel.value.user_message
    assert "another channel" in channel.value.user_message
    # An admin may still make images in a closed channel.
    await generate(app, ALICE)

    await set_rule(app, "team", "slack:T1", "blocked", "yes")
    with pytest.raises(Blocked) as team:
        await generate(app, BOB)
    assert team.value.scope == "team"
    assert "in this workspace" in team.value.user_message
    assert [row[0] for row in job_rows(app)] == ["discord:111"]
    assert len(openai_fake.requests) == 1


async def test_a_member_whose_every_role_is_blocked_is_told_about_their_role(
    make_app: AppFactory,
) -> None:
    app = await make_app()
    await set_rule(app, "tier", "discord:r-guest", "blocked", "yes")
    guest = Requester("discord", "111", "g1", "c1", groups=("r-guest",))
    with pytest.raises(Blocked) as refused:
        await generate(app, guest)
    assert refused.value.scope == "tier"
    assert "your role or group" in refused.value.user_message
    assert job_rows(app) == []


async def test_admins_count_against_the_servers_budget(make_app: AppFactory) -> None:
    app = await make_app(imagine_admin_users=["discord:111"], imagine_team_budget="0.25/day")
    await set_rule(app, "user", "discord:111", "blocked", "yes")
    await generate(app, ALICE, size="1024x1024", quality="high")
    with pytest.raises(BudgetExceeded) as refused:
        await generate(app, ALICE, size="1024x1024", quality="high")
    assert refused.value.scope == "team"


# --- the per-user waiting cap -----------------------------------------------------------------


async def test_a_user_with_a_full_line_is_refused_and_charged_nothing_while_others_get_in(
    make_app: AppFactory,
) -> None:
    app = await make_app(imagine_max_concurrency=1, imagine_user_queue=2)
    provider = Stepped(app.service.provider)
    app.service.provider = provider
    service = app.service

    async def ask(who: Requester, prompt: str) -> tuple[asyncio.Task[Any], Recorder]:
        heard = Recorder()
        request = await service.prepare(Generate(who, prompt))
        task = asyncio.create_task(service.run(request, heard))
        await heard.heard(Queued)
        return task, heard

    running, _ = await ask(ALICE, "one")
    await provider.calls(1)
    second, second_heard = await ask(ALICE, "two")
    third, _ = await ask(ALICE, "three")
    assert len(job_rows(app)) == 3

    with pytest.raises(QueueFull) as refused:
        await service.run(await service.prepare(Generate(ALICE, "four")))
    assert refused.value.waiting == 2
    assert "2 requests waiting" in refused.value.user_message
    assert "Nothing was charged" in refused.value.user_message
    assert len(job_rows(app)) == 3

    # Someone else's line is their own.
    other, _ = await ask(ANNA, "anna")
    assert len(job_rows(app)) == 4

    # The first ends; the fair queue starts Anna's (she has had no turn yet), then Alice's second.
    provider.gates[0].set()
    await running
    await provider.calls(2)
    assert provider.prompts[1] == "anna"
    with pytest.raises(QueueFull):
        await service.run(await service.prepare(Generate(ALICE, "still four")))
    provider.gates[1].set()
    await other
    await second_heard.heard(Started)
    assert provider.prompts[2] == "two"

    # One of hers started, so there is room in her line again.
    fourth, _ = await ask(ALICE, "four again")
    for index in range(2, 5):
        await provider.calls(index + 1)
        provider.gates[index].set()
    await asyncio.gather(second, third, fourth)
    assert provider.prompts == ["one", "anna", "two", "three", "four again"]
    assert len(job_rows(app)) == 5


async def test_a_refused_request_leaves_its_place_in_line(make_app: AppFactory) -> None:
    app = await make_app(imagine_user_queue=1, imagine_user_limit="1/day")
    await generate(app, ALICE)
    for _ in range(3):
        with pytest.raises(LimitExceeded):
            await generate(app, ALICE)
    await set_rule(app, "user", "discord:111", "limit", "unlimited")
    await generate(app, ALICE)  # not QueueFull: the refusals did not stay in line


# --- changes apply at once --------------------------------------------------------------------


async def test_a_policy_change_applies_to_the_next_request_without_a_restart(
    make_app: AppFactory, openai_fake: FakeOpenAI
) -> None:
    app = await make_app()
    await generate(app, ALICE)
    await set_rule(app, "user", "discord:111", "limit", "1/day")
    with pytest.raises(LimitExceeded) as refused:
        await generate(app, ALICE)
    assert refused.value.limit == 1
    await app.store.unset_policy("user", "discord:111", "limit", ADMIN)
    await generate(app, ALICE)

    # A change made by another process on the same file counts as well.
    cli = await Store.open(Path(app.store.path))
    try:
        await cli.set_policy(Entry("channel", "discord:c1", "quality", "low"), ADMIN)
        await cli.set_policy(parse_entry("user", "discord:111", "blocked", "yes"), ADMIN)
    finally:
        await cli.close()
    await asyncio.sleep(app.service.policy.recheck_s)  # another process: seen within this
    with pytest.raises(Blocked):
        await generate(app, ALICE)
    await generate(app, ANNA)
    assert generations(openai_fake)[-1]["quality"] == "low"


async def test_a_job_ended_before_it_queues_gives_back_its_place_in_line(
    make_app: AppFactory, openai_fake: FakeOpenAI
) -> None:
    app = await make_app(imagine_user_queue=1)

    async def cant_post(job: JobRecord, position: int) -> None:
        raise CantPost("missing access")

    request = await app.service.prepare(Generate(ALICE, "a red fox"))
    with pytest.raises(CantPost):
        await app.service.run(request, on_admitted=cant_post)
    assert openai_fake.requests == []
    await generate(app, ALICE)  # not QueueFull: the ended job gave its place back


async def test_requests_arriving_together_count_each_other_for_the_cap_and_their_places(
    make_app: AppFactory,
) -> None:
    app = await make_app(imagine_max_concurrency=1, imagine_user_queue=2)
    provider = Stepped(app.service.provider)
    app.service.provider = provider
    service = app.service
    requests = [await service.prepare(Generate(ALICE, f"picture {i}")) for i in range(4)]
    places: dict[str, int] = {}

    async def admitted(job: JobRecord, position: int) -> None:
        places[job.prompt] = position

    # All four at once, with the slot free: one starts, two wait, the fourth is refused.
    tasks = [asyncio.create_task(service.run(r, on_admitted=admitted)) for r in requests]
    await provider.calls(1)
    done, _ = await asyncio.wait(tasks, timeout=0.5, return_when=asyncio.FIRST_COMPLETED)
    refused = [t for t in done if isinstance(t.exception(), QueueFull)]
    assert len(refused) == 1
    assert len(job_rows(app)) == 3
    # Each was told its own place, counting the ones that came with it.
    assert sorted(places.values()) == [0, 1, 2]

    for index in range(3):
        await provider.calls(index + 1)
        provider.gates[index].set()
    await asyncio.gather(*(t for t in tasks if t not in refused))
    assert len(provider.prompts) == 3
