"""Settings that would break every request stop the installed command at start-up, in one line."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.fakes.cli_process import start_cli
from tests.fakes.openai_server import FakeOpenAI


async def _imagine(fake: FakeOpenAI, cwd: Path, **env: str) -> tuple[int, str, str]:
    settings = {
        "OPENAI_API_KEY": fake.api_key,
        "OPENAI_BASE_URL": fake.base_url,
        "IMAGINE_PARTIAL_IMAGES": "0",
    }
    process = await start_cli("imagine", "a red fox", cwd=cwd, **(settings | env))
    out, err = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


@pytest.mark.parametrize(
    ("variable", "value", "words"),
    [
        ("OPENAI_BASE_URL", "http://127.0.0.1:70000/v1", "has a port that is not a number"),
        ("OPENAI_BASE_URL", "https:///v1", "has no host name"),
        ("OPENAI_BASE_URL", "https://api.openai .com/v1", "has a space or control character"),
        ("DISCORD_API_BASE_URL", "https://discord.com:99999/api/v10", "has a port"),
        ("DISCORD_GATEWAY_URL", "wss://", "has no host name"),
        ("SLACK_API_URL", "https://slack .com/api/", "has a space"),
        ("IMAGINE_SIZE", "13x13", "so 13x13 won't work; try IMAGINE_SIZE=816x816"),
        ("IMAGINE_SIZE", "1000x1000", "so 1000x1000 won't work; try IMAGINE_SIZE=992x992"),
        ("OPENAI_ORG_ID", "org-\u00e9t\u00e9", "has a non-ASCII character (character 5)"),
        ("OPENAI_PROJECT_ID", "proj_1\nproj_2", "has a line break"),
        ("IMAGINE_MODEL", "", "is empty; use gpt-image-2"),
    ],
)
async def test_a_setting_that_breaks_every_request_stops_start_up(
    variable: str, value: str, words: str, openai_fake: FakeOpenAI, tmp_path: Path
) -> None:
    code, out, err = await _imagine(openai_fake, tmp_path, **{variable: value})
    assert code == 1
    [line] = err.strip().splitlines()
    assert line.startswith(f"imagine-bot: {variable}: ")
    assert words in line
    assert out == "" and openai_fake.requests == []


async def test_choices_in_any_case_and_jpg_reach_the_api_as_it_spells_them(
    openai_fake: FakeOpenAI, tmp_path: Path
) -> None:
    code, out, err = await _imagine(
        openai_fake,
        tmp_path,
        IMAGINE_QUALITY="High",
        IMAGINE_OUTPUT_FORMAT="JPG",
        IMAGINE_MODERATION="LOW",
        IMAGINE_MODEL="GPT-Image-2",
        IMAGINE_SIZE="1536X1024",
        IMAGINE_LOG_LEVEL="debug",
    )
    assert code == 0, err
    [sent] = openai_fake.requests
    assert sent.json is not None
    assert {
        k: sent.json[k] for k in ("quality", "output_format", "moderation", "model", "size")
    } == {
        "quality": "high",
        "output_format": "jpeg",
        "moderation": "low",
        "model": "gpt-image-2",
        "size": "1536x1024",
    }
    assert out.strip().endswith(".jpeg") or out.strip().endswith(".jpg")
