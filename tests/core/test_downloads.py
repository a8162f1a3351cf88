"""The downloader against a real local HTTP server: hosts, caps, sign-in pages, redirects."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import pytest

from bot.commands import RemoteFile
from bot.downloads import Downloader, FileHost
from bot.errors import AttachmentRejected
from tests.core.file_server import FileServer, Route

MB = 1024 * 1024
SIGN_IN = "Slack sent its sign-in page instead of the file"
PNG = b"\x89PNG\r\n\x1a\n" + b"pixels" * 50


def host_for(server: FileServer, **changes: object) -> FileHost:
    values: dict[str, object] = {
        "name": "Slack",
        "hosts": frozenset({"files.slack.com"}),
        "origins": frozenset({server.origin}),
        "headers": {"Authorization": "Bearer xoxb-test"},
        "html_reason": SIGN_IN,
    }
    values.update(changes)
    return FileHost(**values)  # type: ignore[arg-type]


@pytest.fixture
async def downloader(file_server: FileServer) -> AsyncIterator[Downloader]:
    files = Downloader(host_for(file_server), MB)
    yield files
    await files.aclose()


def remote(server: FileServer, path: str, name: str = "photo.png", **kw: object) -> RemoteFile:
    return RemoteFile(server.url(path), name, **kw)  # type: ignore[arg-type]


async def refused(files: Downloader, file: RemoteFile) -> str:
    with pytest.raises(AttachmentRejected) as caught:
        await files.fetch(file)
    assert caught.value.filename == file.filename
    assert caught.value.user_message == f"Can't use {file.filename}: {caught.value.reason}"
    return caught.value.reason


async def test_a_file_on_the_host_is_fetched_with_the_hosts_headers(
    file_server: FileServer, downloader: Downloader
) -> None:
    file_server.routes["/a.png"] = Route(PNG, headers={"Content-Type": "image/png"})
    file_server.routes["/b.png"] = Route(b"second " + PNG)
    got = await downloader.fetch_all(
        [remote(file_server, "/a.png", "a.png"), remote(file_server, "/b.png", "b.png")]
    )
    assert [(s.data, s.filename, s.mime) for s in got] == [
        (PNG, "a.png", ""),
        (b"second " + PNG, "b.png", ""),
    ]
    assert sorted(file_server.paths()) == ["/a.png", "/b.png"]
    for _, headers in file_server.requests:
        assert headers["Authorization"] == "Bearer xoxb-test"


def test_only_https_on_a_trusted_host_or_an_exact_origin_is_allowed() -> None:
    host = FileHost(
        "Discord",
        frozenset({"cdn.discordapp.com"}),
        frozenset({("http", "127.0.0.1:8080")}),
    )
    assert host.allows("https://cdn.discordapp.com/attachments/1/2/a.png")
    assert host.allows("https://CDN.discordapp.com/a.png")
    assert not host.allows("http://cdn.discordapp.com/a.png")
    assert not host.allows("https://cdn.discordapp.com.evil.example/a.png")
    assert not host.allows("https://evil.example/a.png")
    assert host.allows("http://127.0.0.1:8080/a.png")
    assert not host.allows("http://127.0.0.1:8081/a.png")
    assert not host.allows("https://127.0.0.1:8080/a.png")


async def test_a_file_elsewhere_is_refused_without_a_request(file_server: FileServer) -> None:
    file_server.routes["/a.png"] = Route(PNG)
    files = Downloader(host_for(file_server, origins=frozenset()), MB)
    try:
        reason = await refused(files, remote(file_server, "/a.png"))
    finally:
        await files.aclose()
    assert reason == "it isn't stored on Slack, so I won't download it"
    assert file_server.requests == []


async def test_a_file_that_is_not_an_image_is_refused_without_a_request(
    file_server: FileServer, downloader: Downloader
) -> None:
    file_server.routes["/notes.txt"] = Route(b"hello")
    file = remote(file_server, "/notes.txt", "notes.txt", content_type="text/plain; charset=utf-8")
    assert await refused(downloader, file) == "it isn't an image (it's a plain file)"
    assert file_server.requests == []


async def test_a_size_the_platform_announces_over_the_cap_is_refused_without_a_request(
    file_server: FileServer, downloader: Downloader
) -> None:
    file_server.routes["/big.png"] = Route(PNG)
    file = remote(file_server, "/big.png", "big.png", size=3 * MB)
    assert await refused(downloader, file) == "it is 3.0 MB and the limit is 1 MB"
    assert file_server.requests == []


async def test_a_declared_length_over_the_cap_is_refused(
    file_server: FileServer, downloader: Downloader
) -> None:
    file_server.routes["/big.png"] = Route(b"x" * (MB + MB // 2))
    reason = await refused(downloader, remote(file_server, "/big.png", "big.png"))
    assert reason == "it is 1.5 MB and the limit is 1 MB"


async def test_a_streamed_file_over_the_cap_is_cut_off(
    file_server: FileServer, downloader: Downloader
) -> None:
    file_server.routes["/big.png"] = Route(b"x" * (2 * MB), chunks=64)
    reason = await refused(downloader, remote(file_server, "/big.png", "big.png"))
    # No length was declared: the count stops at the chunk that went over.
    assert re.fullmatch(r"it is more than 1\.\d MB and the limit is 1 MB", reason), reason


async def test_a_file_exactly_at_the_cap_is_fetched(
    file_server: FileServer, downloader: Downloader
) -> None:
    file_server.routes["/edge.png"] = Route(b"x" * MB, chunks=16)
    got = await downloader.fetch(remote(file_server, "/edge.png"))
    assert len(got.data) == MB


async def test_a_sign_in_page_is_named_as_one(
    file_server: FileServer, downloader: Downloader
) -> None:
    file_server.routes["/typed.png"] = Route(
        b"<body>Sign in</body>", headers={"Content-Type": "Text/HTML; charset=utf-8"}
    )
    file_server.routes["/disguised.png"] = Route(
        b"  <!DOCTYPE html><html>Sign in</html>", headers={"Content-Type": "image/png"}
    )
    assert await refused(downloader, remote(file_server, "/typed.png")) == SIGN_IN
    assert await refused(downloader, remote(file_server, "/disguised.png")) == SIGN_IN


async def test_a_refusal_by_the_host_names_its_status(
    file_server: FileServer, downloader: Downloader
) -> None:
    file_server.routes["/secret.png"] = Route(b"no", status=403)
    reason = await refused(downloader, remote(file_server, "/secret.png"))
    assert reason == "Slack wouldn't let me download it (HTTP 403)"
    reason = await refused(downloader, remote(file_server, "/missing.png"))
    assert reason == "Slack wouldn't let me download it (HTTP 404)"


async def test_redirects_are_not_followed(file_server: FileServer, downloader: Downloader) -> None:
    file_server.routes["/moved.png"] = Route(status=302, headers={"Location": "/real.png"})
    file_server.routes["/real.png"] = Route(PNG)
    reason = await refused(downloader, remote(file_server, "/moved.png"))
    assert reason == "Slack wouldn't let me download it (HTTP 302)"
    assert file_server.paths() == ["/moved.png"]


async def test_a_host_that_is_down_is_a_plain_failure(file_server: FileServer) -> None:
    dead = FileServer()
    await dead.start()
    url = dead.url("/a.png")
    await dead.stop()
    files = Downloader(host_for(file_server, origins=frozenset({dead.origin})), MB)
    try:
        reason = await refused(files, RemoteFile(url, "a.png"))
    finally:
        await files.aclose()
    assert reason == "downloading it from Slack failed (ConnectError); try again"
