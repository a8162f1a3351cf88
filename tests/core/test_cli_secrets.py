"""The command line never prints a configured key or token, whatever fails."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from bot import cli
from bot.redact import LOG_FILTER

KEY = "sk-proj-abcdefghijklmnopqrstuvwxyz0123456789"
SLACK = "xoxb-1111-2222-abcdefabcdefabcdef"


@pytest.fixture
def settings_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    monkeypatch.setenv("SLACK_BOT_TOKEN", SLACK)
    monkeypatch.setenv("IMAGINE_DATA_DIR", str(tmp_path / "data"))
    yield
    for handler in logging.getLogger().handlers:
        handler.removeFilter(LOG_FILTER)


def test_an_unexpected_error_naming_a_key_prints_it_redacted(
    settings_env: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    async def broken(*_: object) -> int:
        raise RuntimeError(f"header refused: Bearer {KEY} / token {SLACK}")

    monkeypatch.setattr(cli, "_dispatch", broken)
    assert cli.main(["usage"]) == cli.EXIT_FAILED
    err = capsys.readouterr().err
    assert err.startswith("imagine-bot: unexpected error: RuntimeError: header refused")
    assert KEY not in err and KEY[8:] not in err
    assert SLACK not in err and "abcdefabcdef" not in err


def test_library_log_lines_lose_configured_tokens(
    settings_env: None, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    async def logs_a_token(*_: object) -> int:
        logging.getLogger("slack_sdk.web").warning("sending with token=%s", SLACK)
        logging.getLogger("discord.http").warning("key %s", KEY)
        return 0

    monkeypatch.setattr(cli, "_dispatch", logs_a_token)
    with caplog.at_level(logging.WARNING):
        assert cli.main(["usage"]) == 0
    text = "\n".join(record.getMessage() for record in caplog.records)
    assert "sending with token=" in text
    assert SLACK not in text and KEY not in text
