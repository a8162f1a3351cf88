"""The API key reaches OpenAI exactly, and never a log line, a message or a traceback."""

from __future__ import annotations

import asyncio
import io
import logging
import traceback
from pathlib import Path

import pytest

from bot.config import Settings, load_settings
from bot.errors import ConfigError, ProviderMisconfigured
from bot.openai_errors import redact
from bot.provider import OpenAIImages
from bot.redact import protect_handlers
from tests.fakes.cli_process import start_cli
from tests.fakes.openai_client import Factory, Sleeps, request
from tests.fakes.openai_server import FakeOpenAI

KEY = "sk-proj-Zq81goodsecret0123456789abcd"


def pieces(secret: str) -> tuple[str, ...]:
    """The key and the parts of it that would still give it away."""
    return (secret, secret[8:-4], secret[8:20])


@pytest.fixture(autouse=True)
def _clean(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    for name in Settings.model_fields:
        monkeypatch.delenv(name.upper(), raising=False)


@pytest.mark.parametrize("padding", [" ", "\n", "\r\n", " \t\n"])
async def test_a_key_with_stray_whitespace_reaches_the_api_exactly(
    padding: str, openai_fake: FakeOpenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    openai_fake.api_key = KEY
    monkeypatch.setenv("OPENAI_API_KEY", KEY + padding)
    monkeypatch.setenv("OPENAI_BASE_URL", openai_fake.base_url)
    monkeypatch.setenv("OPENAI_ORG_ID", f" org-abc{padding}")
    monkeypatch.setenv("OPENAI_PROJECT_ID", f"proj_123{padding}")
    provider = OpenAIImages.from_settings(load_settings())
    try:
        result = await provider.create_images(request())
    finally:
        await provider.aclose()
    assert len(result.images) == 1
    [sent] = openai_fake.requests
    assert sent.headers["authorization"] == f"Bearer {KEY}"
    assert sent.headers["openai-organization"] == "org-abc"
    assert sent.headers["openai-project"] == "proj_123"


@pytest.mark.allow_error_logs
@pytest.mark.parametrize(
    "bad", [f"{KEY}\n", f"{KEY} ", f"{KEY}\r\n", f"sk-proj-Zq81\x00{KEY[12:]}"]
)
async def test_a_header_httpx_refuses_is_one_misconfiguration_without_the_key(
    bad: str,
    openai_fake: FakeOpenAI,
    make_provider: Factory,
    sleeps: Sleeps,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # built directly, past the settings' checks: the error mapping itself must hide the key
    caplog.set_level(logging.DEBUG)  # every logger, httpx and httpcore included
    with pytest.raises(ProviderMisconfigured) as caught:
        await make_provider(api_key=bad).create_images(request())
    assert openai_fake.requests == [] and sleeps.waits == []  # refused before sending; no retry
    error = caught.value
    assert "operator" in error.user_message
    assert "OPENAI_API_KEY" in error.detail and "header" in error.detail
    shown = "".join(traceback.format_exception(error)) + error.detail + error.user_message
    logged = caplog.text + "".join(str(r.args) for r in caplog.records)
    for piece in pieces(bad.strip()):
        assert piece not in shown
        assert piece not in logged
    said = [r for r in caplog.records if r.name.startswith("bot.")]
    assert [r.levelname for r in said] == ["ERROR"]
    assert "misconfigured" in said[0].getMessage()


def test_non_ascii_in_a_header_names_the_setting_not_the_value() -> None:
    with pytest.raises(ConfigError) as caught:
        OpenAIImages(api_key="sk-ok", project="proj_ünïcode")
    assert caught.value.variable == "OPENAI_PROJECT_ID"
    assert "ünïcode" not in str(caught.value)


@pytest.mark.parametrize(
    ("text", "hidden"),
    [
        ("Illegal header value b'Bearer sk-proj-Zq81goodsecret0123\\n'", "Zq81good"),
        ("Illegal header value b'Bearer abc.def-ghi_jkl'", "abc.def"),
        ("slack said invalid_auth for xoxb-1234-5678-AbCdEf", "1234-5678"),
        ("socket token xapp-1-A0123-456-abcdef", "A0123"),
        ("Authorization: basic dXNlcjpwYXNz", "dXNlcjpwYXNz"),
        ("token MTA1MjM0NTY3ODkwMTIzNDU2Nw.GhIjKl.abcdefghijklmnopqrstuvwxyz012 refused", "GhIjKl"),
    ],
)
def test_redact_hides_bearer_values_and_platform_tokens(text: str, hidden: str) -> None:
    assert hidden not in redact(text)


def test_redact_hides_a_given_secret_even_when_it_looks_like_nothing() -> None:
    assert redact("proxy refused key 'hunter2-plain'", "hunter2-plain") == (
        "proxy refused key '[redacted]'"
    )


# --- the installed command, as a user runs it -------------------------------------------


async def _run(cwd: Path, *args: str, **env: str) -> tuple[int, str, str]:
    process = await start_cli(*args, cwd=cwd, **env)
    out, err = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


@pytest.mark.parametrize("padding", [" ", "\n", " \r\n"])
async def test_the_command_works_with_a_padded_key_and_never_prints_it(
    padding: str, openai_fake: FakeOpenAI, tmp_path: Path
) -> None:
    openai_fake.api_key = KEY
    code, out, err = await _run(
        tmp_path,
        *("imagine", "a red fox"),
        OPENAI_API_KEY=KEY + padding,
        OPENAI_BASE_URL=openai_fake.base_url,
        IMAGINE_PARTIAL_IMAGES="0",
        IMAGINE_LOG_LEVEL="DEBUG",
    )
    assert code == 0, err
    assert [r.headers["authorization"] for r in openai_fake.requests] == [f"Bearer {KEY}"]
    assert "Traceback" not in err
    for piece in pieces(KEY):
        assert piece not in out + err


async def test_the_command_refuses_a_key_with_an_inner_space_in_one_line(
    openai_fake: FakeOpenAI, tmp_path: Path
) -> None:
    broken = KEY[:14] + " " + KEY[14:]
    code, out, err = await _run(
        tmp_path,
        *("imagine", "a red fox"),
        OPENAI_API_KEY=broken,
        OPENAI_BASE_URL=openai_fake.base_url,
        IMAGINE_LOG_LEVEL="DEBUG",
    )
    assert code == 1
    assert err.strip().splitlines() == [
        "imagine-bot: OPENAI_API_KEY: has a space inside it (character 15); "
        "copy it again without it"
    ]
    assert openai_fake.requests == []
    for piece in (*pieces(broken), KEY[:14], KEY[14:]):
        assert piece not in out + err


def test_handlers_given_the_filter_hide_every_configured_secret(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SLACK_SIGNING_SECRET", "plainsigningsecret42")
    monkeypatch.setenv("DISCORD_TOKEN", "MTIz.abc.def")
    stream = io.StringIO()
    target = logging.getLogger("tests.redaction")
    target.propagate = False
    handler = logging.StreamHandler(stream)
    target.addHandler(handler)
    try:
        protect_handlers(*load_settings().secret_values(), logger=target)
        target.warning("signature check with %s failed", "plainsigningsecret42")
        try:
            raise RuntimeError("login refused for MTIz.abc.def")
        except RuntimeError:
            target.exception("gateway")
    finally:
        target.removeHandler(handler)
    written = stream.getvalue()
    assert "plainsigningsecret42" not in written and "MTIz.abc.def" not in written
    assert "signature check with [redacted] failed" in written
    assert "RuntimeError: login refused for [redacted]" in written
