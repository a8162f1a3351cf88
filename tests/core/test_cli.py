"""The installed ``imagine-bot`` command, run as a real process against the fake OpenAI server."""

from __future__ import annotations

import asyncio
import io
import re
from collections.abc import Awaitable
from dataclasses import dataclass
from pathlib import Path

import pytest
from PIL import Image

from tests.fakes.cli_process import start_cli
from tests.fakes.openai_server import FakeOpenAI


@dataclass
class Ran:
    code: int
    out: str
    err: str


async def imagine_bot(*args: str, cwd: Path, fake: FakeOpenAI | None = None, **env: str) -> Ran:
    """Run the command with a clean environment (no secrets from the developer's shell)."""
    settings = {"IMAGINE_PARTIAL_IMAGES": "0"}
    if fake is not None:
        settings.update(OPENAI_API_KEY=fake.api_key, OPENAI_BASE_URL=fake.base_url)
    process = await start_cli(*args, cwd=cwd, **{**settings, **env})
    out, err = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode is not None
    return Ran(process.returncode, out.decode(), err.decode())


def png(width: int, height: int, mode: str = "RGB") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, (width, height), (10, 200, 30, 255) if mode == "RGBA" else "green").save(
        buffer, "PNG"
    )
    return buffer.getvalue()


async def test_imagine_writes_images_and_prints_their_paths(
    openai_fake: FakeOpenAI, tmp_path: Path
) -> None:
    ran = await imagine_bot(
        *("imagine", "a red fox", "--size", "1024x1536", "-n", "2", "--format", "webp"),
        *("--out", "pictures", "--partials", "1"),
        cwd=tmp_path,
        fake=openai_fake,
    )
    assert ran.code == 0, ran.err
    paths = ran.out.splitlines()
    assert len(paths) == 2
    for line in paths:
        path = tmp_path / line
        assert path.parent == tmp_path / "pictures"
        with Image.open(path) as image:
            assert image.format == "WEBP"
            assert image.size == (1024, 1536)
    # each preview says which image it belongs to
    assert "preview 1 of image 1 received" in ran.err
    assert "preview 1 of image 2 received" in ran.err
    assert "cost $" in ran.err
    assert "Traceback" not in ran.err
    body = openai_fake.requests[-1].json
    assert body is not None
    assert body["output_format"] == "webp"
    assert body["stream"] is True
    assert body["partial_images"] == 1


async def test_edit_sends_every_image_and_the_mask(openai_fake: FakeOpenAI, tmp_path: Path) -> None:
    (tmp_path / "a.png").write_bytes(png(256, 256))
    (tmp_path / "b.png").write_bytes(png(128, 128))
    mask = Image.new("RGBA", (256, 256), (0, 0, 0, 255))
    mask.paste((0, 0, 0, 0), (0, 0, 128, 128))
    mask.save(tmp_path / "mask.png")
    ran = await imagine_bot(
        *("edit", "put a hat on it", "a.png", "b.png", "--mask", "mask.png"),
        cwd=tmp_path,
        fake=openai_fake,
    )
    assert ran.code == 0, ran.err
    sent = openai_fake.requests[-1]
    assert sent.path == "/v1/images/edits"
    assert [f.field for f in sent.files].count("image[]") == 2
    assert [f.field for f in sent.files].count("mask") == 1
    assert sent.form["prompt"] == "put a hat on it"
    assert Path(tmp_path / ran.out.strip()).exists()


async def test_limit_holds_across_separate_runs(openai_fake: FakeOpenAI, tmp_path: Path) -> None:
    def as_alice(prompt: str) -> Awaitable[Ran]:
        return imagine_bot(
            *("imagine", prompt, "--user", "alice"),
            cwd=tmp_path,
            fake=openai_fake,
            IMAGINE_USER_LIMIT="1/hour",
        )

    first = await as_alice("one")
    assert first.code == 0, first.err
    second = await as_alice("two")  # a new process: the limit comes from the store
    assert second.code == 1
    assert second.out == ""
    assert second.err.startswith("imagine-bot: You've reached your limit of 1 image per hour")
    assert len(second.err.strip().splitlines()) == 1
    assert len(openai_fake.requests) == 1

    usage = await imagine_bot("usage", cwd=tmp_path)
    assert usage.code == 0
    [row] = [line for line in usage.out.splitlines() if line.startswith("cli:alice")]
    assert row.split()[1] == "1"


async def test_a_blocked_prompt_is_one_plain_line(openai_fake: FakeOpenAI, tmp_path: Path) -> None:
    openai_fake.fail_next("moderation_blocked", categories=["self-harm"])
    ran = await imagine_bot("imagine", "bad things", cwd=tmp_path, fake=openai_fake)
    assert ran.code == 1
    assert "safety system" in ran.err
    assert "self-harm" in ran.err
    assert "Traceback" not in ran.err


async def test_bad_usage_exits_2(tmp_path: Path) -> None:
    ran = await imagine_bot("imagine", "--quality", "ultra", "x", cwd=tmp_path)
    assert ran.code == 2
    assert "invalid choice" in ran.err


async def test_bad_setting_is_one_line_naming_it(tmp_path: Path) -> None:
    ran = await imagine_bot("usage", cwd=tmp_path, IMAGINE_USER_LIMIT="lots")
    assert ran.code == 1
    assert ran.err.startswith("imagine-bot: IMAGINE_USER_LIMIT: can't read 'lots'")
    assert len(ran.err.strip().splitlines()) == 1


