"""Discord's rate limits: the fake enforces them, a burst stays in budget, results always land."""

from __future__ import annotations

import asyncio

import aiohttp

from adapters.discord.presenter import PROGRESS_BURST, PROGRESS_EVERY
from tests.fakes.discord_server import BotFactory, Call, FakeDiscord, ProviderGate


async def test_the_fake_answers_a_busy_bucket_as_discord_does(discord_fake: FakeDiscord) -> None:
    url = f"{discord_fake.api_url}/channels/{discord_fake.channel_id}/messages"
    auth = {"Authorization": f"Bot {discord_fake.token}"}
    async with aiohttp.ClientSession(headers=auth) as http:
        answers = []
        for n in range(6):
            async with http.post(url, json={"content": f"message {n}"}) as response:
                answers.append((response.status, dict(response.headers), await response.json()))
    assert [status for status, _h, _b in answers] == [200] * 5 + [429]
    assert [h["X-RateLimit-Remaining"] for _s, h, _b in answers[:5]] == ["4", "3", "2", "1", "0"]
    _status, headers, body = answers[5]
    assert body["message"] == "You are being rate limited." and body["global"] is False
    assert 0 < body["retry_after"] <= 5
    assert int(headers["Retry-After"]) >= body["retry_after"]
    assert headers["X-RateLimit-Limit"] == "5" and headers["X-RateLimit-Bucket"]


async def test_a_burst_in_one_channel_keeps_progress_edits_in_the_channel_budget(
    discord_fake: FakeDiscord, discord_bot: BotFactory
) -> None:
    # One user's burst: their cap on waiting requests is raised so all 24 queue.
    app, _bot = await discord_bot(
        imagine_max_concurrency=2, imagine_partial_images=2, imagine_user_queue=24
    )
    gate = ProviderGate.hold(app)
    loop = asyncio.get_running_loop()
    began = loop.time()
    interactions = await asyncio.gather(
        *(discord_fake.slash(discord_fake.alice, prompt=f"picture {i}") for i in range(24))
    )
    await discord_fake.wait_until(lambda: all(it.callback_type == 5 for it in interactions))
    gate.release.set()
    messages = await asyncio.gather(*(discord_fake.result_of(it) for it in interactions))
    elapsed = loop.time() - began

    assert [m["embeds"][0]["description"] for m in messages] == [f"picture {i}" for i in range(24)]
    edits = [c for c in discord_fake.calls if c.method == "PATCH" and c.status == 200]
    progress = [c for c in edits if not (c.json or {}).get("embeds")]
    # Every queue move and preview of 24 jobs would be hundreds of edits; the channel's budget
    # allows a burst and then one edit per PROGRESS_EVERY seconds, however long this took.
    assert len(progress) <= PROGRESS_BURST + elapsed / PROGRESS_EVERY + 1, len(progress)
    for it in interactions:
        # The newest state wins and nothing is drawn over a result.
        assert (discord_fake.webhook_edits(it)[-1]).get("embeds")
    assert discord_fake.rate_limited == []


async def test_a_result_lands_however_long_discord_keeps_answering_429(
    discord_fake: FakeDiscord, discord_bot: BotFactory
) -> None:
    await discord_bot()

    def final_edit(call: Call) -> bool:
        return call.method == "PATCH" and bool((call.json or {}).get("embeds"))

    # discord.py waits out a 429 and tries 5 times per request; this bucket stays busy longer.
    for _ in range(7):
        discord_fake.rate_limit_next(final_edit, retry_after=0.01)
    it = await discord_fake.slash(discord_fake.alice, prompt="a teapot")
    message = await discord_fake.result_of(it)

    assert message["attachments"] and message["components"]
    assert [c.status for c in discord_fake.calls if final_edit(c)] == [429] * 7 + [200]
