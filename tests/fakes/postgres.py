"""A real PostgreSQL for the tests: a fresh schema per test on the local server, dropped after.

The server is the one at ``IMAGINE_TEST_POSTGRES_URL`` (default: the local server with trust
auth). Where none answers, the tests that need it skip with one line saying so; with
``IMAGINE_REQUIRE_POSTGRES=1`` (as ``.ci/run`` sets) they fail instead, so CI can't pass
without having run them.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator
from urllib.parse import urlencode, urlsplit

import asyncpg
import pytest

SERVER_URL = os.environ.get("IMAGINE_TEST_POSTGRES_URL", "postgresql://root@127.0.0.1:5432/test")


def schema_url(schema: str, server_url: str = SERVER_URL) -> str:
    """The server URL with ``search_path`` set to ``schema`` (asyncpg's server settings)."""
    separator = "&" if urlsplit(server_url).query else "?"
    return f"{server_url}{separator}{urlencode({'search_path': schema})}"


async def _unreachable() -> str | None:
    try:
        conn = await asyncpg.connect(SERVER_URL, timeout=5)
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        return f"{type(exc).__name__}: {exc}".strip()
    await conn.close()
    return None


async def require_server() -> None:
    """Skip (or, where CI requires it, fail) the test when no PostgreSQL server answers."""
    reason = await _unreachable()
    if reason is None:
        return
    message = f"no PostgreSQL at {SERVER_URL} ({reason})"
    if os.environ.get("IMAGINE_REQUIRE_POSTGRES") == "1":
        pytest.fail(f"{message}; IMAGINE_REQUIRE_POSTGRES=1 demands one", pytrace=False)
    pytest.skip(message)


@pytest.fixture
async def pg_url() -> AsyncIterator[str]:
    """An IMAGINE_DATABASE_URL for a new, empty schema of its own (dropped at the end)."""
    async for url in postgres_schema():
        yield url


async def postgres_schema() -> AsyncIterator[str]:
    """Create a schema, yield its URL, drop it (skips the test when there is no server)."""
    await require_server()
    schema = f"t_{secrets.token_hex(6)}"
    conn = await asyncpg.connect(SERVER_URL, timeout=10)
    try:
        await conn.execute(f'CREATE SCHEMA "{schema}"')
    finally:
        await conn.close()
    try:
        yield schema_url(schema)
    finally:
        conn = await asyncpg.connect(SERVER_URL, timeout=10)
        try:
            await conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
        finally:
            await conn.close()
