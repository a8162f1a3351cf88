"""An unusable data folder: one line naming IMAGINE_DATA_DIR, or a refusal before paying."""

from __future__ import annotations

import asyncio
import os
import shlex
import shutil
import sqlite3
from pathlib import Path

import pytest

from bot.data_dir import DataDirUnwritable
from bot.errors import ConfigError
from bot.models import ImageRequest, Requester
from bot.store import Store
from tests.fakes.app_fixtures import AppFactory
from tests.fakes.cli_process import COMMAND, start_cli, tmpfs_unavailable
from tests.fakes.openai_server import FakeOpenAI


async def refusal(db_path: Path) -> str:
    with pytest.raises(ConfigError) as refused:
        await Store.open(db_path)
    assert refused.value.variable == "IMAGINE_DATA_DIR"
    text = str(refused.value)
    assert text.startswith("IMAGINE_DATA_DIR: ")
    assert "\n" not in text
    return text


async def test_a_file_where_the_folder_should_be(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.write_text("notes")
    text = await refusal(data / "imagine.sqlite3")
    assert f"{data} is a file, not a folder" in text
    assert data.read_text() == "notes"


async def test_a_file_in_the_middle_of_the_path(tmp_path: Path) -> None:
    (tmp_path / "srv").write_text("")
    text = await refusal(tmp_path / "srv" / "data" / "imagine.sqlite3")
    assert "part of that path is a file" in text
    assert str(tmp_path / "srv" / "data") in text


async def test_a_damaged_database(tmp_path: Path) -> None:
    db_path = tmp_path / "data" / "imagine.sqlite3"
    db_path.parent.mkdir()
    db_path.write_bytes(os.urandom(8192))
    text = await refusal(db_path)
    assert f"{db_path} is damaged or not a database" in text
    assert "restore it from a backup, or move it aside" in text


async def test_another_applications_sqlite_file_is_left_untouched(tmp_path: Path) -> None:
    db_path = tmp_path / "data" / "imagine.sqlite3"
    db_path.parent.mkdir()
    other = sqlite3.connect(db_path)
    other.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT)")
    other.execute("PRAGMA user_version = 3")
    other.commit()
    other.close()
    text = await refusal(db_path)
    assert f"{db_path} is another application's SQLite database (tables: users)" in text
    check = sqlite3.connect(db_path)
    tables = [row[0] for row in check.execute("SELECT name FROM sqlite_master")]
    check.close()
    assert tables == ["users"]


async def test_a_folder_where_the_database_should_be(tmp_path: Path) -> None:
    db_path = tmp_path / "data" / "imagine.sqlite3"
    db_path.mkdir(parents=True)
    text = await refusal(db_path)
    assert f"{db_path} is a folder, not a database file" in text


async def test_a_damaged_database_is_one_line_from_any_command(tmp_path: Path) -> None:
    db_path = tmp_path / "data" / "imagine.sqlite3"
    db_path.parent.mkdir()
    db_path.write_bytes(b"SQLite format 3\0" + os.urandom(4096))
    process = await start_cli("usage", cwd=tmp_path)
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 1
    assert out == b""
    [line] = err.decode().splitlines()
    assert line.startswith(f"imagine-bot: IMAGINE_DATA_DIR: {db_path} is damaged")


async def run_with_read_only(
    tmp_path: Path, folder: Path, *args: str, **settings: str
) -> tuple[int, str, str]:
    """Run ``imagine-bot ARGS`` with an empty read-only filesystem mounted on ``folder``."""
    reason = tmpfs_unavailable(tmp_path / "probe")
    if reason:
        pytest.skip(reason)
    folder.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "IMAGINE_"))}
    env.update(IMAGINE_DATA_DIR=str(tmp_path / "data"), **settings)
    script = (
        f"mount -t tmpfs -o ro,size=64k tmpfs {shlex.quote(str(folder))} || exit 97\n"
        f"exec {shlex.join([*COMMAND, *args])}"
    )
    process = await asyncio.create_subprocess_exec(
        *("unshare", "-Urm", "sh", "-c", script),
        cwd=tmp_path,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None and process.returncode != 97, err
    return process.returncode, out.decode(), err.decode()


async def test_a_read_only_data_folder_is_one_line_naming_it(tmp_path: Path) -> None:
    data = tmp_path / "data"
    code, out, err = await run_with_read_only(tmp_path, data, "usage")
    assert code == 1
    assert out == ""
    assert err.splitlines() == [
        f"imagine-bot: IMAGINE_DATA_DIR: can't write to {data} (Read-only file system); make "
        "it writable by the user running imagine-bot, or point IMAGINE_DATA_DIR at another "
        "folder"
    ]


async def test_an_images_folder_that_cant_be_written_is_refused_before_the_call(
    openai_fake: FakeOpenAI, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    code, out, err = await run_with_read_only(
        tmp_path,
        data / "images",
        *("imagine", "a kite", "--user", "ann", "--out", str(tmp_path)),
        OPENAI_API_KEY=openai_fake.api_key,
        OPENAI_BASE_URL=openai_fake.base_url,
        IMAGINE_USER_LIMIT="1/hour",
    )
    assert code == 1
    assert out == ""
    assert err.splitlines()[-1] == (
        "imagine-bot: Can't make images right now: can't write to IMAGINE_DATA_DIR "
        f"({data}): Read-only file system. Nothing was charged; please tell the bot's operator."
    )
    assert "Traceback" not in err
    assert openai_fake.requests == []
    db = sqlite3.connect(data / "imagine.sqlite3")
    rows = db.execute("SELECT status, charged_images FROM jobs").fetchall()
    db.close()
    assert rows == [("failed", 0)]


async def test_the_service_checks_the_images_folder_before_paying(
    make_app: AppFactory, openai_fake: FakeOpenAI, tmp_path: Path
) -> None:
    app = await make_app(imagine_user_limit="1/hour")
    images = tmp_path / "data" / "images"
    shutil.rmtree(images, ignore_errors=True)
    images.write_text("not a folder")
    requester = Requester("slack", "U1", "T1", "C1")

    with pytest.raises(DataDirUnwritable) as refused:
        await app.service.run(ImageRequest(requester, "a kite", app.service.options()))

    assert "can't write to IMAGINE_DATA_DIR" in refused.value.user_message
    assert "Nothing was charged" in refused.value.user_message
    assert openai_fake.requests == []
    [row] = await app.store.usage_summary("slack:U1")
    assert row.images_today == 0
    images.unlink()
    result = await app.service.run(ImageRequest(requester, "a kite", app.service.options()))
    assert len(result.images) == 1
