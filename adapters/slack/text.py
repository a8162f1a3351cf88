"""Slack text in and out: /imagine flags, prompt clean-up, mrkdwn escaping and markup."""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from bot.commands import NO_OVERRIDES, Overrides

HELP = (
    "*Make an image:* `/imagine <prompt> [options]`\n"
    "• `--size 1024x1024` (also `1536x1024`, `1024x1536`, any size the model takes, "
    "`square`, `landscape`, `portrait` or `auto`)\n"
    "• `--quality low|medium|high`\n"
    "• `--n 2` — how many images\n"
    "• `--transparent` — transparent background (PNG or WebP)\n"
    "• `--format png|jpeg|webp`\n"
    "• `--enhance` (or `-e`) — let prompt help write a more detailed prompt first, when the "
    "bot has it on (the rewrite is counted with the image)\n"
    "*Edit images:* mention me with images attached (a file named `mask…` marks what to "
    "change), reply in the thread of one of my images, or use the *Edit image* shortcut on "
    "any message with an image. Slash commands don't work in threads; mention me there instead."
)

_QUALITIES = {"low", "medium", "high", "auto"}
_FORMATS = {"png": "png", "jpeg": "jpeg", "jpg": "jpeg", "webp": "webp"}
_SIZE_WORDS = {"square": "1024x1024", "landscape": "1536x1024", "portrait": "1024x1536"}
# Each option's names, the short ones and the words people type for them.
_NAMES = dict(
    s="size", q="quality", count="n", number="n", t="transparent", f="format", e="enhance"
)
_NAMES |= {name: name for name in ("size", "quality", "n", "transparent", "format", "enhance")}
# Options that are on or off: typed alone, or with a yes/no value after "=".
_SWITCHES = {"transparent", "enhance"}
_SHORT = {"-s", "-q", "-n", "-t", "-f", "-e"}
_SIZE = re.compile(r"^(\d{2,5})\s*[x×*]\s*(\d{2,5})$", re.IGNORECASE)
# Slack (and macOS autocorrect) turn a typed "--" into an en or em dash.
_DASHES = re.compile(r"^[\u2013\u2014\u2012\u2015]")


class FlagError(Exception):
    """An option the user typed can't be understood; ``str()`` says which and why."""


@dataclass(frozen=True)
class ParsedPrompt:
    """A prompt and the options typed after it (None = the default, or the edited job's)."""

    prompt: str
    overrides: Overrides = NO_OVERRIDES
    enhance: bool = False  # let prompt help rewrite the prompt first


def parse_prompt(text: str) -> ParsedPrompt:
    """Split ``a fox --size 1536x1024 --n 2`` into the prompt and its options, leniently."""
    words = text.split()
    prompt: list[str] = []
    chosen: dict[str, str] = {}
    i = 0
    while i < len(words):
        word = _DASHES.sub("--", words[i])
        if not _looks_like_flag(word):
            prompt.append(words[i])
            i += 1
            continue
        name, _, value = word.lstrip("-").partition("=")
        key = _NAMES.get(name.lower())
        if key is None:
            raise FlagError(f"I don't know the option `--{name}`.")
        if key in _SWITCHES:
            chosen[key] = value or "yes"
            i += 1
            continue
        if not value:
            if i + 1 >= len(words):
                raise FlagError(f"`--{name}` needs a value, like `--{name} {_EXAMPLE[key]}`.")
            value = words[i + 1]
            i += 1
        chosen[key] = value
        i += 1
    return _convert(" ".join(prompt), chosen)


_EXAMPLE = {"size": "1024x1024", "quality": "high", "n": "2", "format": "png"}


def _looks_like_flag(word: str) -> bool:
    if word.startswith("--") and len(word) > 2 and word[2].isalpha():
        return True
    return word.lower() in _SHORT or word.lower().split("=")[0] in _SHORT


