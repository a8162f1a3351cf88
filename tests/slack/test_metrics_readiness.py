"""Slack readiness through a dropped socket, Web API error and rate-limit counts, and the
periodic check for jobs another instance left interrupted."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from bot import metrics
from tests.fakes.openai_server import FakeOpenAI
from tests.fakes.slack_server import FakeSlack
from tests.fakes.slack_steps import text_of


def value(name: str, **labels: str) -> float:
    return metrics.REGISTRY.get_sample_value(name, labels) or 0.0


async def _until(condition: Any, timeout: float = 10.0) -> None:  # noqa: ASYNC109
    for _ in range(int(timeout / 0.01)):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not met")


async def test_readiness_drops_with_the_socket_and_returns_after_reconnect(
    slack_fake: FakeSlack, openai_fake: FakeOpenAI, start_slack: Any
) -> None:
    running = await start_slack("socket")
    flags = running.app.readiness
    await _until(lambda: flags().get("slack") is True)
    seen: list[bool] = []
    original = flags.set

    def record(name: str, ok: bool) -> None:
        if name == "slack":
            seen.append(ok)
        original(name, ok)

    flags.set = record
    for ws in list(slack_fake._sockets):
        await ws.close()
    await _until(lambda: seen[-1:] == [True] and slack_fake.connected)
    assert seen[0] is False and seen[-1] is True
    assert flags()["slack"] is True


async def test_a_refused_call_and_a_429_are_counted(
    slack_fake: FakeSlack, openai_fake: FakeOpenAI, start_slack: Any
) -> None:
    await start_slack("socket", rate_scale=0.5)
    slack_fake.failure_retry_after = 0.05
    slack_fake.fail_when(
        "chat.update", lambda a: "done in" in str(a.get("text")), "ratelimited", times=1
    )
    waits = value("imagine_rate_limit_waits_total", platform="slack", method="chat.update")
    errors = value(
        "imagine_platform_api_errors_total",
        platform="slack",
        method="chat.update",
        error="SlackApiError:ratelimited",
    )
    await slack_fake.send_command(slack_fake.command_payload("a patient painting"))
    await slack_fake.wait_for("chat.update", lambda c: "done in" in text_of(c), count=2)
    after = value("imagine_rate_limit_waits_total", platform="slack", method="chat.update")
    assert after - waits == 1
    assert (
        value(
            "imagine_platform_api_errors_total",
            platform="slack",
            method="chat.update",
            error="SlackApiError:ratelimited",
        )
        == errors
    )
    # A refusal that is not retried is an error of its method.
    before = value(
        "imagine_platform_api_errors_total",
        platform="slack",
        method="users.info",
        error="SlackApiError:user_not_found",
    )
    slack_fake.fail_next("users.info", "user_not_found")
    from slack_sdk.errors import SlackApiError

    from adapters.slack.rate import PacedWebClient, RateBudget
    from tests.fakes.slack_server import BOT_TOKEN

    client = PacedWebClient(token=BOT_TOKEN, base_url=slack_fake.api_url, budget=RateBudget())
    with pytest.raises(SlackApiError):
        await client.users_info(user="UALICE")
    assert (
        value(
            "imagine_platform_api_errors_total",
            platform="slack",
            method="users.info",
            error="SlackApiError:user_not_found",
        )
        - before
        == 1
    )


async def _died_with_a_job(app: Any, fake: FakeSlack, prompt: str) -> tuple[str, str]:
    """Another instance (its own store on the same file) posts a placeholder, then dies."""
    from bot.models import ImageRequest, Requester
    from bot.store import Store
    from tests.fakes.slack_server import BOT_USER_ID, TEAM_ID
    from tests.fakes.slack_steps import CHANNEL

    other = await Store.open(app.store.path)
    placeholder = fake.add_message(CHANNEL, f"<@UALICE>: {prompt} — queued", user=BOT_USER_ID)
    requester = Requester("slack", "UALICE", TEAM_ID, CHANNEL, "alice")
    job = await other.admit(
        ImageRequest(requester=requester, prompt=prompt),
        limits=app.settings.user_limits,
        budgets=(),
        estimated_cost=0.05,
        exempt=False,
    )
    await other.mark_running(job.id)
    await other.set_platform_ref(job.id, {"channel": CHANNEL, "ts": placeholder["ts"]})
    await other.close()
    return job.id, str(placeholder["ts"])


async def test_a_running_bot_marks_jobs_a_dead_instance_left_once(
    slack_fake: FakeSlack, openai_fake: FakeOpenAI, start_slack: Any
) -> None:
    from tests.fakes.slack_steps import CHANNEL

    running = await start_slack("socket", imagine_recovery_check_s=0.2)
    job_id, ts = await _died_with_a_job(running.app, slack_fake, "a harbour at dawn")

    def edits() -> list[Any]:
        return [c for c in slack_fake.calls_to("chat.update") if c.args.get("ts") == ts]

    await slack_fake.wait_until(lambda: bool(edits()), timeout=10)
    shown = slack_fake.message(CHANNEL, ts)
    assert shown is not None and "interrupted" in shown["text"]
    assert "a harbour at dawn" in shown["text"]
    job = await running.app.store.get_job(job_id)
    assert job is not None and job.status == "interrupted"
    # A later check finds the next one and never marks the first again.
    _second, second_ts = await _died_with_a_job(running.app, slack_fake, "a second harbour")
    await slack_fake.wait_until(
        lambda: any(c.args.get("ts") == second_ts for c in slack_fake.calls_to("chat.update")),
        timeout=10,
    )
    assert len(edits()) == 1
