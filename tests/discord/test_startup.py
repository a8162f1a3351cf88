"""Start-up and shutdown: interrupted jobs, bad settings, run_discord, and the invite link."""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from discord.gateway import DiscordWebSocket
from discord.http import Route

from adapters.discord.bot import run_discord
from adapters.discord.invite import BOT_PERMISSIONS, application_id_from_token, discord_invite_url
from bot.app import App
from bot.errors import ConfigError
from bot.models import ImageRequest, Requester
from tests.fakes.app_fixtures import AppFactory
from tests.fakes.cli_process import start_cli
from tests.fakes.discord_server import BotFactory, FakeDiscord, ProviderGate
from tests.fakes.openai_server import FakeOpenAI


async def running_job(app: App, fake: FakeDiscord, prompt: str, platform: str = "discord") -> str:
    """A job a previous process admitted and started, then died in."""
    requester = Requester(platform, fake.alice.id, fake.guild_id, fake.channel_id, "alice")
    job = await app.store.admit(
        ImageRequest(requester=requester, prompt=prompt),
        limits=app.settings.user_limits,
        budgets=(),
        estimated_cost=0.05,
        exempt=False,
    )
    await app.store.mark_running(job.id)
    return job.id


async def logged_line(process: asyncio.subprocess.Process, text: str) -> tuple[str, str]:
    """The first line the process logs that contains ``text``, and everything logged before it."""

    async def scan() -> tuple[str, str]:
        assert process.stderr is not None
        seen: list[str] = []
        while line := (await process.stderr.readline()).decode():
            if text in line:
                return line, "".join(seen)
            seen.append(line)
        raise AssertionError(f"the process ended without logging {text!r}:\n{''.join(seen)}")

    return await asyncio.wait_for(scan(), timeout=60)


async def test_interrupted_jobs_are_reported_after_a_restart(
    discord_fake: FakeDiscord, discord_bot: BotFactory
) -> None:
    app, bot = await discord_bot(imagine_user_limit="10/day")
    fresh = discord_fake.seed_interaction(discord_fake.alice)
    expired = discord_fake.seed_interaction(discord_fake.alice)
    discord_fake.expire(expired)
    old = discord_fake.seed_interaction(discord_fake.alice)
    status = discord_fake.seed_bot_message("⏳ Queued")
    refs = [
        (fresh, {"created_at": time.time()}),
        (expired, {"created_at": time.time()}),
        (old, {"created_at": time.time() - 3600}),
    ]
    jobs = {}
    for it, extra in refs:
        job_id = await running_job(app, discord_fake, f"prompt for {it.token}")
        await app.store.set_platform_ref(
            job_id,
            {
                "kind": "interaction",
                "application_id": discord_fake.app_id,
                "interaction_token": it.token,
                "channel_id": discord_fake.channel_id,
                "message_id": it.original_id,
                **extra,
            },
        )
        jobs[it.token] = job_id
    reply_job = await running_job(app, discord_fake, "a reply edit")
    await app.store.set_platform_ref(
        reply_job,
        {"kind": "message", "channel_id": discord_fake.channel_id, "message_id": status["id"]},
    )
    await running_job(app, discord_fake, "a slack job", platform="slack")

    await bot.close()
    await app.aclose()
    app, bot = await discord_bot(imagine_user_limit="10/day")

    def notices() -> list[dict[str, object]]:
        return [m for m in discord_fake.channel_messages() if "interrupted" in m["content"]]

    # Fresh token: its message is edited. Expired or old token: a channel post names the user.
    found = await discord_fake.wait_until(lambda: len(notices()) >= 4 and notices())
    assert "interrupted" in discord_fake.original(fresh)["content"]
    assert "interrupted" in discord_fake.messages[status["id"]]["content"]
    posts = [m for m in found if m["id"] not in (fresh.original_id, status["id"])]
    assert len(posts) == 2
    assert all(str(m["content"]).startswith(f"<@{discord_fake.alice.id}>") for m in posts)
    assert all("Nothing was charged" in str(m["content"]) for m in found)
    assert not [m for m in found if "slack job" in str(m["content"])]
    for job_id in (*jobs.values(), reply_job):
        job = await app.store.get_job(job_id)
        assert job is not None and job.status == "interrupted" and job.charged_images == 0


async def test_stopping_with_a_job_in_flight_tells_its_user_and_refunds(
    discord_fake: FakeDiscord, discord_bot: BotFactory
) -> None:
    app, bot = await discord_bot()
    ProviderGate.hold(app)  # never released
    it = await discord_fake.slash(discord_fake.alice, prompt="a long exposure")
    await discord_fake.wait_until(
        lambda: (
            "🎨 Working since"
            in discord_fake.messages.get(it.original_id or "", {}).get("content", "")
        )
    )
    await bot.close()

    shown = discord_fake.original(it)
    assert "interrupted" in shown["content"] and "Nothing was charged" in shown["content"]
    [usage] = await app.store.usage_summary(f"discord:{discord_fake.alice.id}")
    assert usage.images_today == 0


