"""Metrics of the bot's Discord calls: errors it caught and rate-limit waits, read off /metrics."""

from __future__ import annotations

import asyncio

import pytest

from adapters.discord.api_calls import MeteredPacer, route_name
from bot import metrics
from bot.pacing import Pacer
from tests.discord.test_recovery_check import died_with_a_job
from tests.fakes.discord_server import BotFactory, Call, FakeDiscord


def sample(name: str, **labels: str) -> float:
    return metrics.REGISTRY.get_sample_value(name, labels) or 0.0


def sample_sum(name: str) -> float:
    """The total of a counter over all its labels."""
    return sum(
        s.value for family in metrics.REGISTRY.collect() for s in family.samples if s.name == name
    )


def waits(method: str) -> float:
    return sample("imagine_rate_limit_waits_total", platform="discord", method=method)


def errors(method: str, error: str) -> float:
    return sample(
        "imagine_platform_api_errors_total", platform="discord", method=method, error=error
    )


def waited_s() -> float:
    return sample("imagine_rate_limit_wait_seconds_total", platform="discord")


async def test_each_429_waited_out_is_counted_under_its_route(
    discord_fake: FakeDiscord, discord_bot: BotFactory
) -> None:
    await discord_bot()

    def final_edit(call: Call) -> bool:
        return call.method == "PATCH" and bool((call.json or {}).get("embeds"))

    for _ in range(7):
        discord_fake.rate_limit_next(final_edit, retry_after=0.01)
    before = (
        waits("edit_webhook_message"),
        errors("edit_webhook_message", "HTTPException:429"),
        waited_s(),
    )
    it = await discord_fake.slash(discord_fake.alice, prompt="a teapot")
    await discord_fake.result_of(it)

    # discord.py waits out 5 of them and gives up; the bot waits once more (the Retry-After
    # header: 1 s) and tries again, and discord.py waits out the other 2.
    assert waits("edit_webhook_message") - before[0] == 8
    assert errors("edit_webhook_message", "HTTPException:429") - before[1] == 1
    assert waited_s() - before[2] == pytest.approx(7 * 0.01 + 1.0)


async def test_a_500_discord_py_retries_is_neither_an_error_nor_a_rate_limit(
    discord_fake: FakeDiscord, discord_bot: BotFactory
) -> None:
    await discord_bot()

    def final_edit(call: Call) -> bool:
        return call.method == "PATCH" and bool((call.json or {}).get("embeds"))

    discord_fake.reject_next(final_edit, 500, 0, "500: Internal Server Error")
    before = waits("edit_webhook_message"), waited_s()
    failures = sample_sum("imagine_platform_api_errors_total")
    it = await discord_fake.slash(discord_fake.alice, prompt="a teapot")
    await discord_fake.result_of(it)

    assert [c.status for c in discord_fake.calls if final_edit(c)] == [500, 200]
    assert (waits("edit_webhook_message"), waited_s()) == before
    assert sample_sum("imagine_platform_api_errors_total") == failures


async def test_a_refused_edit_the_bot_works_around_is_counted(
    discord_fake: FakeDiscord, discord_bot: BotFactory
) -> None:
    await discord_bot()

    def original_edit(call: Call) -> bool:
        return call.method == "PATCH" and call.path.endswith("/messages/@original")

    discord_fake.reject_next(original_edit, 404, 10008, "Unknown Message")
    before = errors("edit_webhook_message", "NotFound:404")
    it = await discord_fake.slash(discord_fake.alice, prompt="a teapot")
    # Its response is gone: the result is posted in the channel instead, naming the user.
    posted = await discord_fake.wait_until(
        lambda: [m for m in discord_fake.channel_messages() if m["embeds"]]
    )
    assert posted[0]["content"].startswith(f"<@{discord_fake.alice.id}>")
    assert it.original_id is not None
    assert errors("edit_webhook_message", "NotFound:404") - before == 1


async def test_a_notice_discord_refuses_is_counted(
    discord_fake: FakeDiscord, discord_bot: BotFactory
) -> None:
    app, _bot = await discord_bot(imagine_recovery_check_s=0.2)
    discord_fake.channel_blocked = True  # the bot lost access to the channel meanwhile
    before = errors("send_message", "Forbidden:403")
    # Its token expired too: only a channel post is left.
    job_id, _it = await died_with_a_job(app, discord_fake, "a harbour", expired=True)

    await discord_fake.wait_until(
        lambda: any(c.status == 403 for c in discord_fake.calls_to("POST", "/messages"))
    )
    await discord_fake.wait_until(lambda: errors("send_message", "Forbidden:403") - before == 1)
    assert errors("edit_webhook_message", "HTTPException:401") >= 1
    job = await app.store.get_job(job_id)
    assert job is not None and job.status == "interrupted"


async def test_progress_edits_held_back_by_the_channel_budget_are_counted() -> None:
    pacer = MeteredPacer(Pacer(burst=1, every=0.05))
    before = waits("progress_edit"), waited_s()
    await pacer.turn(lambda: 0)  # the burst: at once
    assert waits("progress_edit") == before[0]
    await pacer.turn(lambda: 0)  # held back until the bucket refills
    assert waits("progress_edit") - before[0] == 1
    assert waited_s() - before[1] > 0
    pacer.close()
    await asyncio.sleep(0)


def test_route_names() -> None:
    assert route_name("PATCH", "/api/v10/channels/1/messages/2") == "edit_message"
    assert route_name("POST", "/api/v10/channels/1/messages") == "send_message"
    assert route_name("PATCH", "/api/v10/webhooks/1/tok/messages/@original") == (
        "edit_webhook_message"
    )
    assert route_name("POST", "/api/v10/webhooks/1/tok") == "followup"
    assert route_name("POST", "/api/v10/interactions/1/tok/callback") == "interaction_response"
    assert route_name("GET", "/api/v10/guilds/1/members/2") == "get_member"
    assert route_name("GET", "/api/v10/guilds/1/roles") == "get_roles"
