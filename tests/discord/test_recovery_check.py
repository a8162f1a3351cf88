"""Jobs another instance on the same database left unfinished: ended and announced, once each."""

from __future__ import annotations

import time

from bot.app import App
from bot.models import ImageRequest, Requester
from bot.store import Store
from tests.fakes.discord_server import BotFactory, FakeDiscord, FakeInteraction


async def died_with_a_job(
    app: App, fake: FakeDiscord, prompt: str, *, expired: bool = False
) -> tuple[str, FakeInteraction]:
    """Another instance (its own store on the same file) answers /imagine, then stops running.

    Closing its store without ending the job is what a crash leaves: a running job whose owner
    is gone, that nobody has told its user about. ``expired``: its interaction token too.
    """
    other = await Store.open(app.store.path)
    it = fake.seed_interaction(fake.alice)
    if expired:
        fake.expire(it)
    requester = Requester("discord", fake.alice.id, fake.guild_id, fake.channel_id, "alice")
    job = await other.admit(
        ImageRequest(requester=requester, prompt=prompt),
        limits=app.settings.user_limits,
        budgets=(),
        estimated_cost=0.05,
        exempt=False,
    )
    await other.mark_running(job.id)
    await other.set_platform_ref(
        job.id,
        {
            "kind": "interaction",
            "application_id": fake.app_id,
            "interaction_token": it.token,
            "channel_id": fake.channel_id,
            "message_id": it.original_id,
            "created_at": time.time(),
        },
    )
    await other.close()
    return job.id, it


async def test_a_running_bot_tells_the_users_of_jobs_a_dead_instance_left(
    discord_fake: FakeDiscord, discord_bot: BotFactory
) -> None:
    app, _bot = await discord_bot(imagine_recovery_check_s=0.2)

    first, first_it = await died_with_a_job(app, discord_fake, "a harbour at dawn")
    shown = await discord_fake.wait_until(
        lambda: (
            "interrupted" in discord_fake.original(first_it)["content"]
            and discord_fake.original(first_it)
        )
    )
    assert "a harbour at dawn" in shown["content"] and "Nothing was charged" in shown["content"]
    job = await app.store.get_job(first)
    assert job is not None and job.status == "interrupted" and job.charged_images == 0

    # Later checks find the next one, and never announce the first again.
    _second, second_it = await died_with_a_job(app, discord_fake, "a second harbour")
    await discord_fake.wait_until(
        lambda: "interrupted" in discord_fake.original(second_it)["content"]
    )
    assert len(discord_fake.webhook_edits(first_it)) == 1
    assert len(discord_fake.webhook_edits(second_it)) == 1
