"""Settings that used to pass start-up and break every request are refused, or read as meant."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.config import Settings, load_settings
from bot.errors import ConfigError
from bot.sizes import check_size

SECRETS = (
    "OPENAI_API_KEY",
    "DISCORD_TOKEN",
    "SLACK_BOT_TOKEN",
    "SLACK_APP_TOKEN",
    "SLACK_SIGNING_SECRET",
)
IDS = ("OPENAI_ORG_ID", "OPENAI_PROJECT_ID")
URLS = ("OPENAI_BASE_URL", "DISCORD_API_BASE_URL", "SLACK_API_URL", "DISCORD_GATEWAY_URL")


@pytest.fixture(autouse=True)
def _clean(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No .env and no settings from the developer's shell."""
    monkeypatch.chdir(tmp_path)
    for name in Settings.model_fields:
        monkeypatch.delenv(name.upper(), raising=False)


def refused(monkeypatch: pytest.MonkeyPatch, variable: str, value: str) -> ConfigError:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError) as caught:
        load_settings()
    text = str(caught.value)
    assert "\n" not in text and "\r" not in text
    assert caught.value.variable == variable, text
    return caught.value


def loaded(monkeypatch: pytest.MonkeyPatch, **env: str) -> Settings:
    for variable, value in env.items():
        monkeypatch.setenv(variable, value)
    return load_settings()


def plain(settings: Settings, variable: str) -> str | None:
    value = getattr(settings, variable.lower())
    return value if value is None or isinstance(value, str) else value.get_secret_value()


# --- secrets and ids ---------------------------------------------------------------------


