"""A job's ending when the database or disk fails around it: failed, refunded, cost kept."""

from __future__ import annotations

import errno
import sqlite3
from collections.abc import Callable
from typing import Any

import pytest

from bot import data_dir
from bot.app import App
from bot.data_dir import DataDirFull
from bot.db import SqliteDatabase
from bot.errors import ContentBlocked, ProviderUnavailable
from bot.models import ImageRequest, Requester
from bot.pricing import estimate_cost
from tests.fakes.app_fixtures import AppFactory
from tests.fakes.openai_server import FakeOpenAI

ANN = Requester(platform="discord", user_id="111", team_id="g1", channel_id="c1")
FULL = "database or disk is full"


def ask(app: App, prompt: str = "a red fox") -> ImageRequest:
    return ImageRequest(requester=ANN, prompt=prompt, options=app.service.options())


def refuse_once(app: App, monkeypatch: pytest.MonkeyPatch, starts: str) -> list[str]:
    """Make the store's first statement starting with ``starts`` fail as on a full disk."""
    database = app.store.database
    assert isinstance(database, SqliteDatabase)
    db = database.db
    real: Callable[..., Any] = db.execute
    refused: list[str] = []

    def execute(sql: str, *args: Any, **kwargs: Any) -> Any:
        if sql.startswith(starts) and not refused:
            refused.append(sql)
            raise sqlite3.OperationalError(FULL)
        return real(sql, *args, **kwargs)

    monkeypatch.setattr(db, "execute", execute)
    return refused


def job_row(app: App, job_id: str) -> tuple[str, str, int, float, float]:
    with sqlite3.connect(app.store.path) as db:
        row = db.execute(
            "SELECT status, error, charged_images, charged_cost, cost_usd FROM jobs WHERE id = ?",
            (job_id,),
        ).fetchone()
    return row[0], row[1] or "", int(row[2]), float(row[3]), float(row[4])


def only_job(app: App) -> str:
    with sqlite3.connect(app.store.path) as db:
        [(job_id,)] = db.execute("SELECT id FROM jobs").fetchall()
    return str(job_id)


async def test_a_failure_that_could_not_be_recorded_is_ended_and_refunded_by_the_heartbeat(
    make_app: AppFactory, openai_fake: FakeOpenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = await make_app()
    refused = refuse_once(app, monkeypatch, "UPDATE jobs SET status = ?")
    openai_fake.fail_next("moderation_blocked")
    with pytest.raises(ContentBlocked) as caught:
        await app.service.run(ask(app))
    assert refused, "the failure's UPDATE was never refused"
    job_id = only_job(app)
    assert job_row(app, job_id)[:3] == ("running", "", 1)  # the write was lost

    await app.store.heartbeat()

    status, error, images, charged, _ = job_row(app, job_id)
    assert (status, images, charged) == ("failed", 0, 0.0)
    assert error == caught.value.user_message
    [row] = await app.store.usage_summary(ANN.key)
    assert (row.images_today, row.cost_today) == (0, 0.0)


async def test_an_unrecorded_failure_is_written_on_close_not_left_to_recovery(
    make_app: AppFactory, openai_fake: FakeOpenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = await make_app()
    refuse_once(app, monkeypatch, "UPDATE jobs SET status = ?")
    openai_fake.fail_next("moderation_blocked")
    with pytest.raises(ContentBlocked) as caught:
        await app.service.run(ask(app))
    job_id = only_job(app)

    await app.aclose()

    # Failed with the user's reason, not "interrupted" by the next start's recovery.
    assert job_row(app, job_id)[:4] == ("failed", caught.value.user_message, 0, 0.0)


async def test_a_full_disk_when_the_job_starts_says_so_and_refunds_it(
    make_app: AppFactory, openai_fake: FakeOpenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = await make_app()
    refuse_once(app, monkeypatch, "UPDATE jobs SET status = 'running'")
    with pytest.raises(DataDirFull) as caught:
        await app.service.run(ask(app))

    folder = data_dir.shown(app.store.data_dir)
    assert caught.value.user_message == (
        f"Can't make images right now: no space left in IMAGINE_DATA_DIR ({folder}). Nothing "
        "was charged; please tell the bot's operator to free some space, then try again."
    )
    status, error, images, charged, cost = job_row(app, only_job(app))
    assert (status, images, charged, cost) == ("failed", 0, 0.0, 0.0)
    assert "no space left" in error
    assert openai_fake.requests == []


async def test_a_full_disk_at_the_write_probe_says_so_and_refunds_it(
    make_app: AppFactory, openai_fake: FakeOpenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = await make_app()

    def full(folder: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(data_dir, "probe", full)
    with pytest.raises(DataDirFull) as caught:
        await app.service.run(ask(app))

    assert caught.value.user_message.startswith(
        "Can't make images right now: no space left in IMAGINE_DATA_DIR ("
    )
    assert "Nothing was charged" in caught.value.user_message
    status, _, images, charged, _ = job_row(app, only_job(app))
    assert (status, images, charged) == ("failed", 0, 0.0)
    assert openai_fake.requests == []


async def test_an_unreadable_answer_keeps_the_estimated_cost_for_the_operator(
    make_app: AppFactory, openai_fake: FakeOpenAI, caplog: pytest.LogCaptureFixture
) -> None:
    app = await make_app()
    caplog.set_level("INFO", logger="bot.service")
    openai_fake.fail_next("bad_image")
    request = ask(app)
    with pytest.raises(ProviderUnavailable) as caught:
        await app.service.run(request)

    assert "Nothing was charged" in caught.value.user_message
    status, _, images, charged, cost = job_row(app, only_job(app))
    estimate = estimate_cost(request.options, 0, len(request.prompt))
    assert (status, images, charged) == ("failed", 0, 0.0)
    assert cost == pytest.approx(estimate) and cost > 0
    [line] = [r.getMessage() for r in caplog.records if r.getMessage().startswith("job finished")]
    assert f"cost={estimate:.4f}" in line.split()
    [row] = await app.store.usage_summary(ANN.key)
    assert (row.images_today, row.cost_today) == (0, 0.0)
