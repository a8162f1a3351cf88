"""Settings from the environment and ``.env`` (pydantic-settings), validated at start-up."""

from __future__ import annotations

import functools
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import unquote, urlsplit

from pydantic import (
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from bot.errors import ConfigError
from bot.pricing import Prices, parse_prices, unpriced_problem
from bot.sizes import size_problem

WINDOW_SECONDS = {
    "minute": 60,
    "hour": 3600,
    "day": 86400,
    "week": 7 * 86400,
    "month": 30 * 86400,
}
_WINDOW_ALIASES = {
    "min": "minute",
    "minutes": "minute",
    "m": "minute",
    "h": "hour",
    "hours": "hour",
    "hr": "hour",
    "d": "day",
    "days": "day",
    "w": "week",
    "weeks": "week",
    "months": "month",
}
_RULE = re.compile(r"^\s*\$?(\d+(?:\.\d+)?)\s*(?:/|per)\s*([a-z]+)\s*$", re.IGNORECASE)


@dataclass(frozen=True)
class WindowRule:
    """``amount`` per window of ``seconds`` (``label`` is the unit's name)."""

    amount: float
    seconds: int
    label: str


# Every admission reads its scopes' rules from their text (the settings, an admin's rule):
# the same few strings, parsed once each.
@functools.lru_cache(maxsize=1024)
def parse_rules(text: str | None, *, whole: bool) -> tuple[WindowRule, ...]:
    """Parse ``'5/minute,100/day'``; ``whole`` demands integer amounts (image counts)."""
    if text is None or not text.strip():
        return ()
    rules = []
    for part in text.split(","):
        match = _RULE.match(part)
        if not match:
            raise ValueError(
                f"can't read {part.strip()!r}; write it like "
                + ("'20/hour' or '5/minute,100/day'" if whole else "'1/day' or '1/day,10/month'")
            )
        amount_text, unit = match.group(1), match.group(2).lower()
        unit = _WINDOW_ALIASES.get(unit, unit)
        if unit not in WINDOW_SECONDS:
            raise ValueError(f"unknown unit {match.group(2)!r}; use {', '.join(WINDOW_SECONDS)}")
        if whole and "." in amount_text:
            raise ValueError(f"{amount_text!r} is not a whole number of images")
        amount = float(amount_text)
        if amount <= 0:
            raise ValueError(f"{part.strip()!r} must be above zero")
        rules.append(WindowRule(amount, WINDOW_SECONDS[unit], unit))
    return tuple(rules)


_PROMPT_PRICE_EXAMPLE = "IMAGINE_PROMPT_PRICE=0.40,1.60 (input,output dollars per million tokens)"


def parse_prompt_price(text: str) -> tuple[float, float]:
    """Parse ``'0.40,1.60'`` into (input, output) dollars per million tokens."""
    parts = [part.strip().removeprefix("$") for part in text.split(",")]
    try:
        values = tuple(float(part) for part in parts)
    except ValueError:
        values = ()
    if len(values) != 2 or not all(math.isfinite(v) for v in values):
        raise ValueError(
            f"can't read {text.strip()!r}; write two prices, input then output, in dollars per "
            "million tokens, like 0.40,1.60"
        )
    if min(values) < 0:
        raise ValueError(f"{text.strip()!r} has a price below zero; write it like 0.40,1.60")
    return values[0], values[1]


def _split_list(value: object) -> object:
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


_SIZE = re.compile(r"^(auto|\d+x\d+)$")
# Secrets and ids go into HTTP headers: printable ASCII without spaces is all they can hold.
_TOKEN = re.compile(r"^[\x21-\x7e]+$")
_ALIASES = {"jpg": "jpeg", "warn": "WARNING"}


def _strip(value: object) -> object:
    """Drop surrounding whitespace (a stray space or a line break from a hand-edited .env)."""
    if isinstance(value, SecretStr):
        value = value.get_secret_value()
    if isinstance(value, str):
        value = value.strip()
        return value or None
    return value


def token_problem(value: str) -> str | None:
    """Why ``value`` can't be a key, token or id (never quoting it), or None when it can."""
    if _TOKEN.match(value):
        return None
    first, _, rest = value.partition(" ")
    if rest and first.lower() in ("bearer", "bot"):
        return f"starts with {first!r} and a space; put only the token itself"
    for position, char in enumerate(value, start=1):
        if char == " ":
            return f"has a space inside it (character {position}); copy it again without it"
        if not char.isascii():
            return (
                f"has a non-ASCII character (character {position}), such as a curly quote; "
                "copy it again as plain text"
            )
        if not char.isprintable() or char.isspace():
            return (
                f"has a line break, tab or other control character inside it (character "
                f"{position}); copy it again on one line"
            )
    return "is not a valid token"


def url_problem(value: str, schemes: tuple[str, ...]) -> str | None:
    """Why ``value`` can't be used as a URL with one of ``schemes``, or None."""
    example = f"{schemes[-1]}://host/path"
    if not value.startswith(tuple(f"{scheme}://" for scheme in schemes)):
        return f"must start with {' or '.join(f'{scheme}://' for scheme in schemes)}"
    if re.search(r"[\s\x00-\x1f\x7f]", value):
        return f"has a space or control character inside it; write it like {example}"
    parts = urlsplit(value)
    try:
        port = parts.port  # raises for a port that is not a number up to 65535
    except ValueError:
        port = -1
    if port is not None and not 1 <= port <= 65535:
        return "has a port that is not a number from 1 to 65535"
    if not parts.hostname:
        return f"has no host name; write it like {example}"
    return None


class Settings(BaseSettings):
    """Every setting; the environment variable is the field name in upper case."""

    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", case_sensitive=False
    )

    # --- OpenAI -------------------------------------------------------------------------
    openai_api_key: SecretStr | None = None
    openai_base_url: str = "https://api.openai.com/v1"
    openai_org_id: str | None = None
    openai_project_id: str | None = None
    openai_timeout: float = Field(600.0, gt=0)
    openai_max_retries: int = Field(2, ge=0, le=10)

    # --- images -------------------------------------------------------------------------
    imagine_model: str = "gpt-image-2"
    imagine_size: str = "auto"
    imagine_quality: Literal["auto", "low", "medium", "high"] = "auto"
    imagine_output_format: Literal["png", "jpeg", "webp"] = "png"
    imagine_moderation: Literal["auto", "low"] = "auto"
    imagine_partial_images: int = Field(2, ge=0, le=3)
    imagine_max_images: int = Field(4, ge=1, le=10)
    imagine_max_attachment_mb: float = Field(25.0, gt=0, le=50)
    imagine_max_input_pixels: int = Field(40_000_000, gt=0)
    imagine_prices: str | None = None
    imagine_prompt_model: str | None = None
    imagine_prompt_price: str | None = None

    # --- limits and running -------------------------------------------------------------
    imagine_data_dir: Path = Path("./data")
    imagine_user_limit: str | None = None
    imagine_user_budget: str | None = None
    imagine_channel_limit: str | None = None
    imagine_channel_budget: str | None = None
    imagine_team_limit: str | None = None
    imagine_team_budget: str | None = None
    imagine_total_limit: str | None = None
    imagine_total_budget: str | None = None
    imagine_user_queue: int = Field(3, ge=1, le=100_000)
    imagine_keep_images_days: float = Field(90.0, ge=0)
    imagine_max_data_gb: float | None = Field(None, gt=0)
    imagine_max_concurrency: int = Field(4, ge=1, le=256)
    imagine_admin_users: Annotated[list[str], NoDecode] = Field(default_factory=list)
    imagine_progress_interval: float = Field(1.0, ge=0)
    imagine_log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    imagine_http_port: int = Field(3000, ge=1, le=65535)
    imagine_metrics_port: int | None = Field(None, ge=1, le=65535)
    imagine_log_format: Literal["text", "json"] = "text"
    # postgresql://user:password@host:port/database; unset: the SQLite file in the data folder.
    imagine_database_url: SecretStr | None = None
    # How often a running bot looks for jobs another instance left unfinished (it died).
    imagine_recovery_check_s: float = Field(15.0, gt=0, le=3600)

    # --- Discord ------------------------------------------------------------------------
    discord_token: SecretStr | None = None
    discord_api_base_url: str = "https://discord.com/api/v10"
    discord_gateway_url: str = "wss://gateway.discord.gg/"
    discord_message_content_intent: bool = False
    discord_guild_ids: Annotated[list[int], NoDecode] = Field(default_factory=list)
    discord_allowed_channels: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # Sharding: the total number of shards, and which of them this process runs (all if unset).
    discord_shard_count: int | None = Field(None, ge=1, le=4096)
    discord_shard_ids: Annotated[list[int], NoDecode] = Field(default_factory=list)

    # --- Slack --------------------------------------------------------------------------
    slack_bot_token: SecretStr | None = None
    slack_app_token: SecretStr | None = None
    slack_signing_secret: SecretStr | None = None
    slack_api_url: str = "https://slack.com/api/"
    slack_allowed_channels: Annotated[list[str], NoDecode] = Field(default_factory=list)

    @field_validator(
        "imagine_admin_users",
        "discord_guild_ids",
        "discord_shard_ids",
        "discord_allowed_channels",
        "slack_allowed_channels",
        mode="before",
    )
    @classmethod
    def _comma_list(cls, value: object) -> object:
        return _split_list(value)

    @field_validator("imagine_admin_users")
    @classmethod
    def _check_admins(cls, value: list[str]) -> list[str]:
        for user in value:
            if not _TOKEN.match(user):
                raise ValueError(
                    f"{user!r} has a space or control character inside it; write ids like "
                    "1234, discord:1234, slack:U0123 or cli:alice, separated by commas"
                )
        return value

    @field_validator("imagine_data_dir", mode="before")
    @classmethod
    def _blank_is_default(cls, value: object) -> object:
        # A line "IMAGINE_DATA_DIR=" in .env means "not set", not "the current folder".
        if isinstance(value, str):
            value = value.strip()
            return value or "./data"
        return value

    @field_validator(
        "openai_api_key",
        "openai_org_id",
        "openai_project_id",
        "discord_token",
        "slack_bot_token",
        "slack_app_token",
        "slack_signing_secret",
        mode="before",
    )
    @classmethod
    def _strip_secret(cls, value: object) -> object:
        return _strip(value)

    @field_validator(
        "openai_api_key",
        "discord_token",
        "slack_bot_token",
        "slack_app_token",
        "slack_signing_secret",
    )
    @classmethod
    def _check_secret(cls, value: SecretStr | None) -> SecretStr | None:
        problem = token_problem(value.get_secret_value()) if value is not None else None
        if problem:
            raise ValueError(problem)
        return value

    @field_validator("openai_org_id", "openai_project_id")
    @classmethod
    def _check_id(cls, value: str | None) -> str | None:
        problem = token_problem(value) if value is not None else None
        if problem:
            raise ValueError(problem.replace("token", "id"))
        return value

    @field_validator(
        "imagine_quality", "imagine_output_format", "imagine_moderation", mode="before"
    )
    @classmethod
    def _choice(cls, value: object) -> object:
        if isinstance(value, str):
            value = value.strip().lower()
            return _ALIASES.get(value, value)
        return value

    @field_validator("imagine_log_level", mode="before")
    @classmethod
    def _level(cls, value: object) -> object:
        if isinstance(value, str):
            value = value.strip().lower()
            return _ALIASES.get(value, value).upper()
        return value

    @field_validator("imagine_metrics_port", mode="before")
    @classmethod
    def _blank_is_off(cls, value: object) -> object:
        # "IMAGINE_METRICS_PORT=" in .env leaves the metrics server off.
        if isinstance(value, str) and not value.strip():
            return None
        return value

    @field_validator("imagine_database_url", mode="before")
    @classmethod
    def _database_url(cls, value: object) -> object:
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        if not isinstance(value, str):
            return value
        value = value.strip()
        if not value:
            return None  # "IMAGINE_DATABASE_URL=" keeps the SQLite file
        scheme = value.split("://", 1)[0].lower() if "://" in value else ""
        if scheme not in ("postgresql", "postgres"):
            raise ValueError(
                "must be a PostgreSQL URL (postgresql://user:password@host:5432/database); "
                "leave it unset to keep the SQLite file in IMAGINE_DATA_DIR"
            )
        return value

    @field_validator("discord_shard_count", mode="before")
    @classmethod
    def _blank_shards(cls, value: object) -> object:
        if isinstance(value, str) and not value.strip():
            return None
        return value

    @model_validator(mode="after")
    def _shards_fit(self) -> Settings:
        ids = self.discord_shard_ids
        if ids and self.discord_shard_count is None:
            raise ValueError(
                "DISCORD_SHARD_IDS needs DISCORD_SHARD_COUNT (the total number of shards)"
            )
        count = self.discord_shard_count
        bad = [i for i in ids if count is not None and not 0 <= i < count]
        if bad:
            raise ValueError(
                f"DISCORD_SHARD_IDS: shard {bad[0]} is outside 0..{(count or 1) - 1} "
                f"(DISCORD_SHARD_COUNT={count})"
            )
        if len(set(ids)) != len(ids):
            raise ValueError("DISCORD_SHARD_IDS lists a shard twice")
        return self

    @field_validator("imagine_log_format", mode="before")
    @classmethod
    def _log_format(cls, value: object) -> object:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("imagine_model", mode="before")
    @classmethod
    def _check_model(cls, value: object) -> object:
        if not isinstance(value, str):
            return value
        value = value.strip()
        if not value:
            raise ValueError("is empty; use gpt-image-2 (the default) or remove the line")
        if token_problem(value):
            raise ValueError(
                "has a space or control character; write a model name like gpt-image-2"
            )
        # OpenAI's model names are lower case; a proxy's own names are kept as written
        return value.lower() if value.lower().startswith("gpt-image") else value

    @field_validator("imagine_prices", mode="before")
    @classmethod
    def _check_prices(cls, value: object) -> object:
        value = _strip(value)
        if isinstance(value, str):
            parse_prices(value)
        return value

    @model_validator(mode="after")
    def _model_needs_price(self) -> Settings:
        # Without a price, budgets and the usage report would count another model's prices.
        # A ConfigError passes through pydantic untouched, so it names IMAGINE_MODEL.
        problem = unpriced_problem(self.imagine_model, Prices.parse(self.imagine_prices))
        if problem is not None:
            raise ConfigError("IMAGINE_MODEL", problem)
        return self

    @field_validator(
        "imagine_user_limit", "imagine_channel_limit", "imagine_team_limit", "imagine_total_limit"
    )
    @classmethod
    def _check_limit(cls, value: str | None) -> str | None:
        parse_rules(value, whole=True)
        return value

    @field_validator(
        "imagine_user_budget",
        "imagine_channel_budget",
        "imagine_team_budget",
        "imagine_total_budget",
    )
    @classmethod
    def _check_budget(cls, value: str | None) -> str | None:
        parse_rules(value, whole=False)
        return value

    @field_validator("imagine_size")
    @classmethod
    def _check_size(cls, value: str, info: ValidationInfo) -> str:
        value = value.strip().lower().replace(" ", "").replace("×", "x")
        if not _SIZE.match(value):
            raise ValueError("use 'auto' or WIDTHxHEIGHT such as 1024x1024")
        model = info.data.get("imagine_model")
        problem = size_problem(model, value) if isinstance(model, str) else None
        if problem is not None:
            reason = problem.reason[0].lower() + problem.reason[1:]
            advice = f"; try IMAGINE_SIZE={problem.suggestion}" if problem.suggestion else ""
            if problem.custom_needs_gpt_image_2:
                advice += " or IMAGINE_MODEL=gpt-image-2"
            raise ValueError(f"{reason}{advice}")
        return value

    @field_validator("openai_base_url", "discord_api_base_url", "slack_api_url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        value = value.strip()
        problem = url_problem(value, ("http", "https"))
        if problem:
            raise ValueError(problem)
        return value

    @field_validator("discord_gateway_url")
    @classmethod
    def _check_ws_url(cls, value: str) -> str:
        value = value.strip()
        problem = url_problem(value, ("ws", "wss"))
        if problem:
            raise ValueError(problem)
        return value

    @field_validator("imagine_prompt_model", mode="before")
    @classmethod
    def _check_prompt_model(cls, value: object) -> object:
        # "IMAGINE_PROMPT_MODEL=" in .env turns prompt help off
        value = _strip(value)
        if isinstance(value, str) and token_problem(value):
            raise ValueError(
                "has a space or control character; write a chat model name like gpt-4.1-mini"
            )
        return value

    @field_validator("imagine_prompt_price", mode="before")
    @classmethod
    def _check_prompt_price(cls, value: object) -> object:
        value = _strip(value)
        if isinstance(value, str):
            parse_prompt_price(value)
        return value

    @model_validator(mode="after")
    def _prompt_model_needs_price(self) -> Settings:
        # A ConfigError passes through pydantic untouched, so it names the missing variable
        # (a ValueError here would be reported against the settings as a whole).
        if self.imagine_prompt_model is not None and self.imagine_prompt_price is None:
            raise ConfigError(
                "IMAGINE_PROMPT_PRICE",
                f"not set, but IMAGINE_PROMPT_MODEL={self.imagine_prompt_model} needs its price "
                f"to count what prompt help spends; add a line like {_PROMPT_PRICE_EXAMPLE}, "
                "or empty IMAGINE_PROMPT_MODEL to turn prompt help off",
            )
        return self

    # --- derived ------------------------------------------------------------------------
    @property
    def user_limits(self) -> tuple[WindowRule, ...]:
        """Parsed ``IMAGINE_USER_LIMIT``."""
        return parse_rules(self.imagine_user_limit, whole=True)

    @property
    def user_budgets(self) -> tuple[WindowRule, ...]:
        """Parsed ``IMAGINE_USER_BUDGET`` (dollars)."""
        return parse_rules(self.imagine_user_budget, whole=False)

    @property
    def max_attachment_bytes(self) -> int:
        """The per-file input cap in bytes."""
        return int(self.imagine_max_attachment_mb * 1024 * 1024)

    @property
    def database_path(self) -> Path:
        """Where the SQLite file lives."""
        return self.imagine_data_dir / "imagine.sqlite3"

    def is_admin(self, platform: str, user_id: str) -> bool:
        """True when the user is exempt from limits (listed bare or as ``platform:id``)."""
        admins = set(self.imagine_admin_users)
        return user_id in admins or f"{platform}:{user_id}" in admins

    def secret_values(self) -> tuple[str, ...]:
        """Every key and token that is set, for redaction from logs."""
        fields = (
            self.openai_api_key,
            self.discord_token,
            self.slack_bot_token,
            self.slack_app_token,
            self.slack_signing_secret,
        )
        values = [field.get_secret_value() for field in fields if field is not None]
        password = database_password(self.imagine_database_url)
        if password:
            values.append(password)
        return tuple(values)

    def require_openai_key(self) -> str:
        """The API key, or a ConfigError naming the variable."""
        if self.openai_api_key is None:
            raise ConfigError("OPENAI_API_KEY", "not set; put your OpenAI API key in .env")
        return self.openai_api_key.get_secret_value()


def database_password(url: SecretStr | None) -> str | None:
    """The password inside a database URL, if it has one (redacted from logs like a key)."""
    if url is None:
        return None
    try:
        password = urlsplit(url.get_secret_value()).password
    except ValueError:
        return None
    return unquote(password) if password else None


def load_settings(**overrides: object) -> Settings:
    """Build Settings, turning a validation failure into one ConfigError line."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        first = exc.errors()[0]
        variable = str(first["loc"][0]).upper() if first["loc"] else "settings"
        message = first["msg"].removeprefix("Value error, ")
        raise ConfigError(variable, message) from None