@pytest.mark.parametrize("variable", SECRETS + IDS)
@pytest.mark.parametrize("padding", [" ", "\n", "\r\n", "\t", "  \t\r\n"])
def test_surrounding_whitespace_is_dropped(
    variable: str, padding: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    value = "xoxb-12-ab_CD.ef" if variable.startswith("SLACK") else "sk-proj-Ab12_cd-34"
    settings = loaded(monkeypatch, **{variable: f"{padding}{value}{padding}"})
    assert plain(settings, variable) == value


def test_a_quoted_key_with_a_trailing_space_in_env_file_is_read_without_it(
    tmp_path: Path,
) -> None:
    (tmp_path / ".env").write_text('OPENAI_API_KEY="sk-proj-Zq81secret "\nOPENAI_ORG_ID=org-1 \n')
    settings = load_settings()
    assert settings.require_openai_key() == "sk-proj-Zq81secret"
    assert settings.openai_org_id == "org-1"


@pytest.mark.parametrize("variable", SECRETS + IDS)
def test_only_whitespace_counts_as_not_set(variable: str, monkeypatch: pytest.MonkeyPatch) -> None:
    assert plain(loaded(monkeypatch, **{variable: " \n"}), variable) is None


@pytest.mark.parametrize("variable", SECRETS + IDS)
@pytest.mark.parametrize(
    ("inner", "words"),
    [
        (" ", "space inside it"),
        ("\n", "line break"),
        ("\t", "line break, tab"),
        ("\x1b", "control character"),
        ("\u201d", "non-ASCII"),
        ("é", "non-ASCII"),
    ],
)
def test_an_inner_space_or_control_character_is_refused_without_the_value(
    variable: str, inner: str, words: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = f"sk-proj-Zq81se{inner}cret0123"
    error = refused(monkeypatch, variable, secret)
    assert words in error.problem
    assert "character 15" in error.problem  # where it is, so it can be found without showing it
    for part in (secret, "Zq81se", "cret0123"):
        assert part not in str(error)


def test_a_control_character_in_env_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text('SLACK_SIGNING_SECRET="abc\\x7fdef"\n'.replace("\\x7f", "\x7f"))
    with pytest.raises(ConfigError, match=r"^SLACK_SIGNING_SECRET: has a line break, tab or other"):
        load_settings()


def test_a_bearer_or_bot_prefix_gets_its_own_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    error = refused(monkeypatch, "OPENAI_API_KEY", "Bearer sk-proj-Zq81secret")
    assert error.problem == "starts with 'Bearer' and a space; put only the token itself"
    monkeypatch.delenv("OPENAI_API_KEY")
    error = refused(monkeypatch, "DISCORD_TOKEN", "Bot MTIz.abc.def")
    assert "starts with 'Bot'" in error.problem and "MTIz" not in str(error)


# --- sizes -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "words", "suggestion"),
    [
        ("13x13", "divisible by 16, so 13x13 won't work", "816x816"),
        ("1000x1000", "divisible by 16, so 1000x1000 won't work", "992x992"),
        ("640x640", "at least 655,360 pixels", "816x816"),
        ("4096x2304", "at most 3840", "3840x2160"),
        ("3072x768", "3 times as wide", None),
        ("3840x2560", "at most 8,294,400 pixels", None),
    ],
)
def test_a_size_gpt_image_2_refuses_stops_start_up_with_a_size_that_works(
    size: str, words: str, suggestion: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    error = refused(monkeypatch, "IMAGINE_SIZE", size)
    assert words in error.problem
    suggested = error.problem.rsplit("try IMAGINE_SIZE=", 1)[1]
    if suggestion:
        assert suggested == suggestion
    check_size("gpt-image-2", suggested)  # the provider takes what start-up suggests
    assert loaded(monkeypatch, IMAGINE_SIZE=suggested).imagine_size == suggested


@pytest.mark.parametrize(
    ("model", "size", "suggestion"),
    [
        ("gpt-image-1", "1000x1000", "1024x1024"),
        ("gpt-image-1-mini", "2048x1152", "1536x1024"),
        ("gpt-image-1", "1024x2048", "1024x1536"),
    ],
)
def test_older_models_are_told_the_standard_size_or_gpt_image_2(
    model: str, size: str, suggestion: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("IMAGINE_MODEL", model)
    error = refused(monkeypatch, "IMAGINE_SIZE", size)
    assert "custom sizes need gpt-image-2" in error.problem
    assert error.problem.endswith(f"try IMAGINE_SIZE={suggestion} or IMAGINE_MODEL=gpt-image-2")


@pytest.mark.parametrize("size", ["auto", "AUTO", "1024X1536", " 2048x1152 ", "3840x2160"])
def test_sizes_that_work_are_kept(size: str, monkeypatch: pytest.MonkeyPatch) -> None:
    assert loaded(monkeypatch, IMAGINE_SIZE=size).imagine_size == size.strip().lower()


# --- URLs --------------------------------------------------------------------------------


def _scheme(variable: str) -> str:
    return "wss" if variable == "DISCORD_GATEWAY_URL" else "https"


@pytest.mark.parametrize("variable", URLS)
@pytest.mark.parametrize(
    ("template", "words"),
    [
        ("{s}:///v1", "has no host name"),
        ("{s}://:8080/v1", "has no host name"),
        ("{s}://api.example.com:70000/v1", "port that is not a number from 1 to 65535"),
        ("{s}://api.example.com:0/v1", "port that is not a number from 1 to 65535"),
        ("{s}://api.example.com:99999999999/v1", "port that is not a number"),
        ("{s}://api.example.com:abc/v1", "port that is not a number"),
        ("{s}://api.exam ple.com/v1", "space or control character"),
        ("{s}://api.example.com/v1 /images", "space or control character"),
        ("{s}://api.example.com/\tv1", "space or control character"),
    ],
)
def test_a_url_that_cannot_work_is_refused(
    variable: str, template: str, words: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    error = refused(monkeypatch, variable, template.format(s=_scheme(variable)))
    assert words in error.problem


@pytest.mark.parametrize("variable", URLS)
def test_a_good_url_with_stray_whitespace_is_kept(
    variable: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"{_scheme(variable)}://127.0.0.1:8443/v1/"
    assert getattr(loaded(monkeypatch, **{variable: f" {url}\n"}), variable.lower()) == url


# --- the model and choices ---------------------------------------------------------------


@pytest.mark.parametrize("value", ["", "  ", "\n"])
def test_an_empty_model_is_refused(value: str, monkeypatch: pytest.MonkeyPatch) -> None:
    error = refused(monkeypatch, "IMAGINE_MODEL", value)
    assert error.problem == "is empty; use gpt-image-2 (the default) or remove the line"


def test_a_model_with_a_space_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    assert "space" in refused(monkeypatch, "IMAGINE_MODEL", "gpt image 2").problem


def test_model_names_are_read_like_openai_writes_them(monkeypatch: pytest.MonkeyPatch) -> None:
    assert loaded(monkeypatch, IMAGINE_MODEL=" GPT-Image-2\n").imagine_model == "gpt-image-2"
    proxy = loaded(monkeypatch, IMAGINE_MODEL="MyProxyModel", IMAGINE_PRICES="MyProxyModel=5,8,30")
    assert proxy.imagine_model == "MyProxyModel"


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("IMAGINE_QUALITY", "High", "high"),
        ("IMAGINE_QUALITY", " LOW ", "low"),
        ("IMAGINE_OUTPUT_FORMAT", "PNG", "png"),
        ("IMAGINE_OUTPUT_FORMAT", "jpg", "jpeg"),
        ("IMAGINE_OUTPUT_FORMAT", "JPG", "jpeg"),
        ("IMAGINE_OUTPUT_FORMAT", "WebP", "webp"),
        ("IMAGINE_MODERATION", "LOW", "low"),
        ("IMAGINE_LOG_LEVEL", "debug", "DEBUG"),
        ("IMAGINE_LOG_LEVEL", "Warning", "WARNING"),
        ("IMAGINE_LOG_LEVEL", "warn", "WARNING"),
    ],
)
def test_choices_take_any_case_and_the_usual_aliases(
    variable: str, value: str, expected: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert getattr(loaded(monkeypatch, **{variable: value}), variable.lower()) == expected


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("IMAGINE_QUALITY", "ultra"),
        ("IMAGINE_OUTPUT_FORMAT", "gif"),
        ("IMAGINE_MODERATION", "none"),
        ("IMAGINE_LOG_LEVEL", "loud"),
    ],
)
def test_unknown_choices_are_still_refused(
    variable: str, value: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    refused(monkeypatch, variable, value)


@pytest.mark.parametrize("blank", ["", "   "])
def test_a_blank_data_dir_is_the_default_folder(
    blank: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("IMAGINE_DATA_DIR", blank)
    assert load_settings(_env_file=None).imagine_data_dir == Path("data")


def test_an_admin_id_with_a_space_inside_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IMAGINE_ADMIN_USERS", "discord:1234, cli:ro ot")
    with pytest.raises(ConfigError) as caught:
        load_settings(_env_file=None)
    assert str(caught.value).startswith("IMAGINE_ADMIN_USERS: 'cli:ro ot' has a space")


def test_an_unreadable_budget_is_shown_a_dollar_example(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IMAGINE_USER_BUDGET", "0.05")
    with pytest.raises(ConfigError) as caught:
        load_settings(_env_file=None)
    assert str(caught.value) == (
        "IMAGINE_USER_BUDGET: can't read '0.05'; write it like '1/day' or '1/day,10/month'"
    )
