"""service.prepare for edits: the linked job's result, else the message's own files."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator

import pytest
from PIL import Image

from bot.app import App
from bot.commands import Edit, Generate, MessageRef, Overrides, Regenerate, RemoteFile
from bot.downloads import Downloader, FileHost
from bot.errors import AttachmentRejected, ContentBlocked, JobNotFound
from bot.models import JobRecord, Requester
from tests.core.file_server import FileServer, Route
from tests.fakes.app_fixtures import AppFactory
from tests.fakes.openai_server import FakeOpenAI

ALICE = Requester("slack", "U1", "T1", "C1", "Alice")
ON = MessageRef("slack", "C1:1700000000.000100")


def png(colour: str) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (32, 32), colour).save(buffer, "PNG")
    return buffer.getvalue()


THEIRS, EXTRA, MASK = png("blue"), png("green"), png("white")


@pytest.fixture
async def files(file_server: FileServer) -> AsyncIterator[Downloader]:
    file_server.routes["/theirs.png"] = Route(THEIRS)
    file_server.routes["/extra.png"] = Route(EXTRA)
    file_server.routes["/mask.png"] = Route(MASK)
    downloader = Downloader(FileHost("Slack", frozenset(), frozenset({file_server.origin})), 10**7)
    yield downloader
    await downloader.aclose()


def shared(server: FileServer, name: str) -> RemoteFile:
    return RemoteFile(server.url(f"/{name}"), name)


async def succeeded(app: App) -> str:
    request = await app.service.prepare(Generate(ALICE, "a red fox", Overrides(quality="low")))
    result = await app.service.run(request)
    await app.service.link_message(ON, result.job_id)
    return result.job_id


async def failed(app: App, openai_fake: FakeOpenAI) -> str:
    admitted: list[str] = []

    async def on_admitted(job: JobRecord, position: int) -> None:
        admitted.append(job.id)

    openai_fake.fail_next("moderation_blocked")
    request = await app.service.prepare(Generate(ALICE, "something blocked"))
    with pytest.raises(ContentBlocked):
        await app.service.run(request, on_admitted=on_admitted)
    (job_id,) = admitted
    job = await app.service.get_job(job_id)
    assert job is not None and job.status == "failed"
    await app.service.link_message(ON, job_id)
    return job_id


async def test_an_edit_on_a_linked_succeeded_job_starts_from_its_result(
    make_app: AppFactory, file_server: FileServer, files: Downloader
) -> None:
    app = await make_app()
    parent = await succeeded(app)
    edit = Edit(
        ALICE,
        "make it red",
        on=ON,
        their_files=(shared(file_server, "theirs.png"),),
        files=(shared(file_server, "extra.png"),),
        overrides=Overrides(quality="high"),
    )
    request = await app.service.prepare(edit, files)
    (stored, *_) = await app.store.job_images(parent)
    assert request.parent_job_id == parent
    assert [s.data for s in request.sources] == [stored.read_bytes(), EXTRA]
    assert request.prompt == "make it red"
    assert (request.options.n, request.options.quality) == (1, "high")
    assert file_server.paths() == ["/extra.png"], "the message's own files were fetched"


async def test_an_edit_on_a_linked_failed_job_uses_the_messages_files(
    make_app: AppFactory, openai_fake: FakeOpenAI, file_server: FileServer, files: Downloader
) -> None:
    app = await make_app()
    await failed(app, openai_fake)
    edit = Edit(
        ALICE,
        "make it red",
        on=ON,
        their_files=(shared(file_server, "theirs.png"),),
        files=(shared(file_server, "extra.png"),),
        mask=shared(file_server, "mask.png"),
    )
    request = await app.service.prepare(edit, files)
    assert request.parent_job_id is None
    assert [s.data for s in request.sources] == [THEIRS, EXTRA]
    assert request.mask is not None and request.mask.data == MASK
    assert request.options == app.service.options()


async def test_an_edit_on_a_failed_job_with_no_files_says_there_is_no_image(
    make_app: AppFactory, openai_fake: FakeOpenAI, files: Downloader
) -> None:
    app = await make_app()
    await failed(app, openai_fake)
    with pytest.raises(AttachmentRejected) as caught:
        await app.service.prepare(Edit(ALICE, "make it red", on=ON), files)
    assert caught.value.user_message == (
        "Can't use that message: I can't see an image in it any more"
    )


async def test_an_edit_on_an_unlinked_message_uses_its_files(
    make_app: AppFactory, file_server: FileServer, files: Downloader
) -> None:
    app = await make_app()
    edit = Edit(
        ALICE,
        "make it red",
        on=ON,
        their_files=(shared(file_server, "theirs.png"),),
        overrides=Overrides(n=2),
    )
    request = await app.service.prepare(edit, files)
    assert request.parent_job_id is None
    assert [s.data for s in request.sources] == [THEIRS]
    assert request.options.n == 2


async def test_an_edit_naming_its_job_ignores_the_message(
    make_app: AppFactory, openai_fake: FakeOpenAI, file_server: FileServer, files: Downloader
) -> None:
    app = await make_app()
    parent = await succeeded(app)
    other = MessageRef("slack", "C1:elsewhere")
    edit = Edit(ALICE, "make it red", job_id=parent, on=other)
    request = await app.service.prepare(edit, files)
    assert request.parent_job_id == parent
    assert len(request.sources) == 1
    assert file_server.requests == []
    with pytest.raises(JobNotFound):
        await app.service.prepare(Edit(ALICE, "make it red", job_id="nosuchjob"), files)


async def test_files_that_cannot_be_fetched_here_are_refused_by_name(
    make_app: AppFactory, file_server: FileServer
) -> None:
    app = await make_app()
    edit = Edit(ALICE, "make it red", their_files=(shared(file_server, "theirs.png"),))
    with pytest.raises(AttachmentRejected) as caught:
        await app.service.prepare(edit)
    assert caught.value.user_message == "Can't use theirs.png: files can't be fetched here"


async def test_a_regeneration_is_the_stored_request_asked_again(make_app: AppFactory) -> None:
    app = await make_app()
    parent = await succeeded(app)
    bob = Requester("slack", "U2", "T1", "C1", "Bob")
    request = await app.service.prepare(Regenerate(bob, parent))
    assert (request.requester, request.prompt) == (bob, "a red fox")
    assert request.options.quality == "low"
