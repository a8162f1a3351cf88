"""Settings from the environment and ``.env`` (pydantic-settings), validated at start-up."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from bot.errors import ConfigError

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


def parse_rules(text: str | None, *, whole: bool) -> tuple[WindowRule, ...]:
    """Parse ``'5/minute,100/day'``; ``whole`` demands integer amounts (image counts)."""
    if text is None or not text.strip():
        return ()
    rules = []
    for part in text.split(","):
        match = _RULE.match(part)
        if not match:
            raise ValueError(
                f"can't read {part.strip()!r}; write it like '20/hour' or '5/minute,100/day'"
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


def _split_list(value: object) -> object:
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


_SIZE = re.compile(r"^(auto|\d+x\d+)$")


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

    # --- limits and running -------------------------------------------------------------
    imagine_data_dir: Path = Path("./data")
    imagine_user_limit: str | None = None
    imagine_user_budget: str | None = None
    imagine_max_concurrency: int = Field(4, ge=1, le=256)
    imagine_admin_users: Annotated[list[str], NoDecode] = Field(default_factory=list)
    imagine_progress_interval: float = Field(1.0, ge=0)
    imagine_log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    imagine_http_port: int = Field(3000, ge=1, le=65535)

    # --- Discord ------------------------------------------------------------------------
    discord_token: SecretStr | None = None
    discord_api_base_url: str = "https://discord.com/api/v10"
    discord_gateway_url: str = "wss://gateway.discord.gg/"
    discord_message_content_intent: bool = False
    discord_guild_ids: Annotated[list[int], NoDecode] = Field(default_factory=list)
    discord_allowed_channels: Annotated[list[str], NoDecode] = Field(default_factory=list)

    # --- Slack --------------------------------------------------------------------------
    slack_bot_token: SecretStr | None = None
    slack_app_token: SecretStr | None = None
    slack_signing_secret: SecretStr | None = None
    slack_api_url: str = "https://slack.com/api/"
    slack_allowed_channels: Annotated[list[str], NoDecode] = Field(default_factory=list)

    @field_validator(
        "imagine_admin_users",
        "discord_guild_ids",
        "discord_allowed_channels",
        "slack_allowed_channels",
        mode="before",
    )
    @classmethod
    def _comma_list(cls, value: object) -> object:
        return _split_list(value)

    @field_validator("imagine_user_limit")
    @classmethod
    def _check_limit(cls, value: str | None) -> str | None:
        parse_rules(value, whole=True)
        return value

    @field_validator("imagine_user_budget")
    @classmethod
    def _check_budget(cls, value: str | None) -> str | None:
        parse_rules(value, whole=False)
        return value

    @field_validator("imagine_size")
    @classmethod
    def _check_size(cls, value: str) -> str:
        value = value.strip().lower()
        if not _SIZE.match(value):
            raise ValueError("use 'auto' or WIDTHxHEIGHT such as 1024x1024")
        return value

    @field_validator("openai_base_url", "discord_api_base_url", "slack_api_url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value

    @field_validator("discord_gateway_url")
    @classmethod
    def _check_ws_url(cls, value: str) -> str:
        if not value.startswith(("ws://", "wss://")):
            raise ValueError("must start with ws:// or wss://")
        return value

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

    def require_openai_key(self) -> str:
        """The API key, or a ConfigError naming the variable."""
        if self.openai_api_key is None or not self.openai_api_key.get_secret_value().strip():
            raise ConfigError("OPENAI_API_KEY", "not set; put your OpenAI API key in .env")
        return self.openai_api_key.get_secret_value()


def load_settings(**overrides: object) -> Settings:
    """Build Settings, turning a validation failure into one ConfigError line."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        first = exc.errors()[0]
        variable = str(first["loc"][0]).upper() if first["loc"] else "settings"
        message = first["msg"].removeprefix("Value error, ")
        raise ConfigError(variable, message) from None