async def test_a_wrong_token_is_a_config_error(
    discord_fake: FakeDiscord, discord_bot: BotFactory
) -> None:
    with pytest.raises(ConfigError) as caught:
        await discord_bot(discord_token="MTIz.wrong.token")
    assert caught.value.variable == "DISCORD_TOKEN"


async def test_a_refused_message_content_intent_is_a_config_error(
    discord_fake: FakeDiscord, discord_bot: BotFactory
) -> None:
    discord_fake.allow_message_content = False
    with pytest.raises(ConfigError) as caught:
        await discord_bot(discord_message_content_intent=True)
    assert caught.value.variable == "DISCORD_MESSAGE_CONTENT_INTENT"


async def test_run_discord_serves_until_cancelled(
    discord_fake: FakeDiscord, make_app: AppFactory
) -> None:
    saved = (Route.BASE, DiscordWebSocket.DEFAULT_GATEWAY)
    app = await make_app(
        discord_token=discord_fake.token,
        discord_api_base_url=discord_fake.api_url,
        discord_gateway_url=discord_fake.gateway_url,
    )
    task = asyncio.create_task(run_discord(app))
    try:
        await discord_fake.wait_until(lambda: discord_fake.connected)
        assert discord_fake.api_url == Route.BASE
        it = await discord_fake.slash(discord_fake.alice, prompt="a kite")
        await discord_fake.result_of(it)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        Route.BASE, DiscordWebSocket.DEFAULT_GATEWAY = saved
    await discord_fake.wait_until(lambda: not discord_fake.connected)


def test_invite_url_has_exactly_the_needed_scopes_and_permissions() -> None:
    url = urlsplit(discord_invite_url("1234567890"))
    query = parse_qs(url.query)
    assert (url.netloc, url.path) == ("discord.com", "/oauth2/authorize")
    assert query["client_id"] == ["1234567890"]
    assert query["scope"] == ["bot applications.commands"]
    permissions = int(query["permissions"][0])
    wanted = [10, 11, 14, 15, 16, 38]  # view, send, embed, attach, history, send in threads
    assert permissions == sum(1 << bit for bit in wanted)
    assert not permissions & (1 << 13)  # no Manage Messages
    assert not permissions & (1 << 3)  # no Administrator


def test_application_id_from_token(discord_fake: FakeDiscord) -> None:
    assert application_id_from_token(discord_fake.token) == discord_fake.app_id
    assert application_id_from_token("MTIzNDU2Nzg5MDEyMzQ1Njc4.GaBcDe.xyz") == "123456789012345678"
    assert application_id_from_token("not a token") is None
    assert application_id_from_token("") is None


@pytest.mark.parametrize("args", [("run",), ("run", "discord")])
async def test_imagine_bot_run_serves_discord_when_its_token_is_set(
    args: tuple[str, ...], discord_fake: FakeDiscord, openai_fake: FakeOpenAI, tmp_path: Path
) -> None:
    process = await start_cli(
        *args,
        cwd=tmp_path,
        DISCORD_TOKEN=discord_fake.token,
        DISCORD_API_BASE_URL=discord_fake.api_url,
        DISCORD_GATEWAY_URL=discord_fake.gateway_url,
        OPENAI_API_KEY=openai_fake.api_key,
        OPENAI_BASE_URL=openai_fake.base_url,
        IMAGINE_PARTIAL_IMAGES="0",
    )
    try:
        ready, before = await logged_line(process, "invite it with")
        assert discord_invite_url(discord_fake.app_id) in ready  # the operator gets the link
        # The bot never uses voice: discord.py's warnings about its missing libraries are noise.
        assert "voice will NOT be supported" not in before
        assert " WARNING " not in before and " ERROR " not in before, before
        assert discord_fake.connected
        message = await discord_fake.generate(discord_fake.alice, "a kite over the sea")
        assert message["attachments"] and message["components"]
    finally:
        if process.returncode is None:
            process.terminate()  # SIGTERM: how a container is stopped
        _out, err = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode == 0, err.decode()
    assert "Traceback" not in err.decode()
    await discord_fake.wait_until(lambda: not discord_fake.connected)


async def test_imagine_bot_discord_invite_prints_the_link(
    discord_fake: FakeDiscord, tmp_path: Path
) -> None:
    process = await start_cli("discord-invite", cwd=tmp_path, DISCORD_TOKEN=discord_fake.token)
    out, err = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode == 0, err.decode()
    query = parse_qs(urlsplit(out.decode().strip()).query)
    assert query["client_id"] == [discord_fake.app_id]
    assert query["permissions"] == [str(BOT_PERMISSIONS.value)]
    assert query["scope"] == ["bot applications.commands"]

    process = await start_cli("discord-invite", cwd=tmp_path)
    out, err = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode == 1 and out == b""
    assert "DISCORD_TOKEN" in err.decode() and "Traceback" not in err.decode()
