"""The Slack app manifest (YAML) that ``imagine-bot slack-manifest`` prints."""

from __future__ import annotations

from importlib.resources import files


def slack_manifest() -> str:
    """The manifest with every scope, event, command and shortcut the bot needs."""
    return files("adapters.slack").joinpath("manifest.yaml").read_text(encoding="utf-8")
