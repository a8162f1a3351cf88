"""Hiding keys and tokens from every text that can reach a log line or a message."""

from __future__ import annotations

import logging
import re

# The API echoes a masked prefix of a bad key ("sk-proj-****wxyz"): keep "sk-" and three more.
_KEYLIKE = re.compile(r"\b(sk-[A-Za-z0-9_\-*]{3})[A-Za-z0-9_\-*]*")
# An Authorization value as httpx/h11 quote it ("Illegal header value b'Bearer sk-...'"), Slack
# tokens (xoxb-, xoxp-, xapp-, ...) and Discord bot tokens (three dot-separated base64 parts).
_CREDENTIAL = re.compile(r"\b(Bearer|Basic)(\s+)[^\s'\"\\]+", re.IGNORECASE)
_SLACK_TOKEN = re.compile(r"\b(xox[a-z]|xapp)-[A-Za-z0-9-]+")
_DISCORD_TOKEN = re.compile(r"\b[A-Za-z0-9_-]{20,}\.[A-Za-z0-9_-]{6,}\.[A-Za-z0-9_-]{20,}")
# The HTTP libraries the provider drives: httpcore's DEBUG traces quote refused header values.
HTTP_LOGGERS = (
    "httpx",
    "httpcore.connection",
    "httpcore.http11",
    "httpcore.http2",
    "httpcore.proxy",
    "httpcore.socks",
)


def redact(text: str, *secrets: str) -> str:
    """Hide anything that looks like a key or token, and each of ``secrets`` verbatim."""
    for secret in secrets:
        # as written, without its stray whitespace, and as Python quotes it inside b'...'
        for variant in {secret, secret.strip(), repr(secret.encode())[2:-1]}:
            if len(variant) >= 4:
                text = text.replace(variant, "[redacted]")
    text = _CREDENTIAL.sub(r"\1\2[redacted]", text)
    text = _SLACK_TOKEN.sub(r"\1-[redacted]", text)
    text = _DISCORD_TOKEN.sub("[redacted]", text)
    return _KEYLIKE.sub(r"\1…", text)


class RedactingFilter(logging.Filter):
    """Rewrites each record's message and traceback with ``redact`` before any handler sees it."""

    def __init__(self) -> None:
        super().__init__()
        self._secrets: set[str] = set()
        self._formatter = logging.Formatter()

    def add_secret(self, secret: str) -> None:
        """Also hide this exact value (a configured key that may match no pattern)."""
        if secret.strip():
            self._secrets.add(secret)

    def filter(self, record: logging.LogRecord) -> bool:
        """Redact in place; never drops a record."""
        secrets = tuple(self._secrets)
        message = record.getMessage()
        cleaned = redact(message, *secrets)
        if cleaned != message:
            record.msg, record.args = cleaned, ()
        if record.exc_info and not record.exc_text:
            record.exc_text = self._formatter.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text, *secrets)
        return True


LOG_FILTER = RedactingFilter()


def protect_loggers(*names: str) -> None:
    """Put ``LOG_FILTER`` on these loggers (a logger's filters don't reach its children)."""
    for name in names:
        logger = logging.getLogger(name)
        if LOG_FILTER not in logger.filters:
            logger.addFilter(LOG_FILTER)


def protect_handlers(*secrets: str, logger: logging.Logger | None = None) -> None:
    """Hide ``secrets`` and token-like text in everything ``logger``'s handlers (root) write."""
    for secret in secrets:
        LOG_FILTER.add_secret(secret)
    for handler in (logger or logging.getLogger()).handlers:
        if LOG_FILTER not in handler.filters:
            handler.addFilter(LOG_FILTER)
