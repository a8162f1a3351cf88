"""Fixtures of the core tests: stores on real files or a real PostgreSQL, closed at the end."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.store import Store
from tests.core.file_server import FileServer, serving
from tests.core.store_kit import OpenStore
from tests.fakes.postgres import postgres_schema


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    # Store tests run on both engines; a test of the SQLite file itself marks itself so.
    if "backend" in metafunc.fixturenames:
        only_sqlite = metafunc.definition.get_closest_marker("sqlite_only") is not None
        metafunc.parametrize("backend", ["sqlite"] if only_sqlite else ["sqlite", "postgresql"])


@pytest.fixture
async def database_url(backend: str) -> AsyncIterator[str | None]:
    """None for the SQLite file, or the URL of a fresh PostgreSQL schema."""
    if backend == "sqlite":
        yield None
        return
    async for url in postgres_schema():
        yield url


@pytest.fixture
async def open_store(database_url: str | None) -> AsyncIterator[OpenStore]:
    """Opens stores (on one database per test) and closes every one at the end."""
    async with contextlib.AsyncExitStack() as opened:

        async def _open(path: Path) -> Store:
            store = await Store.open(path, database_url=database_url)
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
