"""Fixtures of the core tests: stores on real files, closed at the end."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.store import Store
from tests.core.file_server import FileServer, serving
from tests.core.store_kit import OpenStore


@pytest.fixture
async def open_store() -> AsyncIterator[OpenStore]:
    """Opens stores and closes every one at the end, even when the test fails."""
    async with contextlib.AsyncExitStack() as opened:

        async def _open(path: Path) -> Store:
            store = await Store.open(path)
            opened.push_async_callback(store.close)
            return store

        yield _open


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "data" / "imagine.sqlite3"


@pytest.fixture
async def store(open_store: OpenStore, db_path: Path) -> Store:
    return await open_store(db_path)


@pytest.fixture
async def file_server() -> AsyncIterator[FileServer]:
    """A local file host (see ``tests.core.file_server``)."""
    async for server in serving():
        yield server
