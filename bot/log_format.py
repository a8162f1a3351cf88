"""One JSON object per log line, for log collectors (IMAGINE_LOG_FORMAT=json)."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime

from bot.redact import redact

# What a record may carry through ``extra=`` that is worth a field of its own.
CONTEXT_FIELDS = ("job_id", "platform", "team", "channel")
# Longer text in a context field is cut: a field holds an id, never a payload.
_MAX_FIELD = 200


class JsonFormatter(logging.Formatter):
    """time, level, logger, message, the job's context fields and a traceback as text.

    The redacting filter on the handlers has already rewritten the message and the traceback;
    this formats them again through ``redact`` with the configured secrets, so a record that
    reached the handler some other way (or a context field) shows no key or token either.
    """

    def __init__(self, *secrets: str) -> None:
        super().__init__()
        self._secrets = tuple(secret for secret in secrets if secret.strip())

    def _clean(self, text: str) -> str:
        return redact(text, *self._secrets)

    def format(self, record: logging.LogRecord) -> str:
        """The record as one line of JSON."""
        entry: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": self._clean(record.getMessage()),
        }
        for name in CONTEXT_FIELDS:
            value = record.__dict__.get(name)
            if value is None or isinstance(value, bytes | bytearray | memoryview):
                continue  # image bytes never go to the log
            entry[name] = self._clean(str(value))[:_MAX_FIELD]
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exc_info"] = self._clean(record.exc_text)
        if record.stack_info:
            entry["stack_info"] = self._clean(self.formatStack(record.stack_info))
        return json.dumps(entry, ensure_ascii=False, default=str)
