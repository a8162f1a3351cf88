"""IMAGINE_DATABASE_URL as a user sets it: commands use that database, or say plainly why not."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import pytest

from bot.config import load_settings
from bot.errors import ConfigError
from bot.models import ImageOptions, ImageRequest, Requester
from bot.store import Store
from tests.core.store_kit import png, result
from tests.fakes.cli_process import start_cli
from tests.fakes.postgres import require_server, schema_url


async def test_a_search_path_naming_no_schema_is_refused_in_plain_words(tmp_path: Path) -> None:
    await require_server()
    with pytest.raises(ConfigError) as caught:
        await Store.open(tmp_path / "data" / "x", database_url=schema_url("no_such_schema_here"))
    assert caught.value.variable == "IMAGINE_DATABASE_URL"
    assert "no schema of its search_path (no_such_schema_here) exists" in str(caught.value)


async def test_the_usage_command_reads_the_database_the_url_names(
    pg_url: str, tmp_path: Path
) -> None:
    store = await Store.open(tmp_path / "other" / "x", database_url=pg_url)
    try:
        who = Requester("slack", "U1", "T1", "C1", "Ann")
        job = await store.admit(ImageRequest(who, "a kite", ImageOptions()), estimated_cost=0.25)
        await store.fail(job.id, "held for the test", cost_usd=0.0)
        kept = await store.admit(ImageRequest(who, "a boat", ImageOptions()), estimated_cost=0.5)
        await store.finish(kept.id, result(png(b"boat")), 0.5)
    finally:
        await store.close()
    # Another process, another data folder: only the URL leads it to those jobs.
    process = await start_cli("usage", cwd=tmp_path, IMAGINE_DATABASE_URL=pg_url)
    out, err = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode == 0, err.decode()
    lines = out.decode().splitlines()
    assert lines[1].split() == ["slack:U1", "1", "0.5000", "1", "0.5000"]  # the refunded one: $0


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_a_server_out_of_reach_is_named_and_the_password_never_shown(
    tmp_path: Path,
) -> None:
    password = "s3cret-Pa55"
    port = _closed_port()
    url = f"postgresql://imagine:{password}@127.0.0.1:{port}/imagine"
    process = await start_cli("usage", cwd=tmp_path, IMAGINE_DATABASE_URL=url)
    out, err = await asyncio.wait_for(process.communicate(), timeout=60)
    said = (out + err).decode()
    assert process.returncode == 1
    where = f"127.0.0.1:{port}/imagine"
    assert said.startswith(
        f"imagine-bot: IMAGINE_DATABASE_URL: can't connect to PostgreSQL at {where}"
    )
    assert password not in said
    assert "Traceback" not in said


def test_a_url_that_is_not_postgresql_is_refused_by_the_settings(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(_env_file=None, imagine_database_url="mysql://root@localhost/imagine")
    assert caught.value.variable == "IMAGINE_DATABASE_URL"
    assert "must be a PostgreSQL URL" in str(caught.value)
