"""Settings: parsing, defaults, and one clear line for a bad value."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from bot.config import Settings, WindowRule, load_settings, parse_rules
from bot.errors import ConfigError


def test_limit_rules_are_parsed_with_their_windows() -> None:
    assert parse_rules("5/minute, 100/day", whole=True) == (
        WindowRule(5, 60, "minute"),
        WindowRule(100, 86400, "day"),
    )
    assert parse_rules("20 per hour", whole=True) == (WindowRule(20, 3600, "hour"),)
    assert parse_rules("$1.50/day", whole=False) == (WindowRule(1.5, 86400, "day"),)
    assert parse_rules("", whole=True) == ()


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("20", "write it like '20/hour'"),
        ("20/fortnight", "unknown unit 'fortnight'"),
        ("2.5/hour", "not a whole number of images"),
        ("0/hour", "must be above zero"),
    ],
)
def test_bad_limit_stops_start_up_naming_the_variable(
    text: str, problem: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("IMAGINE_USER_LIMIT", text)
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert str(caught.value).startswith("IMAGINE_USER_LIMIT: ")
    assert problem in str(caught.value)
    assert "\n" not in str(caught.value)


def test_env_file_and_lists(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text(
        "OPENAI_API_KEY=sk-from-file\nIMAGINE_ADMIN_USERS=1234, slack:U99\n"
        "DISCORD_GUILD_IDS=1,2\nIMAGINE_USER_LIMIT=5/minute,100/day\n"
    )
    settings = load_settings()
    assert settings.require_openai_key() == "sk-from-file"
    assert settings.is_admin("discord", "1234")
    assert settings.is_admin("slack", "U99")
    assert not settings.is_admin("discord", "U99")
    assert settings.discord_guild_ids == [1, 2]
    assert [rule.amount for rule in settings.user_limits] == [5, 100]
    assert settings.database_path == Path("data/imagine.sqlite3")


def test_missing_key_is_named(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(ConfigError, match=r"^OPENAI_API_KEY: not set"):
        Settings(_env_file=None).require_openai_key()  # type: ignore[call-arg]


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("IMAGINE_PARTIAL_IMAGES", "5", "IMAGINE_PARTIAL_IMAGES: "),
        ("IMAGINE_SIZE", "huge", "IMAGINE_SIZE: use 'auto' or WIDTHxHEIGHT"),
        ("OPENAI_BASE_URL", "api.openai.com", "OPENAI_BASE_URL: must start with http"),
        ("IMAGINE_QUALITY", "ultra", "IMAGINE_QUALITY: "),
    ],
)
def test_other_bad_values_name_their_variable(
    variable: str, value: str, expected: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert str(caught.value).startswith(expected)


_ROOT = Path(__file__).resolve().parents[2]


def test_every_setting_is_documented_in_env_example_and_readme() -> None:
    variables = {name.upper() for name in Settings.model_fields}
    example = _ROOT.joinpath(".env.example").read_text()
    in_example = set(re.findall(r"^#?([A-Z][A-Z0-9_]+)=", example, re.MULTILINE))
    readme = _ROOT.joinpath("README.md").read_text().splitlines()
    in_readme = {
        name
        for line in readme
        if line.startswith("| `")
        for name in re.findall(r"`([A-Z][A-Z0-9_]+)`", line.split("|")[1])
    }
    assert sorted(variables - in_example) == [], ".env.example misses these settings"
    assert sorted(variables - in_readme) == [], "README's settings table misses these settings"
    assert sorted(in_example - variables) == [], ".env.example names settings that don't exist"
    # each variable in .env.example has a comment line right above it saying what it is
    lines = example.splitlines()
    for index, line in enumerate(lines):
        if re.match(r"^#?[A-Z][A-Z0-9_]+=", line):
            above = lines[index - 1]
            assert above.startswith("# ") or re.match(r"^#?[A-Z][A-Z0-9_]+=", above), line


def test_defaults_match_what_env_example_says(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    for name in Settings.model_fields:
        monkeypatch.delenv(name.upper(), raising=False)
    defaults = Settings(_env_file=None)  # type: ignore[call-arg]
    assert defaults.openai_base_url == "https://api.openai.com/v1"
    assert defaults.imagine_model == "gpt-image-2"
    assert defaults.imagine_data_dir == Path("data")
    assert defaults.imagine_max_concurrency == 4
    assert defaults.openai_org_id is None and defaults.openai_project_id is None
    assert defaults.user_limits == () and defaults.imagine_admin_users == []
    example = _ROOT.joinpath(".env.example").read_text()
    shown = re.findall(r"^#([A-Z][A-Z0-9_]+)=(.+)$", example, re.MULTILINE)
    assert len(shown) > 20
    for variable, value in shown:
        field = variable.lower()
        written = getattr(Settings(_env_file=None, **{field: value}), field)  # type: ignore[call-arg]
        assert written == getattr(defaults, field), f"{variable}: .env.example shows {value}"
