"""Where the shell commands read and write: --out, --previews and input files, checked first."""

from __future__ import annotations

import asyncio
import os
import shutil
import sqlite3
from pathlib import Path

import pytest
from PIL import Image

from tests.core.test_cli import imagine_bot, png
from tests.fakes.cli_process import run_cli_measured, start_cli
from tests.fakes.openai_server import FakeOpenAI

GIB = 1024**3


def _charged(data_dir: Path) -> list[tuple[str, int]]:
    database = data_dir / "imagine.sqlite3"
    if not database.exists():
        return []
    with sqlite3.connect(database) as db:
        return [tuple(r) for r in db.execute("SELECT status, charged_images FROM jobs")]


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (("--out", "notes.txt"), "Can't use --out notes.txt: it is a file, not a folder."),
        (
            ("--out", "notes.txt/pictures"),
            "Can't write to --out notes.txt/pictures: part of that path is a file, not a folder.",
        ),
        (
            ("--partials", "1", "--previews", "notes.txt"),
            "Can't use --previews notes.txt: it is a file, not a folder.",
        ),
    ],
)
async def test_a_folder_that_cant_be_written_is_refused_before_any_call(
    args: tuple[str, ...], words: str, openai_fake: FakeOpenAI, tmp_path: Path
) -> None:
    (tmp_path / "notes.txt").write_text("not a folder\n")
    ran = await imagine_bot("imagine", "a fox", *args, cwd=tmp_path, fake=openai_fake)
    assert ran.code == 1
    assert ran.err.startswith(f"imagine-bot: {words}")
    assert "Nothing was charged" in ran.err
    assert len(ran.err.strip().splitlines()) == 1 and "Traceback" not in ran.err
    assert ran.out == ""
    assert openai_fake.requests == []
    assert _charged(tmp_path / "data") == []


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write to any folder")
async def test_a_folder_without_write_permission_is_refused(
    openai_fake: FakeOpenAI, tmp_path: Path
) -> None:
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    ran = await imagine_bot("imagine", "a fox", "--out", "locked", cwd=tmp_path, fake=openai_fake)
    assert ran.code == 1
    assert ran.err.startswith("imagine-bot: Can't write to --out locked: Permission denied.")
    assert openai_fake.requests == []


async def test_a_missing_out_folder_is_created(openai_fake: FakeOpenAI, tmp_path: Path) -> None:
    ran = await imagine_bot(
        "imagine", "a fox", "--out", "new/deeper", cwd=tmp_path, fake=openai_fake
    )
    assert ran.code == 0, ran.err
    [line] = ran.out.splitlines()
    assert (tmp_path / line).parent == tmp_path / "new" / "deeper"
    # the writability probe leaves nothing behind
    assert sorted(p.name for p in (tmp_path / "new" / "deeper").iterdir()) == [Path(line).name]


async def test_images_made_but_not_writable_to_out_are_kept_and_listed(
    openai_fake: FakeOpenAI, tmp_path: Path
) -> None:
    openai_fake.answer_gate = asyncio.Event()
    process = await start_cli(
        *("imagine", "a fox", "-n", "2", "--out", "pictures", "--user", "kept"),
        cwd=tmp_path,
        OPENAI_API_KEY=openai_fake.api_key,
        OPENAI_BASE_URL=openai_fake.base_url,
        IMAGINE_PARTIAL_IMAGES="0",
    )
    await openai_fake.wait_for(timeout=30)
    # The folder passed the check; while the image is made it turns into a file.
    shutil.rmtree(tmp_path / "pictures")
    (tmp_path / "pictures").write_text("in the way\n")
    openai_fake.answer_gate.set()
    out, err = await asyncio.wait_for(process.communicate(), timeout=60)
    text = err.decode()

    assert process.returncode == 1
    paths = [tmp_path / line for line in out.decode().splitlines()]
    assert len(paths) == 2
    job_dir = paths[0].parent
    assert job_dir.parent == tmp_path / "data" / "images"
    for path in paths:
        assert path.parent == job_dir
        with Image.open(path) as image:
            assert image.format == "PNG"
    [line] = [line for line in text.splitlines() if line.startswith("imagine-bot:")]
    assert line == (
        "imagine-bot: couldn't write the images to --out pictures (part of that path is a file, "
        f"not a folder); they are kept in {job_dir} (paths above)"
    )
    assert "Traceback" not in text
    assert (tmp_path / "pictures").read_text() == "in the way\n"
    assert _charged(tmp_path / "data") == [("succeeded", 2)]  # made and delivered, so counted


@pytest.mark.parametrize("where", ["image", "mask"])
async def test_a_huge_input_is_refused_without_being_read(
    where: str, openai_fake: FakeOpenAI, tmp_path: Path
) -> None:
    (tmp_path / "small.png").write_bytes(png(64, 64))
    huge = tmp_path / "huge.png"
    with huge.open("wb") as handle:
        handle.truncate(2 * GIB)  # sparse: costs no disk
    files = ("huge.png",) if where == "image" else ("small.png", "--mask", "huge.png")
    ran = await asyncio.to_thread(
        run_cli_measured,
        *("edit", "make it blue", *files),
        cwd=tmp_path,
        OPENAI_API_KEY=openai_fake.api_key,
        OPENAI_BASE_URL=openai_fake.base_url,
    )
    assert ran.code == 1
    assert ran.err == "imagine-bot: Can't use huge.png: is 2048 MB; the limit is 25 MB\n"
    assert openai_fake.requests == []
    # Reading it would have cost 2 GB; the interpreter and its libraries need far less.
    assert ran.peak_rss_mb < 300, f"peak {ran.peak_rss_mb:.0f} MB"
