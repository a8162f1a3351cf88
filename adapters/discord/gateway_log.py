"""What discord.py logs, made readable for an operator: no voice noise, reconnects in one line."""

from __future__ import annotations

import logging
from collections import deque
from typing import Any

import discord

# discord.client warns at every start when the optional voice libraries are missing; this bot
# never joins a voice channel, so these two lines (and only these) say nothing useful.
VOICE_WARNINGS = frozenset(
    {
        "PyNaCl is not installed, voice will NOT be supported",
        "davey is not installed, voice will NOT be supported",
    }
)
# discord.client logs this with a traceback whenever the gateway connection ends in an error it
# retries (a close with code 1000, a refused or reset connection): routine, not a bug. A sharded
# client logs the second, as an ERROR, from discord.shard.
RECONNECT_ATTEMPTS = frozenset(
    {"Attempting a reconnect in %.2fs", "Attempting a reconnect for shard ID %s in %.2fs"}
)


def describe(error: BaseException | None) -> str:
    """A gateway connection error in a few words."""
    if isinstance(error, discord.ConnectionClosed):
        return f"closed with code {error.code}"
    if error is None:
        return "connection lost"
    text = str(error).strip()
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


class GatewayLogFilter(logging.Filter):
    """Drops the voice warnings, and turns each reconnect traceback into a reason for one line."""

    def __init__(self) -> None:
        super().__init__()
        self._reasons: deque[str] = deque(maxlen=1)

    def filter(self, record: logging.LogRecord) -> bool:
        if record.msg in VOICE_WARNINGS:
            return False
        if record.msg in RECONNECT_ATTEMPTS:
            error = record.exc_info[1] if record.exc_info else None
            retry = record.args[-1] if isinstance(record.args, tuple) and record.args else None
            wait = f"; retrying in {retry:.1f} s" if isinstance(retry, int | float) else ""
            self._reasons.append(describe(error) + wait)
            return False
        return True

    def take_reason(self) -> str | None:
        """Why the connection last ended, if discord.py said so since the last call."""
        return self._reasons.pop() if self._reasons else None


GATEWAY_LOG = GatewayLogFilter()


def install() -> None:
    """Filter discord.client and discord.shard (once: discord.py's loggers are global)."""
    for name in ("discord.client", "discord.shard"):
        client_logger = logging.getLogger(name)
        if GATEWAY_LOG not in client_logger.filters:
            client_logger.addFilter(GATEWAY_LOG)


def command_name(interaction: discord.Interaction) -> str:
    """How an operator would name the command: ``/imagine`` or the menu's label."""
    command = interaction.command
    if isinstance(command, discord.app_commands.ContextMenu):
        return f"'{command.qualified_name}'"
    if command is not None:
        return f"/{command.qualified_name}"
    data: dict[str, Any] = dict(interaction.data or {})
    return f"/{data.get('name', '?')}"
