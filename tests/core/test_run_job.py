"""run_job's outcome ladder: the real service and fake OpenAI, through a recording presenter."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from bot import texts
from bot.app import App
from bot.commands import Edit, Generate, RemoteFile
from bot.downloads import Downloader, FileHost
from bot.errors import ContentBlocked, LimitExceeded, ProviderUnavailable
from bot.models import Requester, SourceImage
from bot.presenting import CantPost, NotShown, run_job
from tests.core.presenter_kit import Recording
from tests.fakes.app_fixtures import AppFactory, ProviderGate
from tests.fakes.openai_server import FakeOpenAI

ALICE = Requester("discord", "111", "guild", "chan", "Alice")


async def charged_images(app: App) -> int:
    return sum(row.images_today for row in await app.store.usage_summary(ALICE.key))


async def test_a_result_is_shown_and_every_message_is_linked(
    make_app: AppFactory, openai_fake: FakeOpenAI
) -> None:
    app = await make_app()
    shown = Recording()
    job_id = await run_job(app.service, Generate(ALICE, "  a kite  "), shown)
    assert job_id is not None
    assert shown.calls[0] == "open" and shown.calls[-1] == "result"
    assert "failure" not in shown.calls
    assert shown.views[0].job_id == job_id and shown.views[0].phase == "queued"
    assert [r.job_id for r in shown.results] == [job_id]
    assert shown.results[0].request.prompt == "a kite"
    for ref in (Recording.progress_ref(job_id), Recording.result_ref(job_id)):
        linked = await app.service.job_for(ref)
        assert linked is not None and linked.id == job_id
    job = await app.service.get_job(job_id)
    assert job is not None and job.status == "succeeded"
    assert job.platform_ref == {"channel": "C1", "message": f"progress:{job_id}"}
    assert len(openai_fake.requests) == 1


async def test_a_refusal_before_admission_opens_nothing(
    make_app: AppFactory, openai_fake: FakeOpenAI
) -> None:
    app = await make_app()
    shown = Recording()
    assert await run_job(app.service, Generate(ALICE, "   "), shown) is None
    assert shown.calls == ["failure"]
    (failure,) = shown.failures
    assert failure.kind == "refused"
    assert failure.message == "Please describe the image you want."
    assert failure.job_id is None
    assert failure.state == texts.NOT_MADE
    assert not failure.made
    assert openai_fake.requests == []


async def test_a_limit_refusal_says_when_it_resets(make_app: AppFactory) -> None:
    app = await make_app(imagine_user_limit="1/hour")
    assert await run_job(app.service, Generate(ALICE, "one"), Recording()) is not None
    shown = Recording()
    assert await run_job(app.service, Generate(ALICE, "two"), shown) is None
    (failure,) = shown.failures
    assert isinstance(failure.error, LimitExceeded)
    assert failure.message == (
        f"{failure.error.user_message} Your limit resets <in {failure.error.resets_at:.0f}>."
    )
    assert "open" not in shown.calls


async def test_a_refusal_after_admission_is_told_on_the_opened_job(
    make_app: AppFactory, openai_fake: FakeOpenAI
) -> None:
    app = await make_app()
    openai_fake.fail_next("moderation_blocked", categories=["violence"])
    shown = Recording()
    assert await run_job(app.service, Generate(ALICE, "something blocked"), shown) is None
    assert shown.calls[0] == "open" and shown.calls[-1] == "failure"
    (failure,) = shown.failures
    assert failure.kind == "refused"
    assert isinstance(failure.error, ContentBlocked)
    assert failure.message == failure.error.user_message
    assert failure.job_id is not None and failure.job_id == shown.views[0].job_id
    job = await app.service.get_job(failure.job_id)
    assert job is not None and job.status == "failed"
    assert await charged_images(app) == 0


async def test_an_unavailable_provider_is_its_own_kind(
    make_app: AppFactory, openai_fake: FakeOpenAI
) -> None:
    app = await make_app(openai_max_retries=0)
    openai_fake.fail_next("server_error")
    shown = Recording()
    assert await run_job(app.service, Generate(ALICE, "a kite"), shown) is None
    (failure,) = shown.failures
    assert failure.kind == "unavailable"
    assert isinstance(failure.error, ProviderUnavailable)
    assert failure.message == failure.error.user_message
    assert failure.state == texts.UNAVAILABLE
    assert await charged_images(app) == 0


class BrokenDownloader(Downloader):
    """A downloader with a bug in it."""

    async def fetch_all(self, files: Sequence[RemoteFile]) -> tuple[SourceImage, ...]:
        raise RuntimeError("a bug in the download code")


@pytest.mark.allow_error_logs
async def test_a_bug_is_told_in_plain_words_and_logged(
    make_app: AppFactory, caplog: pytest.LogCaptureFixture
) -> None:
    app = await make_app()
    files = BrokenDownloader(FileHost("Testchat", frozenset({"files.example"})), 1000)
    edit = Edit(ALICE, "make it red", files=(RemoteFile("https://files.example/a.png", "a.png"),))
    shown = Recording()
    assert await run_job(app.service, edit, shown, files=files) is None
    assert shown.calls == ["failure"]
    (failure,) = shown.failures
    assert failure.kind == "bug"
    assert failure.message == texts.bug(None, shown.markup)
    assert "Traceback" not in failure.message and "RuntimeError" not in failure.message
    assert "Testchat job (not admitted) failed" in caplog.text
    assert "a bug in the download code" in caplog.text


async def test_cant_post_stops_the_job_before_it_is_paid_for_and_refunds_it(
    make_app: AppFactory, openai_fake: FakeOpenAI
) -> None:
    app = await make_app()
    shown = Recording()
    shown.open_error = CantPost("missing Send Messages")
    assert await run_job(app.service, Generate(ALICE, "a kite"), shown) is None
    assert shown.calls == ["open", "failure"]
    (failure,) = shown.failures
    assert failure.kind == "cant_post"
    assert failure.message == (
        "I can't post in this channel (missing Send Messages), so I didn't make the image and "
        "nothing was charged. Invite me back, then try again."
    )
    assert failure.job_id is not None
    job = await app.service.get_job(failure.job_id)
    assert job is not None and job.status == "failed"
    assert await charged_images(app) == 0
    assert openai_fake.requests == []


@pytest.mark.parametrize(
    ("how", "words"),
    [
        ("lost_access", "Your image was made (job `{job}`), but I can't post in this channel any "
         "more (no access). Invite me back, then try again."),
        ("refused", "Your image was made and saved (job `{job}`), but Testchat wouldn't take the "
         "upload (no access). Use Regenerate or Edit on the message, or try again in a moment."),
        ("unfinished", "Your image is in the thread (job `{job}`), but Testchat wouldn't let me "
         "finish its message (no access). Reply in the thread to edit it."),
    ],
)  # fmt: skip
async def test_a_result_that_was_made_but_not_shown_says_what_is_left(
    make_app: AppFactory, how: str, words: str
) -> None:
    app = await make_app()
    shown = Recording()
    shown.result_error = NotShown(how, "no access")  # type: ignore[arg-type]
    job_id = await run_job(app.service, Generate(ALICE, "a kite"), shown)
    assert job_id is not None, "the image was made: its job is still delivered"
    assert shown.calls[-2:] == ["result", "failure"]
    (failure,) = shown.failures
    assert failure.kind == "unshown"
    assert failure.made
    assert failure.job_id == job_id
    assert failure.message == words.format(job=job_id)
    assert failure.state == f"made, but I couldn't post it here (job {job_id})"
    assert await charged_images(app) == 1


@pytest.mark.allow_error_logs
async def test_a_result_the_platform_refused_for_no_known_reason_is_a_fault(
    make_app: AppFactory,
) -> None:
    app = await make_app()
    shown = Recording()
    shown.result_error = RuntimeError("400 Bad Request: embed too long")
    job_id = await run_job(app.service, Generate(ALICE, "a kite"), shown)
    assert job_id is not None
    (failure,) = shown.failures
    assert failure.kind == "unshown"
    assert failure.message == texts.unshown(job_id, "Testchat", shown.markup)
    assert "embed too long" not in failure.message


async def test_cancelling_tells_the_user_it_was_interrupted_and_re_raises(
    make_app: AppFactory, openai_fake: FakeOpenAI
) -> None:
    app = await make_app()
    gate = ProviderGate.hold(app)
    shown = Recording()
    task = asyncio.create_task(run_job(app.service, Generate(ALICE, "a kite"), shown))
    await asyncio.wait_for(shown.opened.wait(), 5)
    await asyncio.sleep(0.2)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not gate.release.is_set()
    assert shown.calls[-1] == "failure"
    (failure,) = shown.failures
    assert failure.kind == "interrupted"
    assert failure.message == texts.interrupted()
    assert failure.state == texts.INTERRUPTED
    assert failure.job_id == shown.views[0].job_id
    job = await app.service.get_job(shown.views[0].job_id or "")
    assert job is not None and job.status == "failed"
    assert await charged_images(app) == 0
    assert openai_fake.requests == []