def _convert(prompt: str, chosen: dict[str, str]) -> ParsedPrompt:
    out = Overrides()
    if "size" in chosen:
        raw = chosen["size"].strip().lower()
        match = _SIZE.match(raw)
        if match:
            out = replace(out, size=f"{match.group(1)}x{match.group(2)}")
        elif raw in _SIZE_WORDS or raw == "auto":
            out = replace(out, size=_SIZE_WORDS.get(raw, "auto"))
        else:
            raise FlagError(f"`--size {chosen['size']}` isn't a size; use `auto` or WIDTHxHEIGHT.")
    if "quality" in chosen:
        quality = chosen["quality"].lower()
        if quality not in _QUALITIES:
            raise FlagError(f"`--quality {chosen['quality']}` isn't one of low, medium, high.")
        out = replace(out, quality=quality)
    if "n" in chosen:
        if not chosen["n"].isdigit() or int(chosen["n"]) < 1:
            raise FlagError(f"`--n {chosen['n']}` should be a number of images, like `--n 2`.")
        out = replace(out, n=int(chosen["n"]))
    if "transparent" in chosen:
        if chosen["transparent"].lower() not in ("yes", "true", "1", "on"):
            raise FlagError("`--transparent` takes no value.")
        out = replace(out, background="transparent")
    if "format" in chosen:
        fmt = _FORMATS.get(chosen["format"].lower().lstrip("."))
        if fmt is None:
            raise FlagError(f"`--format {chosen['format']}` isn't one of png, jpeg, webp.")
        out = replace(out, output_format=fmt)
    enhance = False
    if "enhance" in chosen:
        if chosen["enhance"].lower() not in ("yes", "true", "1", "on"):
            raise FlagError("`--enhance` takes no value.")
        enhance = True
    return ParsedPrompt(prompt, out, enhance)


_LINK = re.compile(r"<([^<>|]+)(?:\|([^<>]*))?>")


def clean_prompt(text: str, bot_user_id: str | None = None) -> str:
    """Turn Slack's message markup into the plain words the image model should read."""
    if bot_user_id:
        text = re.sub(rf"<@{re.escape(bot_user_id)}(\|[^>]*)?>", " ", text)

    def plain(match: re.Match[str]) -> str:
        target, label = match.group(1), match.group(2)
        if label:
            sigil = target[0] if target[0] in "@#" else ""
            return sigil + label
        if target.startswith(("@", "#")):
            return target
        if target.startswith("!"):
            return ""
        return target

    text = _LINK.sub(plain, text)
    text = text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")
    return " ".join(text.split())


def escape(text: str) -> str:
    """Escape text for mrkdwn, so a prompt can't ping a channel or break the markup."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _date(epoch: float, token: str, fallback: str) -> str:
    stamp = int(epoch)
    shown = datetime.fromtimestamp(stamp, UTC).strftime(fallback)
    return f"<!date^{stamp}^{{{token}}}|{shown}>"


class SlackMarkup:
    """``bot.texts.Markup`` in Slack's mrkdwn: each reader sees times in their own zone."""

    invite_hint = "Invite me with `/invite @imagine` and try again."

    def code(self, text: str) -> str:
        """Inline code."""
        return f"`{text}`"

    def relative(self, epoch: float) -> str:
        """``in 5 minutes`` / ``3 minutes ago``, as Slack words it."""
        return _date(epoch, "ago", "%Y-%m-%d %H:%M UTC")

    def clock(self, epoch: float) -> str:
        """``12:03:15`` in the reader's time zone."""
        return _date(epoch, "time_secs", "%H:%M:%S UTC")

    def mention(self, user_id: str) -> str:
        """``<@U1>``."""
        return f"<@{user_id}>"

    def channel(self, channel_id: str) -> str:
        """``<#C1>``."""
        return f"<#{channel_id}>"

    def bold(self, text: str) -> str:
        """mrkdwn bold."""
        return f"*{text}*"

    def link(self, url: str, label: str) -> str:
        """``<url|label>``."""
        return f"<{url}|{escape(label)}>"

    def escape(self, text: str) -> str:
        """``&``, ``<`` and ``>`` escaped, so a prompt can't ping a channel."""
        return escape(text)


MARKUP = SlackMarkup()