async def test_missing_key_and_missing_tokens_say_what_to_set(tmp_path: Path) -> None:
    ran = await imagine_bot("imagine", "a fox", cwd=tmp_path)
    assert ran.code == 1
    assert ran.err.startswith("imagine-bot: OPENAI_API_KEY: not set")
    ran = await imagine_bot("run", cwd=tmp_path, OPENAI_API_KEY="sk-x")
    assert ran.code == 1
    assert "DISCORD_TOKEN" in ran.err
    assert "SLACK_BOT_TOKEN" in ran.err
    assert "Traceback" not in ran.err


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (("imagine", "x", "--size", "1000x1000"), "divisible by 16"),
        (("edit", "x", "missing.png"), "imagine-bot: Can't read missing.png"),
        (("edit", "x", "notes.txt"), "notes.txt: is a text file, not an image"),
    ],
)
async def test_a_bad_request_is_refused_before_any_call(
    args: tuple[str, ...], words: str, openai_fake: FakeOpenAI, tmp_path: Path
) -> None:
    (tmp_path / "notes.txt").write_text("not a picture\n")
    ran = await imagine_bot(*args, cwd=tmp_path, fake=openai_fake)
    assert ran.code == 1
    assert words in ran.err
    assert len(ran.err.strip().splitlines()) == 1 and "Traceback" not in ran.err
    assert openai_fake.requests == []


async def test_every_option_reaches_the_api_as_the_os_user(
    openai_fake: FakeOpenAI, tmp_path: Path
) -> None:
    ran = await imagine_bot(
        *("imagine", "a paper crane", "--quality", "low", "--background", "transparent"),
        *("--format", "webp", "--compression", "40", "-n", "1"),
        cwd=tmp_path,
        fake=openai_fake,
        LOGNAME="bob",
        USER="bob",
        OPENAI_ORG_ID="org-cli",
        OPENAI_PROJECT_ID="proj_cli",
    )
    assert ran.code == 0, ran.err
    headers = openai_fake.requests[-1].headers
    assert (headers["openai-organization"], headers["openai-project"]) == ("org-cli", "proj_cli")
    body = openai_fake.requests[-1].json
    assert body is not None
    assert (body["quality"], body["background"], body["output_format"]) == (
        "low",
        "transparent",
        "webp",
    )
    assert (body["output_compression"], body["n"]) == (40, 1)
    [line] = ran.out.splitlines()
    assert (tmp_path / line).parent == tmp_path  # --out defaults to the current directory
    # progress goes to stderr, each line with the time since the start
    assert re.search(r"^\[\s*\d+\.\ds\] generating \(job ", ran.err, re.MULTILINE)
    assert re.search(r"^\[\s*\d+\.\ds\] done in \d+\.\ds, cost \$0\.0\d{3}", ran.err, re.MULTILINE)

    usage = await imagine_bot("usage", "--user", "cli:bob", cwd=tmp_path)
    assert usage.code == 0, usage.err
    header, row = usage.out.splitlines()
    assert header.split() == ["user", "today", "$", "today", "month", "$", "month"]
    user, images_today, cost_today, images_month, cost_month = row.split()
    assert (user, images_today, images_month) == ("cli:bob", "1", "1")
    assert float(cost_today) == float(cost_month) > 0
    bare = await imagine_bot("usage", "--user", "bob", cwd=tmp_path)
    assert bare.out == usage.out  # a bare name means the CLI user, as for imagine --user
    nobody = await imagine_bot("usage", "--user", "cli:nobody", cwd=tmp_path)
    assert nobody.out.splitlines()[1].split() == ["cli:nobody", "0", "0.0000", "0", "0.0000"]


async def test_a_wrong_key_says_what_to_fix_and_never_prints_the_key(
    openai_fake: FakeOpenAI, tmp_path: Path
) -> None:
    wrong = "sk-proj-Wr0ngsecret9876543210wxyz"
    ran = await imagine_bot(
        "imagine", "a fox", cwd=tmp_path, fake=openai_fake, OPENAI_API_KEY=wrong
    )
    assert ran.code == 1
    assert [r.status for r in openai_fake.requests] == [401]
    assert "OPENAI_API_KEY" in ran.err  # the log line for the operator
    last = ran.err.strip().splitlines()[-1]
    assert last.startswith("imagine-bot: the image service refused the settings (")
    assert last.endswith("check OPENAI_API_KEY). Nothing was charged.")
    assert "Traceback" not in ran.err
    output = ran.out + ran.err
    assert wrong not in output and wrong[8:-4] not in output
    assert "wxyz" not in output  # the API echoes the last four characters; they are hidden too


async def test_choices_take_any_case_and_jpg_for_jpeg(
    openai_fake: FakeOpenAI, tmp_path: Path
) -> None:
    ran = await imagine_bot(
        *("imagine", "a fox", "--quality", "HIGH", "--format", "JPG", "--background", "Opaque"),
        *("--size", "1024X1024"),
        cwd=tmp_path,
        fake=openai_fake,
    )
    assert ran.code == 0, ran.err
    body = openai_fake.requests[-1].json
    assert body is not None
    assert (body["quality"], body["output_format"], body["background"], body["size"]) == (
        "high",
        "jpeg",
        "opaque",
        "1024x1024",
    )
    [line] = ran.out.splitlines()
    assert line.endswith(".jpg")
    with Image.open(tmp_path / line) as image:
        assert image.format == "JPEG"
    # the platform to run, too: refused only because its token is missing
    run = await imagine_bot("run", "Slack", cwd=tmp_path, OPENAI_API_KEY="sk-x")
    assert run.code == 1
    assert run.err.startswith("imagine-bot: SLACK_BOT_TOKEN: not set")
